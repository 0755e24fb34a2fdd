using System.Text.Json;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>
/// End-to-end: trains the Fashion-MNIST ConvNet once per compressor and density with the same seed,
/// and reports test accuracy, time per step split into compute / compress / communicate, and bytes per step.
/// </summary>
/// <remarks>
/// The defaults are the recipe docs/benchmarks.md reports, so the plain command measures what the docs
/// show: the sample's ConvNet, 8 epochs, and DGC's sparsity warm-up over the first 200 steps for every
/// compressor (<c>--density-warmup 0</c> turns it off).
/// </remarks>
internal static class TrainingBenchmark
{
    /// <summary>
    /// Default epochs of a run. At 5, every sparse compressor at density 0.001 ended 0.7-1.1 points behind
    /// dense training, top-k included: the comparison then measured mostly how far five epochs are from convergence.
    /// </summary>
    public const int DefaultEpochs = 8;

    /// <summary>Default length of the sparsity warm-up, in steps (from a density of 0.25 down to the target).</summary>
    public const int DefaultDensityWarmup = 200;

    public sealed record Row(string Compressor, double Density, int Workers, string Transport, double TestAccuracy, double StepMs,
        double ComputeMs,
        double CompressMs, double CommunicateMs, double BytesPerStep, double PredictedCommunicateMs, double DenseBytesPerStep,
            double WallSeconds, string Model,
        double? AchievedDensity = null, double? SparseFraction = null, double? Stages = null, double? LastEpochCompressMs = null,
            double? CompressMsMedian = null);

    public static int Run(BenchArgs a)
    {
        string transport = a.Get("transport", "mpi");
        int workers = a.Int("workers", 4);
        var compressors = a.List("compressors", "none,topk,dgc,sidco-e,sidco-gp,sidco-p");
        var densities = a.List("densities", "0.01,0.001");
        int epochs = a.Int("epochs", DefaultEpochs);
        int warmup = a.Int("density-warmup", DefaultDensityWarmup);
        string model = a.Get("model", "convnet");
        var rows = new List<Row>();
        foreach (var c in compressors)
        {
            foreach (var d in c == "none" ? densities.Take(1) : densities)
            {
                string args =
                    $"training-worker --compressor {c} --density {d} --epochs {epochs} --workers {workers} --model {model} --max-steps " +
                    $"{a.Int("max-steps", 0)}" + (a.Has("momentum-correction") ? " --momentum-correction" : "")
                    + $" --density-warmup {warmup}";
                Console.WriteLine($"{transport}: {c} at {d}");
                var lines = transport == "mpi" ? Bench.RunUnderMpirun(workers, args) : InProcess(args);
                var row = JsonSerializer.Deserialize<Row>(lines.Single(), Bench.JsonLine)!;
                rows.Add(row);
                Console.WriteLine($"  accuracy {row.TestAccuracy:P2}, step {row.StepMs:F1} ms (compute {row.ComputeMs:F1}, compress " +
                    $"{row.CompressMs:F3}, median {row.CompressMsMedian:F3}, communicate {row.CommunicateMs:F2}), {row.BytesPerStep:N0} " +
                    $"B/step");
            }
        }
        var none = rows.FirstOrDefault(r => r.Compressor == "none");
        var table =
            Bench.Table(["compressor", "density", "test accuracy", "vs none (points)", "step ms", "compute ms", "compress ms",
            "compress ms (median step)", "communicate ms", "bytes/step", "bytes vs dense"],
            rows.Select(r => new[]
            {
                r.Compressor, r.Compressor == "none" ? "-" : Bench.F(r.Density, "G3"), Bench.F(r.TestAccuracy * 100, "F2") + " %",
                none is null ? "-" : Bench.F((r.TestAccuracy - none.TestAccuracy) * 100, "+0.00;-0.00"), Bench.F(r.StepMs),
                    Bench.F(r.ComputeMs), Bench.F(r.CompressMs, "F3"),
                r.CompressMsMedian is { } median ? Bench.F(median, "F3") : "-", Bench.F(r.CommunicateMs), Bench.F(r.BytesPerStep, "N0"),
                    Bench.F(r.BytesPerStep / r.DenseBytesPerStep, "P2"),
            }));
        Bench.WriteResults(a.Get("json"), rows,
            $"{workers} workers ({transport}), model {model}, {epochs} epochs, same " +
            "seed"
            + (a.Has("momentum-correction") ? ", momentum correction" : "")
            + (warmup > 0 ? $", density warm-up over {warmup} steps (from 0.25)" : "")
            + "\n\n" + table);
        if (a.Get("json") is { } json) Plot(rows, Path.ChangeExtension(json, ".png"));
        return 0;
    }

