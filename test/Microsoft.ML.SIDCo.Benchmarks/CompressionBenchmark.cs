using System.Numerics.Tensors;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;
using Microsoft.ML.SIDCo.Training;
using ScottPlot;
using TorchSharp;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>
/// The paper's compression microbenchmark: latency and achieved/target density of every compressor,
/// beside two reference rows measured in the same run: "floor" (one read pass, SumOfMagnitudes) and
/// "torch-topk" (what a TorchSharp user writes today: topk on the magnitudes).
/// </summary>
internal static class CompressionBenchmark
{
    public sealed record Row(string Compressor, string Data, int Elements, double Density, double MedianMs, double? AchievedOverTarget,
        int? CallsToBand = null, int? Stages = null);

    public static int Run(BenchArgs a)
    {
        var elements = a.Ints("elements", "1000000,10000000,25600000");
        var densities = a.Doubles("densities", "0.1,0.01,0.001");
        var data = a.List("data", "laplace,heavy,real");
        var compressors =
            a.List("compressors", string.Join(",", CompressorNames.All.Where(k => k != CompressorKind.None).Select(k => k.ToName())));
        int runs = a.Int("runs", 10);
        bool skipTorch = a.Has("no-torch-topk");
        // --fixed-stages M: SIDCo estimates in exactly M stages every call (the adaptive controller off).
        int fixedStages = a.Int("fixed-stages", 0);
        // --evict-cache MiB: before each timed call, read that much other memory (untimed), so the residual
        // comes from DRAM as it does in training, where the forward and backward passes run in between.
        var evict = new float[a.Int("evict-cache", 0) * (1 << 18)];
        torch.set_num_threads(Environment.ProcessorCount);
        var rows = new List<Row>();
        int maxN = elements.Max();
        foreach (var kind in data)
        {
            Console.WriteLine($"data {kind}: preparing {maxN} values");
            float[] all = kind switch
            {
                "laplace" => Laplace(maxN, 1),
                "heavy" => StudentT3(maxN, 2),
                "normal" => Normal(maxN, 3),
                "real" => RealGradients(maxN),
                "real-convnet" => RealGradients(maxN, Bench.Model("convnet"), firstCapture: 200),
                _ => throw new ArgumentException($"unknown data '{kind}' (laplace, heavy, normal, real, real-convnet)"),
            };
            foreach (int n in elements)
            {
                var g = all.AsSpan(0, n).ToArray();
                double floor = Bench.MedianMs(() => TensorPrimitives.SumOfMagnitudes(g), runs);
                foreach (double d in densities)
                {
                    rows.Add(new Row("floor", kind, n, d, floor, null));
                    Console.WriteLine($"  n={n} density={d}: floor {floor:F2} ms");
                    foreach (var name in compressors)
                    {
                        var row = Measure(name, kind, g, d, runs, evict, fixedStages);
                        rows.Add(row);
                        Console.WriteLine($"    {name,-10} {row.MedianMs,9:F2} ms  x{row.MedianMs / floor,6:F1} floor  achieved/target " +
                            $"{row.AchievedOverTarget:F3}"
                            + (row.CallsToBand is { } c ? $" (in band after {c} calls, {row.Stages} stages)" : ""));
                    }
                    if (!skipTorch)
                    {
                        using var t = torch.tensor(g);
                        int k = (int)Math.Ceiling(d * n);
                        double ms =
                            Bench.MedianMs(() => { using var scope = torch.NewDisposeScope(); _ = t.abs().topk(k); }, runs, warmup: 1);
                        rows.Add(new Row("torch-topk", kind, n, d, ms, 1.0));
                        Console.WriteLine($"    {"torch-topk",-10} {ms,9:F2} ms  x{ms / floor,6:F1} floor");
                    }
                }
            }
        }
        string table = MakeTable(rows);
        Bench.WriteResults(a.Get("json"), rows, table);
        if (a.Get("json") is { } json) Plot(rows, Path.ChangeExtension(json, ".png"));
        return 0;
    }

