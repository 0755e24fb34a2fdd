using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Samples;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>
/// The dense exchange alone on the emulated links (<c>./build.sh bench cluster --exchange-trials N</c>), in the shapes training
/// gives it, to find where an overlapped step's time goes: the whole gradient in one piece on the main thread (the exchange
/// after backward), the overlap's bucket pieces on the main thread, the same on a thread of their own, that thread with CPU
/// work on the main thread beside it (what backward does while a bucket is exchanged), and the one piece with CPU work on a
/// second thread; then where the time of one piece goes: the exchange with Open MPI's allgather instead of our ring, its
/// all-to-all half and its allgather half alone (ring and Open MPI's), and Open MPI's own allreduce. With
/// <c>--shapes allgather-sweep</c> it times instead our ring against Open MPI's allgather for blocks from 4 KiB to 4 MiB a
/// rank, around the ring's threshold (<see cref="MpiCommunicator.DefaultRingAllGatherMinBytes"/>). Every trial starts after
/// a barrier and a pause (the compute between steps), the shapes take turns trial by trial, and a trial's time is the
/// slowest rank's.
/// </summary>
internal static class ClusterExchangeBenchmark
{
    private const int DefaultTrials = 10, DefaultGapMs = 35, DefaultLoadMs = 10;
    private const string TrainingShapes = "training", AllGatherSweep = "allgather-sweep";

    // Blocks a rank, in KiB, of the allgather sweep: powers of 4 on both sides of the ring's 256 KiB threshold.
    private static readonly int[] s_sweepBlockKiB = [4, 16, 64, 256, 1024, 4096];

    public sealed record Row(string Model, int Hosts, int LinkMbps, string Shape, int Pieces, long BytesPerRank, double MedianMs,
        double MinMs, double MaxMs, int SlowTrials, double[] TrialMs);

    // Bytes: what each rank sends in one trial of the shape.
    private sealed record Shape(string Name, int Pieces, long Bytes, Func<double> Run);

