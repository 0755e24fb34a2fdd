using System.Text.Json;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>
/// Dense MPI_Allreduce vs sparse allreduce of SIDCo-selected gradients (and what Auto picks), under
/// real mpirun and in-process, median of at least 10 runs after warm-up.
/// </summary>
internal static class AllReduceBenchmark
{
    public sealed record Row(string Mode, string Transport, int Ranks, int Elements, double Density, double MedianMs, double BytesPerRank,
        double? PredictedMs = null, string? AutoChose = null, long? TotalSelected = null);

    public static int Run(BenchArgs a)
    {
        var ranks = a.Ints("ranks", "2,4");
        int n = a.Int("elements", 25_600_000);
        var densities = a.List("densities", "0.1,0.01,0.001");
        int runs = a.Int("runs", 10);
        var rows = new List<Row>();
        foreach (int p in ranks)
        {
            Console.WriteLine($"mpirun -np {p}: {n:N0} floats");
            foreach (var line in Bench.RunUnderMpirun(p,
                $"allreduce-worker --elements {n} --densities {string.Join(",", densities)} --runs {runs}"))
                rows.Add(JsonSerializer.Deserialize<Row>(line, Bench.JsonLine)!);
            if (a.Has("no-inprocess")) continue;
            Console.WriteLine($"in-process, {p} workers");
            using var group = new InProcessGroup(p);
            var results = new List<Row>[p];
            group.Run(c => results[c.Rank] = Worker(c, n, densities.Select(double.Parse).ToArray(), runs));
            rows.AddRange(results[0]);
        }
        var table =
            Bench.Table(["transport", "ranks", "density", "mode", "median ms", "bytes/rank (model)", "predicted ms", "auto chose",
            "speed-up vs dense"],
            rows.Select(r => new[]
            {
                r.Transport, r.Ranks.ToString(), Bench.F(r.Density, "G3"), r.Mode, Bench.F(r.MedianMs), Bench.F(r.BytesPerRank, "N0"),
                r.PredictedMs is { } pm ? Bench.F(pm) : "-", r.AutoChose ?? "-",
                Bench.F(rows.First(d =>
                    d.Mode == "dense" && d.Transport == r.Transport && d.Ranks == r.Ranks && d.Density == r.Density).MedianMs / r.MedianMs,
                    "F1"),
            }));
        Bench.WriteResults(a.Get("json"), rows, table);
        return 0;
    }

    /// <summary>One rank's part (called under mpirun via "allreduce-worker"): rank 0 prints RESULT lines.</summary>
    public static int MpiWorker(BenchArgs a)
    {
        using var comm = new MpiCommunicator();
        var rows = Worker(comm, a.Int("elements", 25_600_000), a.Doubles("densities", "0.001"), a.Int("runs", 10));
        if (comm.Rank == 0) foreach (var r in rows) Console.WriteLine("RESULT " + JsonSerializer.Serialize(r, Bench.JsonLine));
        return 0;
    }

    private static List<Row> Worker(ICommunicator comm, int n, double[] densities, int runs)
    {
        var g = CompressionBenchmark.Laplace(n, 100 + comm.Rank);
        var buffer = new float[n];
        var rows = new List<Row>();
        var dense = new GradientExchange(comm, n, ExchangeMode.Dense);
        var model = CostModel.Probe(comm);
        double denseMs = Time(comm, () => { g.CopyTo(buffer, 0); dense.AllReduceDense(buffer); }, runs);
        foreach (double d in densities)
        {
            var sparseGradient = new SparseGradient();
            Compressors.Create(CompressorKind.SidcoExponential, new CompressorOptions { Density = d, AdaptiveStages = false }).Compress(g,
                sparseGradient);
            var counts = new int[comm.Size];
            comm.AllGather<int>([sparseGradient.Count], counts);
            long total = counts.Sum(c => (long)c);
            rows.Add(new Row("dense", comm.Transport, comm.Size, n, d, denseMs, model.DenseBytesPerRank(n), model.DenseSeconds(n) * 1e3));
            var sparse = new GradientExchange(comm, n, ExchangeMode.Sparse, model: model);
            double sparseMs = Time(comm, () => sparse.AllReduce(sparseGradient, buffer), runs);
            rows.Add(new Row("sparse", comm.Transport, comm.Size, n, d, sparseMs, model.SparseBytesPerRank(total),
                model.SparseSeconds(total) * 1e3, TotalSelected: total));
            var auto = new GradientExchange(comm, n, ExchangeMode.Auto, model: model);
            ExchangeMode chose = ExchangeMode.Auto;
            double autoMs = Time(comm, () => chose = auto.AllReduce(sparseGradient, buffer).Mode, runs);
            rows.Add(new Row("auto", comm.Transport, comm.Size, n, d, autoMs,
                chose == ExchangeMode.Dense ? model.DenseBytesPerRank(n) : model.SparseBytesPerRank(total),
                Math.Min(model.DenseSeconds(n), model.SparseSeconds(total)) * 1e3, chose.ToString().ToLowerInvariant(), total));
        }
        return rows;
    }

    // Median over ranks' agreed timings: every run starts at a barrier, and the slowest rank's time counts.
    private static double Time(ICommunicator comm, Action op, int runs)
    {
        op(); op();
        var t = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            comm.Barrier();
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            op();
            var ms = new[] { System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds };
            var all = new double[comm.Size];
            comm.AllGather<double>(ms, all);
            t[i] = all.Max();
        }
        Array.Sort(t);
        return 0.5 * (t[(runs - 1) / 2] + t[runs / 2]);
    }
}