    private static Row Measure(string name, string data, float[] g, double density, int runs, float[] evict, int fixedStages)
    {
        var options = new CompressorOptions { Density = density, Seed = 1 };
        if (fixedStages > 0) { options.AdaptiveStages = false; options.Stages = fixedStages; }
        var output = new SparseGradient();
        // Latency: with error feedback, the residual carried from call to call as in training, and a
        // fresh gradient of the same distribution each call (g rotated by a random offset, untimed):
        // the same vector every call would grow the residual in lock-step, a pattern training never has.
        // The warm-up lets the adaptive state settle, as it does in the first steps of training.
        var timed = Compressors.Create(name, options);
        var feedback = new ErrorFeedback(g.Length);
        var fresh = new float[g.Length];
        var offsets = new Random(11);
        void NextGradient()
        {
            int o = offsets.Next(g.Length);
            g.AsSpan(o).CopyTo(fresh);
            g.AsSpan(0, o).CopyTo(fresh.AsSpan(g.Length - o));
        }
        double ms = Bench.MedianMs(() => timed.Compress(fresh, output, feedback), runs, warmup: 10, before: () =>
        {
            if (evict.Length > 0) s_sink += TensorPrimitives.Sum(evict);
            NextGradient(); // the gradient is warm: training gathers it just before compressing
        });
        // Estimation quality: a fresh compressor called repeatedly; adaptive SIDCo settles its stages.
        var c = Compressors.Create(name, options);
        var ratios = new List<double>();
        int? inBand = null;
        for (int call = 0; call < 30; call++)
        {
            ratios.Add(c.Compress(g, output).AchievedOverTarget);
            if (call >= 4 && inBand is null && ratios.TakeLast(5).Average() is var w && w >= 0.8 && w <= 1.25) inBand = call + 1;
        }
        bool sidco = c is SidcoCompressor;
        return new Row(name, data, g.Length, density, ms, ratios.TakeLast(5).Average(), sidco ? inBand : null,
            sidco ? ((SidcoCompressor)c).CurrentStages : null);
    }

    private static float s_sink; // keeps the eviction read from being optimised away

    private static string MakeTable(List<Row> rows)
    {
        var sb = new System.Text.StringBuilder();
        foreach (var group in rows.GroupBy(r => (r.Data, r.Elements, r.Density)))
        {
            double floor = group.First(r => r.Compressor == "floor").MedianMs;
            double? torchTopk = group.FirstOrDefault(r => r.Compressor == "torch-topk")?.MedianMs;
            sb.AppendLine($"**{group.Key.Data}, {group.Key.Elements:N0} elements, density {group.Key.Density}**");
            sb.AppendLine();
            sb.Append(Bench.Table(["compressor", "median ms", "x floor", "speed-up vs torch-topk", "achieved/target",
                "calls to band (stages)"],
                group.Select(r => new[]
                {
                    r.Compressor, Bench.F(r.MedianMs), Bench.F(r.MedianMs / floor, "F1"),
                        torchTopk is { } t ? Bench.F(t / r.MedianMs, "F1") : "-",
                    r.AchievedOverTarget is { } q ? Bench.F(q, "F3") : "-",
                        r.CallsToBand is { } c ? $"{c} ({r.Stages})" : r.Stages is { } s ? $"not in 30 ({s})" : "-",
                })));
            sb.AppendLine();
        }
        return sb.ToString();
    }