    public static int Worker(BenchArgs a)
    {
        string modelName = a.Get("model", "wide-mlp");
        var definition = Bench.Model(modelName);
        int trials = a.Int("trials", DefaultTrials), gapMs = a.Int("gap-ms", DefaultGapMs), loadMs = a.Int("load-ms", DefaultLoadMs);
        int linkMbps = a.Int("link-mbps", 0);
        string set = a.Get("shapes", TrainingShapes);
        if (set is not (TrainingShapes or AllGatherSweep))
            throw new ArgumentException($"--shapes takes {TrainingShapes} or {AllGatherSweep}, not {set}.");
        if (set == AllGatherSweep) return Sweep(modelName, trials, gapMs, linkMbps);
        using var module = definition.Build(FashionMnist.Pixels, FashionMnist.Classes);
        var parameters = new ParameterSet(module);
        var buckets =
            BackwardOverlap.Plan(parameters.Slices, (long)(a.Double("bucket-mb", SIDCoTrainer.Defaults.BucketSizeMB) * (1 << 20)));
        using var comm = new MpiCommunicator();
        var exchange = new GradientExchange(comm, parameters.Length, ExchangeMode.Dense) { OrderedSum = true };
        var unordered = new GradientExchange(comm, parameters.Length, ExchangeMode.Dense);
        // The same world with MPI_Allgather for every block size: Open MPI's algorithm beside our ring.
        using var openMpiGather = new MpiCommunicator { RingAllGatherMinBytes = int.MaxValue };
        var openMpiExchange = new GradientExchange(openMpiGather, parameters.Length, ExchangeMode.Dense) { OrderedSum = true };
        var gradient = new float[parameters.Length];
        var rng = new Random(comm.Rank + 1);
        for (int i = 0; i < gradient.Length; i++) gradient[i] = rng.NextSingle() - 0.5f;

        void Whole() => exchange.AllReduceDense(gradient);
        void Pieces() { foreach (var b in buckets) exchange.AverageDense(gradient.AsSpan(b.Offset, b.Count)); }
        // The rank-ordered sum's two halves alone, on its padded blocks, and Open MPI's own allreduce (its order, not ours).
        int block = (gradient.Length + comm.Size - 1) / comm.Size;
        var padded = new float[block * comm.Size];
        var received = new float[padded.Length];
        void AllToAllHalf() => comm.AllToAll<float>(padded, received);
        void AllGatherHalf(MpiCommunicator c) => c.AllGather<float>(padded.AsSpan(0, block), received);
        long bytes = (long)exchange.AllReduceDense(gradient).BytesPerRank; // also opens the connections and sizes the buffers
        openMpiExchange.AllReduceDense(gradient);
        long half = (comm.Size - 1L) * block * sizeof(float);
        var shapes = new[]
        {
            new Shape("whole, main thread", 1, bytes, () => Timed(Whole)),
            new Shape("buckets, main thread", buckets.Count, bytes, () => Timed(Pieces)),
            new Shape("buckets, exchange thread", buckets.Count, bytes, () => Timed(() => OnThread(Pieces, 0))),
            new Shape($"buckets, exchange thread, {loadMs} ms CPU beside", buckets.Count, bytes,
                () => Timed(() => OnThread(Pieces, loadMs))),
            new Shape($"whole, main thread, {loadMs} ms CPU on a second thread", 1, bytes, () => Timed(() => BesideLoad(Whole, loadMs))),
            new Shape("whole, main thread, Open MPI's allgather", 1, bytes, () => Timed(() => openMpiExchange.AllReduceDense(gradient))),
            new Shape("whole, the all-to-all half alone", 1, half, () => Timed(AllToAllHalf)),
            new Shape("whole, the allgather half alone", 1, half, () => Timed(() => AllGatherHalf(comm))),
            new Shape("whole, the allgather half alone, Open MPI's", 1, half, () => Timed(() => AllGatherHalf(openMpiGather))),
            new Shape("whole, MPI_Allreduce (Open MPI's order)", 1, bytes, () => Timed(() => unordered.AllReduceDense(gradient))),
        };
        return TimeAndReport(comm, shapes, trials, gapMs, modelName, linkMbps);
    }

    // The allgather sweep needs no model or gradient: our ring (every block size) against Open MPI's MPI_Allgather.
    private static int Sweep(string modelName, int trials, int gapMs, int linkMbps)
    {
        using var comm = new MpiCommunicator();
        using var ring = new MpiCommunicator { RingAllGatherMinBytes = 0 };
        using var openMpiGather = new MpiCommunicator { RingAllGatherMinBytes = int.MaxValue };
        var shapes = SweepShapes(comm, ring, openMpiGather);
        foreach (var shape in shapes) shape.Run(); // connections and first touches of the buffers, untimed
        return TimeAndReport(comm, shapes, trials, gapMs, modelName, linkMbps);
    }

    // Times every shape `trials` times, taking turns after a barrier and a pause; rank 0 prints a row per shape.
    private static int TimeAndReport(MpiCommunicator comm, Shape[] shapes, int trials, int gapMs, string modelName, int linkMbps)
    {
        var mine = new double[shapes.Length * trials];
        for (int t = 0; t < trials; t++)
        {
            for (int s = 0; s < shapes.Length; s++)
            {
                comm.Barrier();
                Thread.Sleep(gapMs);
                mine[s * trials + t] = shapes[s].Run();
            }
        }
        var all = new double[mine.Length * comm.Size];
        comm.AllGather<double>(mine, all);
        if (comm.Rank != 0) return 0;
        var slowest = Enumerable.Range(0, shapes.Length).Select(s => Enumerable.Range(0, trials)
            .Select(t => Enumerable.Range(0, comm.Size).Max(r => all[r * mine.Length + s * trials + t])).ToArray()).ToArray();
        for (int s = 0; s < shapes.Length; s++)
        {
            // A slow trial: a fifth above the fastest trial of any shape that moves the same bytes, far beyond the spread of
            // an undisturbed exchange.
            double fastest = Enumerable.Range(0, shapes.Length).Where(o => shapes[o].Bytes == shapes[s].Bytes).Min(o => slowest[o].Min());
            var sorted = slowest[s].Order().ToArray();
            int slow = slowest[s].Count(x => x > 1.2 * fastest);
            var row = new Row(modelName, comm.Size, linkMbps, shapes[s].Name, shapes[s].Pieces, shapes[s].Bytes, Bench.Median(sorted),
                sorted[0], sorted[^1], slow, slowest[s]);
            Console.WriteLine("RESULT " + JsonSerializer.Serialize(row, Bench.JsonLine));
        }
        return 0;
    }

