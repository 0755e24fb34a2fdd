using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>
/// The two kernel backends side by side in one run: the CPU (SIMD) backend and the ILGPU backend on
/// the preferred device (a GPU when ILGPU finds one), operation by operation and for a whole SIDCo-E
/// call with error feedback. ILGPU's time is split into host-device copies and kernels, which says
/// what a GPU would give a gradient that already lives in device memory.
/// </summary>
internal static class KernelBenchmark
{
    public sealed record Row(string Operation, int Elements, string Backend, string Device, double MedianMs, double? TransferMs,
        double? KernelMs);

    public static int Run(BenchArgs a)
    {
        var elements = a.Ints("elements", "317066,5824522,25600000");
        int runs = a.Int("runs", 20);
        using var ilgpu =
            a.Get("accelerator", "preferred") == "cpu" ? IlgpuGradientKernels.CreateCpu() : IlgpuGradientKernels.CreatePreferred();
        var backends = new (IGradientKernels Kernels, string Device)[]
        {
            (CpuGradientKernels.Instance, $"{Environment.ProcessorCount} CPU cores"),
            (ilgpu, $"{ilgpu.Accelerator.Name} (group {ilgpu.GroupSize})"),
        };
        Console.WriteLine($"ILGPU device: {ilgpu.Accelerator.Name}, {ilgpu.Accelerator.AcceleratorType}, " +
            $"{ilgpu.Accelerator.MemorySize / (1 << 20):N0} MiB");
        var all = CompressionBenchmark.Laplace(elements.Max(), 1);
        // |x| of a unit Laplace variable exceeds t with probability exp(-t).
        float top25 = (float)Math.Log(4), top10 = (float)Math.Log(10), top1 = (float)Math.Log(100), top05 = (float)Math.Log(200),
            top01 = (float)Math.Log(1000);
        var rows = new List<Row>();
        foreach (int n in elements)
        {
            var g = all.AsSpan(0, n).ToArray();
            var residual = new float[n];
            var fresh = new float[n];
            var buffer = new SparseBuffer();
            var offsets = new Random(11);
            var operations = new (string Name, Func<IGradientKernels, Action> Body, Action? Before)[]
            {
                ("accumulate + measure", k => () => k.AccumulateAndMeasure(g, residual, StatisticsKinds.Basic), () =>
                    residual.AsSpan().Clear()),
                ("accumulate + measure (logs)", k => () => k.AccumulateAndMeasure(g, residual, StatisticsKinds.LogMagnitudes), () =>
                    residual.AsSpan().Clear()),
                ("accumulate + measure (logs, squares)", k => () =>
                    k.AccumulateAndMeasure(g, residual, StatisticsKinds.LogMagnitudes | StatisticsKinds.Squares), () =>
                    residual.AsSpan().Clear()),
                // What SIDCo-E's pass does in steady state: also notes the candidates (0.5 %) and the peaks' statistics (25 %).
                ("accumulate + measure (candidates, tail)", k => () =>
                    k.AccumulateAndMeasure(g, residual, StatisticsKinds.Basic, top05, buffer, top25), () =>
                    { residual.AsSpan().Clear(); buffer.Clear(); }),
                ("exceedance statistics (1 %)", k => () => k.MeasureExceedances(g, top1), null),
                ("count above (0.1 %)", k => () => k.CountAbove(g, top01), null),
                ("select above (0.1 %)", k => () => k.SelectAbove(g, top01, buffer), buffer.Clear),
                // A density warm-up starts near 25 %: there the compaction itself dominates.
                ("select above (10 %)", k => () => k.SelectAbove(g, top10, buffer), buffer.Clear),
                ("SIDCo-E call, density 0.001, error feedback", k =>
                {
                    var compressor = Compressors.Create("sidco-e", new CompressorOptions { Density = 0.001, Seed = 1 }, k);
                    var feedback = new ErrorFeedback(n);
                    var output = new SparseGradient();
                    return () => compressor.Compress(fresh, output, feedback);
                }, () =>
                {
                    int o = offsets.Next(n);
                    g.AsSpan(o).CopyTo(fresh);
                    g.AsSpan(0, o).CopyTo(fresh.AsSpan(n - o));
                }),
            };
            foreach (var op in operations)
            {
                foreach (var (kernels, device) in backends)
                {
                    var body = op.Body(kernels);
                    for (int i = 0; i < 10; i++) { op.Before?.Invoke(); body(); } // compiles kernels, settles adaptive state
                    ilgpu.ResetTimings();
                    double ms = Bench.MedianMs(body, runs, warmup: 0, before: op.Before);
                    var split = kernels == ilgpu ? ilgpu.Timings : (IlgpuTimings?)null;
                    var row = new Row(op.Name, n, kernels.Name, device, ms, split?.Transfer.TotalMilliseconds / runs,
                        split?.Kernel.TotalMilliseconds / runs);
                    rows.Add(row);
                    Console.WriteLine($"  n={n,11:N0} {op.Name,-46} {kernels.Name,-11} {ms,9:F3} ms"
                        + (split is { } s ? $"  (copies {row.TransferMs:F3}, kernels {row.KernelMs:F3} ms per call)" : ""));
                }
            }
        }
        string agreement = CheckAgreement(ilgpu, all, top1, top01); // all holds the largest size; WriteResults prints the line
        Bench.WriteResults(a.Get("json"), rows, MakeTable(rows) + "\n" + agreement + "\n");
        return agreement.StartsWith("Results agree", StringComparison.Ordinal) ? 0 : 1;
    }

