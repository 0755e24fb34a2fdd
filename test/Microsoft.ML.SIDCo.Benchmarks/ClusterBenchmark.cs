using System.Globalization;
using System.Text.Json;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Kernels;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>
/// The rank side of <c>./build.sh bench cluster</c> (eng/cluster-bench.sh builds the emulated hosts and
/// links and starts mpirun), and the report over all runs: speed-ups, predicted vs measured
/// communicate time, and the cost model's projection to larger clusters.
/// </summary>
internal static class ClusterBenchmark
{
    public sealed record Row(string Compressor, double Density, int Hosts, int LinkMbps, double StepMs, double ComputeMs,
        double CompressMs, double CommunicateMs,
        double PredictedCommunicateMs, double BytesPerStep, double TestAccuracy, int Steps, double ExamplesPerSecond, double AlphaUs,
            double BetaNsPerByte, int Parameters, string Model, double SparseFraction, int WorkersPerHost = 1, string Exchange = "flat",
            int DensityWarmupSteps = 0,
        double? IsolatedExchangeMs = null, bool MomentumCorrection = false, string Schedule = "constant", int? TimedSteps = null,
            int? TorchThreads = null, double SelectionCap = 0,
        int? InterleaveBlock = null, double[]? BlockStepMs = null, double[]? BlockComputeMs = null, bool[]? BlockFirst = null,
            double WaitMs = 0, string Wire = "fp32", double? TargetAccuracy = null, double? TimeToTargetSeconds = null,
            int? EvalEvery = null);

