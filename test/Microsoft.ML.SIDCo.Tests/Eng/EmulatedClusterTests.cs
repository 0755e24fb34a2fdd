using System.Text.Json;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Eng;

/// <summary>
/// <c>eng/cluster-bench.sh</c> (what <c>./build.sh bench cluster</c> runs) on this machine: real network
/// namespaces, tc-limited links, a bridge and mpirun with one orted per emulated host. It needs root and
/// <c>ip netns</c>, as the CI machine has. The tests of this class run one after another (one xUnit
/// collection), since every run owns the same namespace names.
/// </summary>
[Trait(Category.Name, Category.Cluster)]
public sealed class EmulatedClusterTests
{
    private static readonly string Script = Path.Combine(MpiRunner.RepoRoot, "eng", "cluster-bench.sh");
    private static readonly string BenchmarksDll = MpiRunner.Dll("test/Microsoft.ML.SIDCo.Benchmarks", "Microsoft.ML.SIDCo.Benchmarks");

    private static MpiRun Cluster(TimeSpan timeout, params string[] options)
    {
        Assert.True(File.Exists(BenchmarksDll), $"{BenchmarksDll} is missing: build the solution first (./build.sh build).");
        return MpiRunner.RunCommand("bash", [Script, Path.GetRelativePath(MpiRunner.RepoRoot, BenchmarksDll), .. options], timeout);
    }

    // The exchange alone on 2 hosts at 1 Gbit/s (the small ConvNet's gradient) with these options: the JSON's result rows.
    private static JsonElement[] ExchangeRows(string json, params string[] options)
    {
        var run = Cluster(TimeSpan.FromMinutes(5),
            ["--hosts", "2", "--link", "1gbit", "--model", "convnet-small", .. options, "--json", json]);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.DoesNotContain("run failed", run.Output, StringComparison.Ordinal);
        return JsonDocument.Parse(File.ReadAllText(json)).RootElement.GetProperty("results").EnumerateArray().ToArray();
    }

    private static string TempJson(string name) => Path.Combine(Directory.CreateTempSubdirectory("sidco-cluster-").FullName, name);

    // What the benchmark promises after it ends, however it ends: no namespace, no bridge, no rank left.
    private static void AssertTornDown()
    {
        var namespaces = MpiRunner.RunCommand("ip", ["netns", "list"], TimeSpan.FromSeconds(30));
        Assert.Equal(0, namespaces.ExitCode);
        Assert.DoesNotContain("sidco-h", namespaces.Output, StringComparison.Ordinal);
        Assert.NotEqual(0, MpiRunner.RunCommand("ip", ["link", "show", "sidco-br0"], TimeSpan.FromSeconds(30)).ExitCode);
        var workers = MpiRunner.RunCommand("pgrep", ["-f", "Benchmarks.dll cluster-"], TimeSpan.FromSeconds(30));
        Assert.True(workers.ExitCode == 1, "cluster-worker or cluster-exchange processes are still running: " + workers.Output);
    }

    [Fact]
    public void EveryOrtedStartsInEachOfFiftyLaunches()
    {
        // The emulated hosts share one hostname and /tmp. While their orteds also shared a session
        // directory, 8 of 100 launches lost an orted (a segfault writing hwloc's shared topology file,
        // or a failed mkdir), so 50 clean launches would have happened about 1.5 % of the time.
        var run = Cluster(TimeSpan.FromMinutes(5), "--hosts", "4", "--link", "100mbit", "--launch-check", "50", "--json",
            TempJson("launch.json"));
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("0 of 50 launches failed", run.Output, StringComparison.Ordinal);
        AssertTornDown();
    }

    [Fact]
    public void TrainsOneRankPerHostOverTheLimitedLinksThenTearsDown()
    {
        string json = TempJson("cluster.json");
        var run = Cluster(TimeSpan.FromMinutes(10), "--hosts", "2", "--link", "1gbit", "--model", "convnet-small", "--compressors",
            "sidco-e",
            "--densities", "0.01", "--steps", "4", "--json", json);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.DoesNotContain("run failed", run.Output, StringComparison.Ordinal);
        var row = Assert.Single(File.ReadAllLines(json + ".rows.jsonl").Where(l => l.Length > 0).Select(l =>
            JsonDocument.Parse(l).RootElement));
        Assert.Equal("sidco-e", row.GetProperty("compressor").GetString());
        Assert.Equal(2, row.GetProperty("hosts").GetInt32());
        Assert.Equal(1000, row.GetProperty("linkMbps").GetInt32());
        // A sparse exchange at density 0.01 moves a few per cent of the dense gradient's bytes.
        double denseBytes = 4.0 * row.GetProperty("parameters").GetInt64();
        double bytes = row.GetProperty("bytesPerStep").GetDouble();
        Assert.InRange(bytes, 1, 0.2 * denseBytes);
        Assert.True(row.GetProperty("predictedCommunicateMs").GetDouble() > 0);
        Assert.True(row.GetProperty("communicateMs").GetDouble() > 0);
        Assert.InRange(row.GetProperty("testAccuracy").GetDouble(), 0.0, 1.0);
        // Every host's TCP counters and drops for the run: a header and one row per host, every count a number.
        var tcp = File.ReadAllLines(json + ".tcp.tsv").Select(l => l.Split('\t')).ToArray();
        Assert.Equal(3, tcp.Length);
        Assert.Equal(["run", "link", "tcp", "host", "TcpRetransSegs"], tcp[0][..5]);
        Assert.Equal(["h0", "h1"], tcp[1..].Select(r => r[3]));
        Assert.All(tcp[1..], r =>
        {
            Assert.Equal(tcp[0].Length, r.Length);
            Assert.Equal("default", r[2]);
            Assert.All(r[4..], v => Assert.True(long.TryParse(v, out long n) && n >= 0, $"counter '{v}'"));
        });
        AssertTornDown();
    }