    // The same operations on both backends must give the same selections and statistics equal up to
    // the order of summation: checked here because the tests (no GPU in CI) run ILGPU on its CPU accelerator only.
    private static string CheckAgreement(IlgpuGradientKernels ilgpu, float[] g, float top1, float top01)
    {
        var cpu = CpuGradientKernels.Instance;
        var problems = new List<string>();
        var r1 = new float[g.Length]; var r2 = new float[g.Length];
        for (int i = 0; i < g.Length; i++) r1[i] = r2[i] = 0.25f * g[(i + 12345) % g.Length];
        var kinds = StatisticsKinds.LogMagnitudes | StatisticsKinds.Squares;
        var c1 = new SparseBuffer(); var c2 = new SparseBuffer();
        var a = cpu.AccumulateAndMeasure(g, r1, kinds, top01, c1);
        var b = ilgpu.AccumulateAndMeasure(g, r2, kinds, top01, c2);
        if (!r1.AsSpan().SequenceEqual(r2)) problems.Add("accumulated residuals differ");
        if (!c1.Indices.SequenceEqual(c2.Indices) || !c1.Values.SequenceEqual(c2.Values)) problems.Add("candidates differ");
        if (a.MaxAbs != b.MaxAbs || Math.Abs(a.SumAbs - b.SumAbs) > 1e-5 * a.SumAbs
            || Math.Abs(a.SumLogAbs - b.SumLogAbs) > 1e-4 * Math.Abs(a.SumLogAbs)
            || Math.Abs(a.SumSquares - b.SumSquares) > 1e-5 * a.SumSquares) problems.Add($"statistics differ ({a} vs {b})");
        var e1 = cpu.MeasureExceedances(g, top1); var e2 = ilgpu.MeasureExceedances(g, top1);
        if (e1.Count != e2.Count || e1.Min != e2.Min
            || Math.Abs(e1.Sum - e2.Sum) > 1e-6 * e1.Sum) problems.Add($"exceedances differ ({e1} vs {e2})");
        if (cpu.CountAbove(g, top01) != ilgpu.CountAbove(g, top01)) problems.Add("counts differ");
        var s1 = new SparseBuffer(); var s2 = new SparseBuffer();
        cpu.SelectAbove(g, top1, s1); ilgpu.SelectAbove(g, top1, s2);
        if (!s1.Indices.SequenceEqual(s2.Indices) || !s1.Values.SequenceEqual(s2.Values)) problems.Add("selections differ");
        return problems.Count == 0
            ? $"Results agree on {g.Length:N0} entries: residuals and selections identical, statistics equal up to the order of " +
                $"summation ({s1.Count:N0} entries selected at the 1 % threshold)."
            : "Results DISAGREE: " + string.Join("; ", problems);
    }

    private static string MakeTable(List<Row> rows)
    {
        var sb = new System.Text.StringBuilder();
        var cpu = rows.First(r => r.TransferMs is null);
        var gpu = rows.First(r => r.TransferMs is not null);
        sb.AppendLine($"cpu-simd on {cpu.Device}; {gpu.Backend} on {gpu.Device}. Median of the timed calls; copies and kernels are means " +
            $"per call.");
        sb.AppendLine();
        sb.Append(Bench.Table(["elements", "operation", "cpu-simd ms", $"{gpu.Backend} ms", "of which copies", "of which kernels",
            "cpu / ilgpu", "cpu / ilgpu kernels only"],
            rows.GroupBy(r => (r.Elements, r.Operation)).Select(g =>
            {
                var c = g.First(r => r.TransferMs is null);
                var k = g.First(r => r.TransferMs is not null);
                return new[]
                {
                    Bench.F(g.Key.Elements, "N0"), g.Key.Operation, Bench.F(c.MedianMs, "F3"), Bench.F(k.MedianMs, "F3"),
                        Bench.F(k.TransferMs!.Value, "F3"),
                    Bench.F(k.KernelMs!.Value, "F3"), Bench.F(c.MedianMs / k.MedianMs, "F2") + "x",
                        Bench.F(c.MedianMs / k.KernelMs!.Value, "F2") + "x",
                };
            })));
        return sb.ToString();
    }
}