    /// <summary>
    /// One rank of a run. With <c>--interleave B</c> the listed compressors (<c>--compressors a,b</c>) train side by
    /// side in one job: each is a whole training of its own (own model, optimizer and residuals), and they take turns
    /// every B steps, each turn a <c>Fit</c> that resumes from that compressor's checkpoint (<c>StopAfterSteps</c>), the
    /// order alternating from turn to turn. Compute noise that drifts over minutes, or comes with a job's placement on
    /// the cores, then falls on both alike, and the step times pair up block by block.
    /// </summary>
    public static int Worker(BenchArgs a)
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: true));
        var test = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: false, limit: a.Int("test-limit", 10000)));
        var model = Bench.Model(a.Get("model", "wide-mlp"));
        int steps = a.Int("steps", 40), block = a.Int("interleave", 0);
        var compressors = a.List("compressors", a.Get("compressor", "sidco-e"));
        if (block == 0 && compressors.Length != 1)
            throw new ArgumentException("--compressors lists several compressors only with --interleave BLOCK");
        // --eval-every N: epochs of N steps, each ending with the test accuracy on --eval-limit rows, for the time to
        // --target-accuracy (training time summed over the epochs until the first that reaches it, evaluations excluded).
        var keysFor = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        int evalEvery = a.Int("eval-every", 0);
        if (evalEvery > 0 && (block != 0 || a.Has("epochs")))
            throw new ArgumentException("--eval-every runs one compressor alone for --steps (no --interleave, no --epochs)");
        var wire = a.Get("wire", "fp32") switch
        {
            "fp32" => WirePrecision.Float32,
            "fp16" => WirePrecision.Float16,
            "bf16" => WirePrecision.BFloat16,
            var w => throw new ArgumentException($"--wire {w}: fp32, fp16 or bf16"),
        };
        var validation = evalEvery > 0 ? FashionMnist.Load(train: false, limit: a.Int("eval-limit", 2000)) : null;
        SIDCoTrainer.Options OptionsFor(string compressor) => new()
        {
            Model = model,
            // powersgd-rR: PyTorch's PowerSGD hook's recipe (rank R, 10 dense steps) as our hook.
            Compressor = compressor.StartsWith(PowerSgdPrefix, StringComparison.Ordinal) || compressor == DenseMpiAllreduce
                ? CompressorKind.None
                : CompressorNames.Parse(compressor.Replace(PerBucketSuffix, "", StringComparison.Ordinal)
                    .Replace(AutoSuffix, "", StringComparison.Ordinal)),
            // sidco-e@auto: ExchangeMode.Auto, which also weighs not compressing at all on the link; every other row exchanges
            // as it names (sparse for a compressor), so that its figures are that compressor's.
            ExchangeMode = compressor.EndsWith(AutoSuffix, StringComparison.Ordinal) ? ExchangeMode.Auto : ExchangeMode.Sparse,
            // sidco-e@bucket: compressed bucket by bucket during backward.
            CompressPerBucket = compressor.Contains(PerBucketSuffix, StringComparison.Ordinal),
            GradientHook = compressor.StartsWith(PowerSgdPrefix, StringComparison.Ordinal)
                ? () => new Training.PowerSgdHook(int.Parse(compressor[PowerSgdPrefix.Length..], CultureInfo.InvariantCulture), seed: 1)
                // none-mpi: the dense exchange as MPI_Allreduce after backward (the built-in `none` sums in rank order).
                : compressor == DenseMpiAllreduce
                    ? () => new Training.CompressionHook(new Training.CompressionHookOptions
                    {
                        Compressor = CompressorKind.None,
                        Exchange = ExchangeMode.Dense,
                        Wire = wire,
                    })
                    : null,
            WirePrecision = wire,
            OverlapBackward = !a.Has("no-overlap"),
            BucketSizeMB = a.Double("bucket-mb", SIDCoTrainer.Defaults.BucketSizeMB),
            Density = a.Double("density", 0.001),
            // --steps N: two halves of N/2 steps (two epochs), timed over the second: the first holds JIT
            // compilation and the adaptive compressors' calibration, which a run of thousands of steps amortises.
            Epochs = a.Has("epochs") ? a.Int("epochs", 1) : evalEvery > 0 ? (steps + evalEvery - 1) / evalEvery : 2,
            MaxStepsPerEpoch = a.Has("epochs") ? 0 : evalEvery > 0 ? evalEvery : (steps + 1) / 2,
            ValidationData = validation is null ? null : keysFor.Transform(ml.Data.LoadFromEnumerable(validation)),
            BatchSize = 32,
            LearningRate = 0.05,
            Momentum = 0.9,
            Seed = 1,
            // The recipe of `bench training`: 50 warm-up steps, then a cosine decay over the run's steps.
            Schedule = Training.LearningRateSchedule.Cosine,
            LearningRateWarmupSteps = 50,
            Transport = TransportKind.Mpi,
            WorkersPerRank = a.Int("workers-per-host", 1),
            HierarchicalExchange = a.Has("hierarchical"),
            DensityWarmupSteps = a.Int("density-warmup", 0),
            // DGC's momentum correction is a setting of the built-in hook; PowerSGD uses the optimizer's momentum, as in PyTorch.
            MomentumCorrection = a.Has("momentum-correction") && !compressor.StartsWith(PowerSgdPrefix, StringComparison.Ordinal)
                && compressor != DenseMpiAllreduce,
            SelectionCap = a.Double("selection-cap", 0),
        };
        var trainKeys = keysFor.Transform(train);
        var keys = keysFor;
        var runs = block == 0
            ? [new Run(compressors[0], OptionsFor(compressors[0]), ml.Extensions.SIDCoTrainer(OptionsFor(compressors[0])).Fit(trainKeys))]
            : Interleaved(ml, trainKeys, compressors, OptionsFor, block,
                a.Get("checkpoints") ?? throw new ArgumentException("--interleave needs --checkpoints DIR (shared by the ranks)"));
        using var comm = new MpiCommunicator();
        // a fresh probe after training (the trainer's own, made at its start, is the one in the history's predictions)
        var cost = CostModel.Measure(comm);
        foreach (var run in runs)
        {
            using var fitted = run.Fitted;
            var options = run.Options;
            var all = fitted.History.Epochs;
            int total = all.Sum(e => e.Steps);
            var h = a.Has("epochs") ? all : all.Skip(1).ToList(); // the timed part
            int timed = h.Sum(e => e.Steps);
            double W(Func<Training.EpochMetrics, double> f) => h.Sum(e => f(e) * e.Steps) / timed;
            int parameters = new Training.ParameterSet(fitted.Module).Length;
            double? isolatedMs = a.Has("hierarchical") || options.WorkersPerRank > 1
                ? null
                : MeasureIsolatedExchange(comm, parameters, options.Compressor == CompressorKind.None ? 1 : W(e => e.AchievedDensity),
                    cost, options.WirePrecision);
            if (comm.Rank != 0) continue;
            var metrics = ml.MulticlassClassification.Evaluate(fitted.Transform(keys.Transform(test)));
            double? target = evalEvery > 0 ? a.Double("target-accuracy", 0.8) : null, toTarget = null;
            if (target is { } t)
            {
                double elapsed = 0;
                foreach (var e in all)
                {
                    elapsed += e.Seconds;
                    if (e.ValidationAccuracy >= t) { toTarget = elapsed; break; }
                }
            }
            var row = new Row(run.Compressor, fitted.Info.Density, comm.Size, a.Int("link-mbps", 0), W(e => e.StepMs),
                W(e => e.ComputeMs), W(e => e.CompressMs),
                W(e => e.CommunicateMs), W(e => e.PredictedCommunicateMs), W(e => e.BytesPerStep), metrics.MicroAccuracy, total,
                comm.Size * options.WorkersPerRank * (options.BatchSize
                    ?? throw new InvalidOperationException("the benchmark sets BatchSize")) / W(e => e.StepMs) * 1000,
                    cost.AlphaSeconds * 1e6, cost.BetaSecondsPerByte * 1e9, parameters, model.Descriptor, W(e => e.SparseFraction),
                options.WorkersPerRank,
                options.HierarchicalExchange ? "hierarchical"
                    : options.Compressor == CompressorKind.None && options.GradientHook is null && options.OverlapBackward ? "overlapped"
                    : "flat", options.DensityWarmupSteps, isolatedMs,
                    options.MomentumCorrection, "cosine", timed, TorchSharp.torch.get_num_threads(), options.SelectionCap,
                block == 0 ? null : block, run.Blocks?.Where(b => b.Timed).Select(b => b.StepMs).ToArray(),
                    run.Blocks?.Where(b => b.Timed).Select(b => b.ComputeMs).ToArray(),
                run.Blocks?.Where(b => b.Timed).Select(b => b.First).ToArray(), W(e => e.WaitMs), a.Get("wire", "fp32"), target, toTarget,
                evalEvery > 0 ? evalEvery : null);
            Console.WriteLine("RESULT " + JsonSerializer.Serialize(row, Bench.JsonLine));
        }
        return 0;
    }

    private const string PowerSgdPrefix = "powersgd-r", PerBucketSuffix = "@bucket", AutoSuffix = "@auto", DenseMpiAllreduce = "none-mpi";

    private sealed record Run(string Compressor, SIDCoTrainer.Options Options, SIDCoTransformer Fitted, List<Block>? Blocks = null);

    /// <summary>One turn of an interleaved run: its mean step and compute time, whether it is in the timed half, and whether it went first
    /// in its round.</summary>
    private sealed record Block(double StepMs, double ComputeMs, bool Timed, bool First);

    private static List<Run> Interleaved(MLContext ml, IDataView train, string[] compressors,
        Func<string, SIDCoTrainer.Options> optionsFor, int block, string checkpoints)
    {
        // A checkpoint left from another job would be resumed as if it were this one's. Every rank looks before any rank's
        // first Fit creates its directories (a Fit probes its checkpoint directory for writing as it starts).
        bool empty = !Directory.Exists(checkpoints) || !Directory.EnumerateFileSystemEntries(checkpoints).Any();
        using (var comm = new MpiCommunicator()) comm.Barrier();
        if (!empty) throw new ArgumentException($"--checkpoints {checkpoints} is not empty: give each interleaved job a fresh directory");
        var first = optionsFor(compressors[0]);
        int total = (first.Epochs ?? throw new ArgumentException("--interleave needs --steps")) * first.MaxStepsPerEpoch;
        if (first.MaxStepsPerEpoch == 0 || total % block != 0 || first.MaxStepsPerEpoch % block != 0)
            throw new ArgumentException($"--interleave {block} must divide the steps per epoch ({first.MaxStepsPerEpoch}); use --steps, " +
                $"not --epochs");
        var blocks = compressors.ToDictionary(c => c, _ => new List<Block>());
        var last = new Dictionary<string, SIDCoTransformer>();
        var previous = new Dictionary<string, Training.EpochMetrics?>();
        for (int turn = 0; turn < total / block; turn++)
        {
            var order = turn % 2 == 0 ? compressors : compressors.Reverse().ToArray();
            foreach (var c in order)
            {
                var options = optionsFor(c);
                options.CheckpointDirectory = Path.Combine(checkpoints, c);
                options.CheckpointInterval = total + 1; // only where a turn stops
                options.StopAfterSteps = (long)(turn + 1) * block;
                var fitted = ml.Extensions.SIDCoTrainer(options).Fit(train);
                // The last epoch's metrics cover that epoch's steps so far (a checkpoint carries the running totals):
                // this turn's share is the difference from the previous turn's, within the same epoch.
                var now = fitted.History.Epochs[^1];
                var before = previous.GetValueOrDefault(c) is { } p && p.Epoch == now.Epoch ? p : null;
                int n = now.Steps - (before?.Steps ?? 0);
                double Share(Func<Training.EpochMetrics, double> f) =>
                    (f(now) * now.Steps - (before is null ? 0 : f(before) * before.Steps)) / n;
                blocks[c].Add(new Block(Share(e => e.StepMs), Share(e => e.ComputeMs), Timed: now.Epoch == options.Epochs,
                    First: c == order[0]));
                previous[c] = now;
                if (last.Remove(c, out var older)) older.Dispose();
                last[c] = fitted;
            }
        }
        return compressors.Select(c => new Run(c, optionsFor(c), last[c], blocks[c])).ToList();
    }

    /// <summary>
    /// The exchange alone on the same links, with this run's selection size per rank: every call starts
    /// after a barrier, so it holds no wait for a slower rank. This is what the cost model describes; in
    /// training the communicate time also holds the wait for the slowest rank's compute.
    /// </summary>
    private static double MeasureIsolatedExchange(MpiCommunicator comm, int n, double density, CostModel cost, WirePrecision wire)
    {
        var exchange = new GradientExchange(comm, n, density >= 1 ? ExchangeMode.Dense : ExchangeMode.Auto, wire, model: cost);
        var output = new float[n];
        var local = new SparseBuffer();
        int k = (int)Math.Max(1, Math.Round(density * n));
        var rng = new Random(17 + comm.Rank);
        // k distinct ascending indices spread over the buffer, different on every rank (as gradients' selections mostly are).
        int stride = Math.Max(1, n / k), offset = comm.Rank % stride;
        for (int i = 0; i < k && (long)i * stride + offset < n; i++) local.Add(i * stride + offset, (float)rng.NextDouble());
        var times = new List<double>();
        int reps = density >= 1 && cost.DenseSeconds(n) > 1 ? 3 : 7;
        for (int r = 0; r < reps + 1; r++)
        {
            comm.Barrier();
            var e = density >= 1 ? exchange.AllReduceDense(output) : exchange.AllReduce(local, output);
            if (r == 0) continue; // warm-up
            times.Add(e.ElapsedMs);
        }
        times.Sort();
        return Bench.Median(times);
    }

    public static int Report(BenchArgs a)
    {
        var rows = Bench.ReadRows<Row>(a);
        if (rows.Count == 0) { Console.Error.WriteLine("cluster: no results"); return 1; }
        var sb = new System.Text.StringBuilder();
        foreach (var g in rows.GroupBy(r => (r.Hosts, r.LinkMbps, r.WorkersPerHost)))
        {
            Row? Base(string name, double d) =>
                g.FirstOrDefault(r => r.Compressor == name && (name == "none" || r.Density == d) && r.Exchange == "flat");
            sb.AppendLine($"**{g.Key.Hosts} hosts{(g.Key.WorkersPerHost > 1 ? $" x {g.Key.WorkersPerHost} workers" : "")} at " +
                $"{g.Key.LinkMbps} Mbit/s**, {g.First().Model} ({g.First().Parameters:N0} parameters), " +
                $"{StepsText(g)}"
                + (g.First().DensityWarmupSteps > 0 ? $" (density warm-up over the first {g.First().DensityWarmupSteps})" : "")
                + ", learning rate "
                + (g.First().Schedule == "cosine" ? "0.05 with 50 warm-up steps and a cosine decay" : "0.05 constant")
                + (g.First().MomentumCorrection ? ", momentum correction" : "")
                + (g.First().SelectionCap > 0 ? $", selection cap {g.First().SelectionCap:G4} k" : "")
                + $"; probe after training: alpha {g.First().AlphaUs:F0} us, beta {g.First().BetaNsPerByte:F2} ns/B");
            sb.AppendLine();
            sb.Append(Bench.Table(["compressor", "exchange", "density", "step ms", "compute", "compress", "communicate", "of which wait",
                "predicted comm.", "pred./meas.", "pred./(meas. - wait)", "exchange alone", "pred./alone", "examples/s", "bytes/step",
                "test acc.", "time to target", "vs none", "vs topk", "vs dgc"],
                g.Select(r =>
                {
                    string Speed(Row? b) => b is null ? "-" : Bench.F(b.StepMs / r.StepMs, "F1") + "x";
                    return new[]
                    {
                        r.Wire == "fp32" ? r.Compressor : $"{r.Compressor} ({r.Wire})", r.Exchange,
                            r.Compressor == "none" ? "-" : Bench.F(r.Density, "G3"), Bench.F(r.StepMs, "F0"),
                            Bench.F(r.ComputeMs, "F0"), Bench.F(r.CompressMs, "F1"),
                        Bench.F(r.CommunicateMs, "F1"), r.Compressor == "none" ? "-" : Bench.F(r.WaitMs, "F1"),
                            Bench.F(r.PredictedCommunicateMs, "F1"), Bench.F(r.PredictedCommunicateMs / r.CommunicateMs, "F2"),
                        r.Compressor == "none" ? "-" : Bench.F(r.PredictedCommunicateMs / (r.CommunicateMs - r.WaitMs), "F2"),
                        r.IsolatedExchangeMs is { } alone ? Bench.F(alone, "F1") : "-",
                            r.IsolatedExchangeMs is { } m ? Bench.F(r.PredictedCommunicateMs / m, "F2") : "-",
                        Bench.F(r.ExamplesPerSecond, "F0"), Bench.F(r.BytesPerStep, "N0"), Bench.F(r.TestAccuracy * 100, "F2") + " %",
                        r.TargetAccuracy is not { } target ? "-"
                            : r.TimeToTargetSeconds is { } s ? $"{s:F1} s to {target * 100:F0} %" : $"not {target * 100:F0} %",
                        Speed(Base("none", r.Density)), Speed(Base("topk", r.Density)), Speed(Base("dgc", r.Density)),
                    };
                })));
            sb.AppendLine();
        }
        // On paper: the measured alpha/beta of the fastest link, projected to larger clusters.
        var reference = rows.Where(r => r.WorkersPerHost == 1).DefaultIfEmpty(rows[0]).OrderByDescending(r => r.LinkMbps).First();
        var projection = new List<(int P, double Density, double DenseMs, double SparseMs, string Auto)>();
        foreach (int p in new[] { 4, 16, 64, 256, 1024 })
            foreach (double d in new[] { 0.01, 0.001 })
            {
                var m = new CostModel(reference.AlphaUs * 1e-6, reference.BetaSecondsPerByte(), p);
                long k = (long)Math.Ceiling(d * reference.Parameters);
                double dense = m.DenseSeconds(reference.Parameters) * 1e3, sparse = m.SparseSeconds(k * p) * 1e3;
                projection.Add((p, d, dense, sparse, m.Choose(reference.Parameters, k * p).ToString().ToLowerInvariant()));
            }
        sb.AppendLine($"**Projection** with the {reference.LinkMbps} Mbit/s probe (alpha {reference.AlphaUs:F0} us, beta " +
            $"{reference.BetaNsPerByte:F2} ns/B), {reference.Parameters:N0} parameters, selections assumed disjoint (K = P k):");
        sb.AppendLine();
        sb.Append(Bench.Table(["workers", "density", "P x density", "dense allreduce ms", "sparse allgather ms", "Auto picks"],
            projection.Select(x =>
                new[] { x.P.ToString(), Bench.F(x.Density, "G3"), Bench.F(x.P * x.Density, "G3"), Bench.F(x.DenseMs, "F1"),
                Bench.F(x.SparseMs, "F1"), x.Auto })));
        var paired = PairedComparisons(rows);
        if (paired.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("**Side by side**: the compressors of an interleaved job took turns on the same placement of ranks on cores, " +
                "so their timed turns pair up. " +
                "Per pair of turns, the difference in step time (reference minus compressor; positive: the compressor is faster), its " +
                    "mean with a 95 % Student-t interval over the pairs, " +
                "the same for step - compute (compression, exchange and the wait for the slowest rank), and how many turns the " +
                    "compressor was faster:");
            sb.AppendLine();
            sb.Append(Bench.Table(["hosts", "link Mbit/s", "density", "compressor", "vs", "turns", "step ms (vs / this)", "ratio",
                "step diff. ms [95 % interval]", "step - compute diff. ms [95 % interval]", "faster in"],
                paired.Select(c => new[]
                {
                    Bench.F(c.Hosts, "F0"), Bench.F(c.LinkMbps, "F0"), Bench.F(c.Density, "G3"), c.Compressor, c.Reference,
                    Bench.F(c.Turns, "F0"), $"{Bench.F(c.ReferenceStepMs, "F1")} / {Bench.F(c.StepMs, "F1")}", Bench.F(c.Ratio, "F2") + "x",
                    $"{Bench.F(c.StepDiffMs, "+0.0;-0.0")} [{Bench.F(c.StepDiffLowMs, "+0.0;-0.0")}, " +
                        $"{Bench.F(c.StepDiffHighMs, "+0.0;-0.0")}]",
                    $"{Bench.F(c.NonComputeDiffMs, "+0.0;-0.0")} [{Bench.F(c.NonComputeDiffLowMs, "+0.0;-0.0")}, " +
                        $"{Bench.F(c.NonComputeDiffHighMs, "+0.0;-0.0")}]",
                    $"{c.Faster} of {c.Turns}",
                })));
        }
        string json = a.Get("json", "artifacts/bench/cluster.json");
        Bench.WriteResults(json, rows, sb.ToString(), paired.Count > 0 ? paired : null);
        PlotProjection(projection, Path.ChangeExtension(json, ".png"));
        return 0;
    }

    /// <summary>A compressor against a reference (DGC or top-k) over the timed turns they took side by side in one interleaved
    /// job.</summary>
    public sealed record PairedComparison(int Hosts, int LinkMbps, double Density, string Compressor, string Reference, int Turns,
        double StepMs, double ReferenceStepMs, double Ratio,
        double StepDiffMs, double StepDiffLowMs, double StepDiffHighMs, double NonComputeDiffMs, double NonComputeDiffLowMs,
            double NonComputeDiffHighMs, int Faster);

    // Every compressor of an interleaved job against DGC and top-k of the same job: turn i of one and turn i of the
    // other ran seconds apart on the same ranks, so each pair of turns is one paired measurement.
    private static List<PairedComparison> PairedComparisons(List<Row> rows)
    {
        var result = new List<PairedComparison>();
        foreach (var job in rows.Where(r => r.BlockStepMs is { Length: > 1 } && r.BlockComputeMs is not null)
                     .GroupBy(r => (r.Hosts, r.LinkMbps, r.WorkersPerHost, r.Exchange, r.Density, r.InterleaveBlock)))
        {
            foreach (string reference in new[] { "dgc", "topk" })
            {
                if (job.FirstOrDefault(r => r.Compressor == reference) is not { } b) continue;
                double[] refStep = b.BlockStepMs!, refRest = NonCompute(b);
                foreach (var r in job.Where(r => r.Compressor != reference && r.BlockStepMs!.Length == refStep.Length))
                {
                    var step = refStep.Zip(r.BlockStepMs!, (x, y) => x - y).ToArray();
                    var rest = refRest.Zip(NonCompute(r), (x, y) => x - y).ToArray();
                    var (sm, sl, sh) = MeanInterval(step);
                    var (nm, nl, nh) = MeanInterval(rest);
                    result.Add(new PairedComparison(r.Hosts, r.LinkMbps, r.Density, r.Compressor, reference, step.Length,
                        r.BlockStepMs!.Average(), refStep.Average(),
                        refStep.Average() / r.BlockStepMs!.Average(), sm, sl, sh, nm, nl, nh, step.Count(d => d > 0)));
                }
            }
        }
        return result;
    }

    // Step minus compute per timed turn: compression, exchange and the wait for the slowest rank.
    private static double[] NonCompute(Row r) => r.BlockStepMs!.Zip(r.BlockComputeMs!, (step, compute) => step - compute).ToArray();

    /// <summary>The mean of <paramref name="x"/> and its two-sided 95 % Student-t interval.</summary>
    public static (double Mean, double Low, double High) MeanInterval(IReadOnlyList<double> x)
    {
        double mean = x.Average();
        if (x.Count < 2) return (mean, double.NaN, double.NaN);
        double sd = Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Count - 1));
        double half = MathNet.Numerics.Distributions.StudentT.InvCDF(0, 1, x.Count - 1, 0.975) * sd / Math.Sqrt(x.Count);
        return (mean, mean - half, mean + half);
    }

    // Runs joined from several sweeps may differ in length (a dense run at 100 Mbit/s takes seconds per step).
    private static string StepsText(IEnumerable<Row> rows)
    {
        var steps = rows.Select(r => r.Steps).Distinct().Order().ToList();
        var timed = rows.Select(r => r.TimedSteps ?? r.Steps).Distinct().Order().ToList();
        string timing = timed.Count == 1 && timed[0] < steps[0] ? $", times and bytes over the last {timed[0]} of each run" : "";
        return (steps.Count == 1 ? $"{steps[0]} steps" : "steps per run: "
            + string.Join(", ",
            rows.GroupBy(r => r.Steps).Select(x => $"{x.Key} ({string.Join(", ", x.Select(r => r.Compressor).Distinct())})"))) + timing;
    }

    private static double BetaSecondsPerByte(this Row r) => r.BetaNsPerByte * 1e-9;

    private static void PlotProjection(List<(int P, double Density, double DenseMs, double SparseMs, string Auto)> projection, string path)
    {
        var plot = new ScottPlot.Plot();
        var ps = projection.Where(x => x.Density == 0.01).Select(x => Math.Log2(x.P)).ToArray();
        var dense = plot.Add.Scatter(ps, projection.Where(x => x.Density == 0.01).Select(x => Math.Log10(x.DenseMs)).ToArray());
        dense.LegendText = "dense ring allreduce";
        foreach (double d in new[] { 0.01, 0.001 })
        {
            var s = plot.Add.Scatter(ps, projection.Where(x => x.Density == d).Select(x => Math.Log10(x.SparseMs)).ToArray());
            s.LegendText = $"sparse allgather, density {d}";
        }
        plot.Axes.Bottom.Label.Text = "log2(workers)";
        plot.Axes.Left.Label.Text = "log10(ms per exchange)";
        plot.Title("Cost-model projection: sparse stops paying once P x density nears 1");
        plot.ShowLegend();
        plot.SavePng(path, 900, 500);
        Console.WriteLine($"wrote {path}");
    }
}