    [Fact]
    public void TimesTheDenseExchangeAloneInEveryShapeOnTheChosenTcp()
    {
        string json = TempJson("exchange.json");
        var rows = ExchangeRows(json, "--exchange-trials", "3", "--tcp", "cubic,quickack,rps");
        Assert.Equal(["whole, main thread", "buckets, main thread", "buckets, exchange thread",
            "buckets, exchange thread, 10 ms CPU beside", "whole, main thread, 10 ms CPU on a second thread",
            "whole, main thread, Open MPI's allgather", "whole, the all-to-all half alone", "whole, the allgather half alone",
            "whole, the allgather half alone, Open MPI's", "whole, MPI_Allreduce (Open MPI's order)"],
            rows.Select(r => r.GetProperty("shape").GetString()));
        long bytes = rows[0].GetProperty("bytesPerRank").GetInt64();
        Assert.True(bytes > 0);
        foreach (var r in rows)
        {
            Assert.Equal(2, r.GetProperty("hosts").GetInt32());
            Assert.Equal(1000, r.GetProperty("linkMbps").GetInt32());
            // Each half of the exchange alone sends half of the whole exchange's bytes (up to the padding of its blocks).
            long expected = r.GetProperty("shape").GetString()!.Contains("half alone", StringComparison.Ordinal) ? bytes / 2 : bytes;
            Assert.InRange(r.GetProperty("bytesPerRank").GetInt64(), expected, expected + 16);
            var trials = r.GetProperty("trialMs").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            Assert.Equal(3, trials.Length);
            Assert.All(trials, t => Assert.True(t > 0));
            Assert.Equal(trials.Min(), r.GetProperty("minMs").GetDouble());
            Assert.Equal(trials.Max(), r.GetProperty("maxMs").GetDouble());
            Assert.Equal(trials.Order().ElementAt(1), r.GetProperty("medianMs").GetDouble());
            Assert.InRange(r.GetProperty("slowTrials").GetInt32(), 0, 3);
        }
        Assert.Equal(1, rows[0].GetProperty("pieces").GetInt32());
        Assert.True(rows[1].GetProperty("pieces").GetInt32() >= 1);
        Assert.Contains("| whole, main thread | 1 |", File.ReadAllText(Path.ChangeExtension(json, ".md")), StringComparison.Ordinal);
        var tcp = File.ReadAllLines(json + ".tcp.tsv").Skip(1).Select(l => l.Split('\t')).ToArray();
        Assert.Equal(2, tcp.Length);
        Assert.All(tcp, r => Assert.Equal(("exchange", "cubic,quickack,rps"), (r[0], r[2])));
        AssertTornDown();
    }

    [Fact]
    public void TimesOurAllGatherRingAgainstOpenMpisAroundItsThreshold()
    {
        string json = TempJson("allgather-sweep.json");
        var rows = ExchangeRows(json, "--exchange-trials", "2", "--exchange-shapes", "allgather-sweep");
        int[] kib = [4, 16, 64, 256, 1024, 4096];
        Assert.Equal(kib.SelectMany(k => new[] { $"allgather of {k} KiB blocks, our ring", $"allgather of {k} KiB blocks, Open MPI's" }),
            rows.Select(r => r.GetProperty("shape").GetString()));
        for (int i = 0; i < rows.Length; i++)
        {
            // Two hosts: each rank sends its one block to the other.
            Assert.Equal(kib[i / 2] * 1024L, rows[i].GetProperty("bytesPerRank").GetInt64());
            Assert.All(rows[i].GetProperty("trialMs").EnumerateArray(), t => Assert.True(t.GetDouble() > 0));
        }
        Assert.Contains("| allgather of 256 KiB blocks, our ring | 1 | 262,144 |", File.ReadAllText(Path.ChangeExtension(json, ".md")),
            StringComparison.Ordinal);
        AssertTornDown();
    }