    private static List<string> InProcess(string args)
    {
        var output = new StringWriter();
        var original = Console.Out;
        Console.SetOut(output);
        try { Worker(new BenchArgs(args.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1..]), inProcess: true); }
        finally { Console.SetOut(original); }
        return output.ToString().Split('\n').Where(l => l.StartsWith("RESULT ", StringComparison.Ordinal)).Select(l => l[7..]).ToList();
    }

    /// <summary>One training run (a rank's part under mpirun, or all workers in-process); rank 0 prints the RESULT line.</summary>
    public static int Worker(BenchArgs a, bool inProcess = false)
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: true));
        var test = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: false));
        var compressor = CompressorNames.Parse(a.Get("compressor", "sidco-e"));
        var model = Bench.Model(a.Get("model", "convnet"));
        var options = new SIDCoTrainer.Options
        {
            Model = model,
            Compressor = compressor,
            Density = a.Double("density", 0.001),
            Workers = a.Int("workers", 4),
            Epochs = a.Int("epochs", DefaultEpochs),
            BatchSize = 32,
            LearningRate = 0.05,
            Momentum = 0.9,
            Schedule = Training.LearningRateSchedule.Cosine,
            LearningRateWarmupSteps = 50,
            Seed = 1,
            Transport = inProcess ? TransportKind.InProcess : TransportKind.Auto,
            MaxStepsPerEpoch = a.Int("max-steps", 0),
            MomentumCorrection = a.Has("momentum-correction"),
            DensityWarmupSteps = a.Int("density-warmup", DefaultDensityWarmup),
        };
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var fitted = ml.Extensions.SIDCoTrainer(options).Fit(keys.Transform(train));
        double wall = watch.Elapsed.TotalSeconds;
        int rank =
            int.Parse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
        if (rank != 0) return 0;
        var metrics = ml.MulticlassClassification.Evaluate(fitted.Transform(keys.Transform(test)));
        var h = fitted.History.Epochs;
        var row = new Row(compressor.ToName(), fitted.Info.Density, fitted.Info.Workers, fitted.Info.Transport, metrics.MicroAccuracy,
            h.Average(e => e.StepMs), h.Average(e => e.ComputeMs), h.Average(e => e.CompressMs), h.Average(e => e.CommunicateMs),
                h.Average(e => e.BytesPerStep),
            h.Average(e => e.PredictedCommunicateMs), h[0].DenseBytesPerStep, wall, model.Descriptor,
            h.Average(e => e.AchievedDensity), h.Average(e => e.SparseFraction), h[^1].Stages, h[^1].CompressMs,
                h.Average(e => e.CompressMsMedian));
        Console.WriteLine("RESULT " + JsonSerializer.Serialize(row, Bench.JsonLine));
        return 0;
    }

    /// <summary>Re-plots a run's JSON (<c>training-report --json FILE</c>), e.g. after a change to the plot alone.</summary>
    public static int Report(BenchArgs a)
    {
        string json = a.Get("json") ?? throw new ArgumentException("--json FILE");
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var rows = doc.RootElement.GetProperty("results").Deserialize<List<Row>>(Bench.JsonLine)!;
        Plot(rows, Path.ChangeExtension(json, ".png"));
        return 0;
    }

    private static void Plot(List<Row> rows, string path)
    {
        var plot = new ScottPlot.Plot();
        var labels =
            rows.Select(r =>
            (r.Compressor == "none" ? "none" : $"{r.Compressor}\n{r.Density}") + $"\n{r.TestAccuracy * 100:F2} %").ToArray();
        var stacks =
            new (string Name, Func<Row, double> Value)[] { ("compute", r => r.ComputeMs), ("compress", r => r.CompressMs),
            ("communicate", r => r.CommunicateMs) };
        var bars = new List<ScottPlot.Bar>();
        for (int i = 0; i < rows.Count; i++)
        {
            double bottom = 0;
            for (int s = 0; s < stacks.Length; s++)
            {
                double v = stacks[s].Value(rows[i]);
                bars.Add(new ScottPlot.Bar
                {
                    Position = i,
                    ValueBase = bottom,
                    Value = bottom + v,
                    FillColor = ScottPlot.Colors.Category10[s]
                });
                bottom += v;
            }
        }
        plot.Add.Bars(bars);
        for (int s =
            0; s < stacks.Length; s++) plot.Legend.ManualItems.Add(new ScottPlot.LegendItem
            {
                LabelText = stacks[s].Name,
                FillColor = ScottPlot.Colors.Category10[s]
            });
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.Axes.Bottom.TickGenerator =
            new ScottPlot.TickGenerators.NumericManual(labels.Select((l, i) => new ScottPlot.Tick(i, l)).ToArray());
        plot.Axes.Bottom.Label.Text = "compressor, density and test accuracy";
        plot.Axes.Left.Label.Text = "ms per step";
        plot.Title($"{rows[0].Workers} workers ({rows[0].Transport}): time per step");
        plot.SavePng(path, 1200, 550);
        Console.WriteLine($"wrote {path}");
    }
}