    private static void Plot(List<Row> rows, string path)
    {
        int n = rows.Max(r => r.Elements);
        double d = rows.Min(r => r.Density);
        var sel = rows.Where(r => r.Elements == n && r.Density == d && r.Compressor != "floor").ToList();
        var names = sel.Select(r => r.Compressor).Distinct().ToList();
        var datas = sel.Select(r => r.Data).Distinct().ToList();
        var multi = new Multiplot();
        multi.AddPlots(2);
        var lat = multi.GetPlot(0);
        var qual = multi.GetPlot(1);
        for (int di = 0; di < datas.Count; di++)
        {
            var bars = names.Select((c, i) => sel.FirstOrDefault(r => r.Compressor == c && r.Data == datas[di]) is { } r
                ? new Bar { Position = i * (datas.Count + 1) + di, Value = Math.Log10(r.MedianMs), FillColor = Colors.Category10[di] }
                    : null).OfType<Bar>().ToList();
            lat.Add.Bars(bars).LegendText = datas[di];
            var qbars =
                names.Select((c, i) =>
                sel.FirstOrDefault(r => r.Compressor == c && r.Data == datas[di] && r.AchievedOverTarget is not null) is { } r
                ? new Bar { Position = i * (datas.Count + 1) + di, Value = r.AchievedOverTarget!.Value, FillColor = Colors.Category10[di] }
                    : null).OfType<Bar>().ToList();
            qual.Add.Bars(qbars).LegendText = datas[di];
        }
        var ticks = names.Select((c, i) => new Tick(i * (datas.Count + 1) + (datas.Count - 1) / 2.0, c)).ToArray();
        foreach (var p in new[] { lat, qual })
        {
            p.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
            p.ShowLegend();
        }
        lat.Title($"log10(median ms), {n:N0} elements, density {d}");
        qual.Title("achieved / target density (1 is ideal)");
        qual.Add.HorizontalLine(1);
        multi.SavePng(path, 1100, 800);
        Console.WriteLine($"wrote {path}");
    }

    public static float[] Laplace(int n, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) { double u = rng.NextDouble() - 0.5; x[i] = (float)(-Math.Sign(u) * Math.Log(1 - 2 * Math.Abs(u))); }
        return x;
    }

    public static float[] Normal(int n, int seed)
    {
        var normal = new MathNet.Numerics.Distributions.Normal(0, 1, new Random(seed));
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)normal.Sample();
        return x;
    }

    public static float[] StudentT3(int n, int seed)
    {
        var t = new MathNet.Numerics.Distributions.StudentT(0, 1, 3, new Random(seed));
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)t.Sample();
        return x;
    }

    /// <summary>
    /// Gradients captured from a model trained on Fashion-MNIST (by default the wide MLP; "real-convnet":
    /// the training benchmark's and the sample's convnet), at several points of training from step <paramref name="firstCapture"/> on,
    /// concatenated to <paramref name="n"/> values.
    /// </summary>
    public static float[] RealGradients(int n, ModelDefinition? definition = null, int firstCapture = 0)
    {
        var rows = FashionMnist.Load(train: true, limit: 6400);
        torch.manual_seed(1);
        using var model = (definition ?? Bench.Model("wide-mlp")).Build(FashionMnist.Pixels, FashionMnist.Classes);
        var ps = new ParameterSet(model);
        var optimizer = new SgdOptimizer(ps.Length, 0.9f, false, 0);
        var result = new float[n];
        var grad = new float[ps.Length];
        int filled = 0, step = 0;
        int[] capture = [.. new[] { 0, 10, 25, 50, 100, 150, 200, 300, 400, 500 }.Select(s => s + firstCapture)];
        const int b = 64;
        var x = new float[b * FashionMnist.Pixels];
        var y = new long[b];
        while (filled < n)
        {
            for (int j = 0; j < b; j++)
            {
                var r = rows[(step * b + j) % rows.Length];
                r.Features.CopyTo(x, j * FashionMnist.Pixels);
                y[j] = r.Label;
            }
            using (var scope = torch.NewDisposeScope())
            {
                var loss = torch.nn.functional.cross_entropy(model.forward(torch.tensor(x, [b, FashionMnist.Pixels])), torch.tensor(y));
                model.zero_grad();
                loss.backward();
            }
            ps.GatherGradients(grad);
            if (capture.Contains(step) || step > capture[^1])
            {
                int take = Math.Min(grad.Length, n - filled);
                grad.AsSpan(0, take).CopyTo(result.AsSpan(filled));
                filled += take;
                Console.WriteLine($"  captured the gradient at step {step} ({filled:N0}/{n:N0})");
            }
            optimizer.Step(ps, grad, 0.05f);
            step++;
        }
        return result;
    }
}