    [Fact]
    public void AnUnknownTcpSettingIsRefusedByNameAndTearsDown()
    {
        var run = Cluster(TimeSpan.FromMinutes(2), "--hosts", "2", "--link", "1gbit", "--exchange-trials", "1", "--tcp", "vegas",
            "--json", TempJson("refused.json"));
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("--tcp takes quickack, cubic, bbr, reno and rps, not vegas", run.Output, StringComparison.Ordinal);
        AssertTornDown();
        run = Cluster(TimeSpan.FromMinutes(2), "--hosts", "2", "--link", "1gbit", "--exchange-trials", "1", "--exchange-shapes", "sweep",
            "--json", TempJson("refused.json"));
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("--exchange-shapes takes training or allgather-sweep, not sweep", run.Output, StringComparison.Ordinal);
        AssertTornDown();
    }

    [Fact]
    public void ByDefaultSparseCompressorsTakeTurnsInOneJobAndNoneRunsAlone()
    {
        // No --interleave: the default. 100 steps in two epochs of 50, turns of 25: the second epoch (timed) holds
        // turns 2 and 3, DGC first in turn 2. `none` runs alone for --dense-steps.
        string json = TempJson("interleaved.json");
        var run = Cluster(TimeSpan.FromMinutes(10), "--hosts", "2", "--link", "1gbit", "--model", "convnet-small", "--compressors",
            "none,dgc,sidco-e",
            "--densities", "0.01", "--steps", "100", "--dense-steps", "4", "--json", json);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.DoesNotContain("run failed", run.Output, StringComparison.Ordinal);
        var rows = File.ReadAllLines(json + ".rows.jsonl").Where(l => l.Length > 0).Select(l => JsonDocument.Parse(l).RootElement)
            .ToDictionary(r => r.GetProperty("compressor").GetString()!);
        Assert.Equal(["dgc", "none", "sidco-e"], rows.Keys.Order());
        Assert.Equal(4, rows["none"].GetProperty("steps").GetInt32());
        Assert.False(rows["none"].TryGetProperty("interleaveBlock", out _));
        Assert.True(rows["none"].GetProperty("momentumCorrection").GetBoolean());
        var turns = new Dictionary<string, double[]>();
        foreach (var name in new[] { "dgc", "sidco-e" })
        {
            var row = rows[name];
            Assert.Equal(100, row.GetProperty("steps").GetInt32());
            Assert.Equal(50, row.GetProperty("timedSteps").GetInt32());
            Assert.Equal(25, row.GetProperty("interleaveBlock").GetInt32());
            var blocks = row.GetProperty("blockStepMs").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            Assert.Equal(2, blocks.Length);
            Assert.All(blocks, b => Assert.True(b > 0, $"{name}: a turn's mean step time of {b} ms"));
            // The turns' shares are differences of running epoch totals: equal-sized turns must average to the epoch's mean.
            Assert.Equal(row.GetProperty("stepMs").GetDouble(), blocks.Average(), 6);
            bool[] first = [.. row.GetProperty("blockFirst").EnumerateArray().Select(e => e.GetBoolean())];
            Assert.Equal(name == "dgc" ? [true, false] : new[] { false, true }, first);
            turns[name] = blocks;
        }
        // The report pairs the turns: SIDCo-E against DGC is the mean of DGC's turn minus SIDCo-E's.
        var comparison = JsonDocument.Parse(File.ReadAllText(json)).RootElement.GetProperty("comparisons").EnumerateArray()
            .Single(c => c.GetProperty("compressor").GetString() == "sidco-e" && c.GetProperty("reference").GetString() == "dgc");
        Assert.Equal(2, comparison.GetProperty("turns").GetInt32());
        Assert.Equal(turns["dgc"].Zip(turns["sidco-e"], (d, e) => d - e).Average(), comparison.GetProperty("stepDiffMs").GetDouble(), 6);
        Assert.Equal(turns["dgc"].Zip(turns["sidco-e"]).Count(p => p.First > p.Second), comparison.GetProperty("faster").GetInt32());
        Assert.True(comparison.GetProperty("stepDiffLowMs").GetDouble() <= comparison.GetProperty("stepDiffMs").GetDouble());
        AssertTornDown();
    }

    [Fact]
    public void CtrlCDuringARunTearsEverythingDown()
    {
        // eng/ctrl-c.py types Ctrl-C on a pseudo-terminal, as a user would: SIGINT reaches the script,
        // mpirun and the ranks together.
        var run = MpiRunner.RunCommand("python3", [Path.Combine(MpiRunner.RepoRoot, "eng", "ctrl-c.py"), "20", "bash", Script,
            Path.GetRelativePath(MpiRunner.RepoRoot, BenchmarksDll), "--hosts", "2", "--link", "100mbit", "--model", "convnet-small",
            "--compressors", "sidco-e", "--densities", "0.01", "--steps", "100000", "--json", TempJson("interrupted.json")],
                TimeSpan.FromMinutes(5));
        Assert.False(run.TimedOut, run.Output);
        Assert.Contains("cluster: interrupted, tearing down", run.Output, StringComparison.Ordinal);
        Assert.Contains("[exit status 130]", run.Output, StringComparison.Ordinal);
        AssertTornDown();
    }
}