    // The sweep's shapes: a float block of each size, gathered by the ring and by MPI_Allgather.
    private static Shape[] SweepShapes(MpiCommunicator comm, MpiCommunicator ring, MpiCommunicator openMpi)
    {
        var shapes = new List<Shape>();
        foreach (int kib in s_sweepBlockKiB)
        {
            var mine = new float[kib * 1024 / sizeof(float)];
            mine.AsSpan().Fill(comm.Rank);
            var all = new float[mine.Length * comm.Size];
            long bytes = (comm.Size - 1L) * kib * 1024;
            shapes.Add(new Shape($"allgather of {kib} KiB blocks, our ring", 1, bytes,
                () => Timed(() => ring.AllGather<float>(mine, all))));
            shapes.Add(new Shape($"allgather of {kib} KiB blocks, Open MPI's", 1, bytes,
                () => Timed(() => openMpi.AllGather<float>(mine, all))));
        }
        return [.. shapes];
    }

    private static double Timed(Action body)
    {
        long start = Stopwatch.GetTimestamp();
        body();
        return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
    }

    // The overlap's arrangement: the exchange on a thread of its own, this thread busy for loadMs and then waiting for it.
    private static void OnThread(Action exchange, int loadMs)
    {
        var thread = new Thread(() => exchange()) { IsBackground = true };
        thread.Start();
        Busy(loadMs);
        thread.Join();
    }

    private static void BesideLoad(Action exchange, int loadMs)
    {
        var thread = new Thread(() => Busy(loadMs)) { IsBackground = true };
        thread.Start();
        exchange();
        thread.Join();
    }

    // CPU work without memory traffic or allocation: a spin for the given time.
    private static void Busy(int ms)
    {
        if (ms <= 0) return;
        long end = Stopwatch.GetTimestamp() + ms * Stopwatch.Frequency / 1000;
        while (Stopwatch.GetTimestamp() < end) Thread.SpinWait(20);
    }

    public static int Report(BenchArgs a)
    {
        var rows = Bench.ReadRows<Row>(a);
        if (rows.Count == 0) { Console.Error.WriteLine("cluster: no results"); return 1; }
        var sb = new System.Text.StringBuilder();
        foreach (var g in rows.GroupBy(r => (r.Model, r.Hosts, r.LinkMbps)))
        {
            sb.AppendLine($"**{g.Key.Model}, {g.Key.Hosts} hosts at {g.Key.LinkMbps} Mbit/s**, " +
                $"{g.First().TrialMs.Length} trials of each shape (the slowest rank's time)");
            sb.AppendLine();
            sb.AppendLine(Bench.Table(["shape", "pieces", "bytes sent a rank", "median ms", "min ms", "max ms",
                "trials > 1.2x fastest (same bytes)", "trials (ms)"],
                g.Select(r => new[]
                {
                    r.Shape, r.Pieces.ToString(System.Globalization.CultureInfo.InvariantCulture), Bench.F(r.BytesPerRank, "N0"),
                    Bench.F(r.MedianMs, "F1"),
                    Bench.F(r.MinMs, "F1"), Bench.F(r.MaxMs, "F1"), $"{r.SlowTrials} of {r.TrialMs.Length}",
                    string.Join(" ", r.TrialMs.Select(x => Bench.F(x, "F0"))),
                })));
        }
        Bench.WriteResults(a.Get("json"), rows, sb.ToString());
        return 0;
    }
}
