using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.SIDCo;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;
using Spectre.Console;

// The main job: a ConvNet on the full Fashion-MNIST, trained data-parallel with SIDCo compression.
//   dotnet FashionMnist.dll [--compressor sidco-e] [--density 0.001] [--workers 4] [--epochs N] [--report FILE]
// Under `mpirun -np N` each rank is one worker and rank 0 reports.
var opts = Cli.Parse(args);
if (opts is null) return 2;
bool mpi = MpiCommunicator.IsLaunchedByMpirun;
int rank = int.Parse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK") ?? "0", CultureInfo.InvariantCulture);
bool lead = rank == 0;
var console = lead ? AnsiConsole.Console : AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(TextWriter.Null) });
if (Console.IsOutputRedirected) console.Profile.Width = 150; // logs and CI: no wrapping at 80 columns

var ml = new MLContext(seed: 1);
var train = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: true, limit: opts.TrainLimit));
var test = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: false, limit: opts.TestLimit));
int workers = mpi ? MpiCommunicator.LaunchedWorldSize : opts.Workers;
console.MarkupLine($"[bold]Fashion-MNIST[/]: ConvNet, [green]{opts.Compressor.ToName()}[/] at density {opts.Density}, {workers} " +
    $"{(mpi ? "MPI ranks" : "in-process workers")}, {opts.Epochs} epochs");

var trainer = ml.Extensions.SIDCoTrainer(new SIDCoTrainer.Options
{
    Model = SIDCoModels.ConvNet(conv1: opts.Conv1, conv2: opts.Conv2, hidden: opts.Hidden),
    Compressor = opts.Compressor,
    Density = opts.Density,
    Workers = opts.Workers,
    Epochs = opts.Epochs,
    BatchSize = opts.BatchSize,
    LearningRate = opts.LearningRate,
    Momentum = 0.9,
    Schedule = Microsoft.ML.SIDCo.Training.LearningRateSchedule.Cosine,
    LearningRateWarmupSteps = 50,
    Seed = opts.Seed,
    MomentumCorrection = opts.MomentumCorrection,
    DensityWarmupSteps = opts.DensityWarmupSteps,
    // The sample shows compression, so it fixes the sparse exchange: Auto times whether compressing pays, and between
    // threads of one process (memory as the link) the dense exchange of the whole gradient often costs less.
    ExchangeMode = ExchangeMode.Sparse,
});
var watch = Stopwatch.StartNew();
var pipeline = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
SIDCoTransformer model = null!;
console.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
    new RemainingTimeColumn()).Start(ctx =>
{
    var tasks = Enumerable.Range(1, opts.Epochs).Select(e => ctx.AddTask($"epoch {e}", autoStart: false)).ToArray();
    trainer.ProgressReported += (_, p) =>
    {
        var t = tasks[p.Epoch];
        if (!t.IsStarted) t.StartTask();
        t.MaxValue = p.StepsPerEpoch;
        t.Value = p.StepInEpoch;
        t.Description = p.EpochDone is { } m
            ? $"epoch {m.Epoch}: loss {m.Loss:F3}, acc {m.Accuracy:P1}"
            : $"epoch {p.Epoch + 1}: loss {p.Loss:F3}";
        if (p.EpochDone is not null) t.StopTask();
    };
    model = trainer.Fit(pipeline.Transform(train));
});
double wall = watch.Elapsed.TotalSeconds;
if (!lead) return 0;

var table = new Table().Title("per epoch (means per step and worker)");
foreach (var c in new[] { "epoch", "loss", "train acc", "density", "sent / dense", "compute ms", "compress ms", "communicate ms",
    "s" }) table.AddColumn(new TableColumn(c).RightAligned());
foreach (var e in model.History.Epochs)
    table.AddRow($"{e.Epoch}", $"{e.Loss:F4}", $"{e.Accuracy:P2}", $"{e.AchievedDensity:G3}",
        $"{e.BytesPerStep / 1024:F1} / {e.DenseBytesPerStep / 1024:F0} KiB",
        $"{e.ComputeMs:F1}", $"{e.CompressMs:F3}", $"{e.CommunicateMs:F3}", $"{e.Seconds:F0}");
console.Write(table);

var metrics = ml.MulticlassClassification.Evaluate(model.Transform(pipeline.Transform(test)));
var last = model.History.Epochs[^1];
double saved = 1 - model.History.Epochs.Average(e => e.BytesPerStep) / last.DenseBytesPerStep;
console.MarkupLine($"[bold]test accuracy {metrics.MicroAccuracy:P2}[/], log-loss {metrics.LogLoss:F4}, wall time {wall:F0} s");
console.MarkupLine($"achieved density {model.History.Epochs.Average(e => e.AchievedDensity):G3} (target {opts.Density}); bytes sent per " +
    $"step {model.History.Epochs.Average(e => e.BytesPerStep) / 1024:F1} KiB vs {last.DenseBytesPerStep / 1024:F0} KiB dense: " +
    $"[green]{saved:P1} saved[/]");
Console.Out.WriteLine(metrics.ConfusionMatrix.GetFormattedConfusionTable());

if (opts.Report is { } report)
{
    var png = new SampleReport(opts.Compressor.ToName(), opts.Density, workers, mpi ? "mpi" : "inprocess", metrics.MicroAccuracy,
        metrics.LogLoss, wall, model.History.Epochs).Write(report);
    console.MarkupLine($"report: {report}, plot: {png}");
}
if (opts.ModelPath is { } modelPath) { model.Save(modelPath); console.MarkupLine($"model: {modelPath}"); }
return 0;

internal sealed record Cli(CompressorKind Compressor, double Density, int Workers, int Epochs, int BatchSize, double LearningRate,
    int Seed, int TrainLimit, int TestLimit, string? Report, string? ModelPath, int Conv1 = 32, int Conv2 = 64, int Hidden = 256,
    bool MomentumCorrection = false, int DensityWarmupSteps = 0)
{
    public static Cli? Parse(string[] args)
    {
        var c = new Cli(CompressorKind.SidcoExponential, 0.001, 4, 12, 32, 0.05, 1, int.MaxValue, int.MaxValue, null, null);
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                var inv = CultureInfo.InvariantCulture;
                c = args[i] switch
                {
                    "--compressor" => c with { Compressor = CompressorNames.Parse(Next()) },
                    "--density" => c with { Density = double.Parse(Next(), inv) },
                    "--workers" => c with { Workers = int.Parse(Next(), inv) },
                    "--epochs" => c with { Epochs = int.Parse(Next(), inv) },
                    "--batch-size" => c with { BatchSize = int.Parse(Next(), inv) },
                    "--lr" => c with { LearningRate = double.Parse(Next(), inv) },
                    "--conv1" => c with { Conv1 = int.Parse(Next(), inv) },
                    "--conv2" => c with { Conv2 = int.Parse(Next(), inv) },
                    "--hidden" => c with { Hidden = int.Parse(Next(), inv) },
                    "--momentum-correction" => c with { MomentumCorrection = true },
                    "--density-warmup" => c with { DensityWarmupSteps = int.Parse(Next(), inv) },
                    "--seed" => c with { Seed = int.Parse(Next(), inv) },
                    "--train-limit" => c with { TrainLimit = int.Parse(Next(), inv) },
                    "--test-limit" => c with { TestLimit = int.Parse(Next(), inv) },
                    "--report" => c with { Report = Next() },
                    "--save-model" => c with { ModelPath = Next() },
                    "--help" or "-h" => throw new ArgumentException("help"),
                    _ => throw new ArgumentException($"unknown option '{args[i]}'"),
                };
            }
            return c;
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            if (e.Message != "help") Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine("usage: FashionMnist [--compressor none|topk|dgc|redsync|gaussiank|randomk|sidco-e|sidco-gp|sidco-p] " +
                "[--density D] [--workers N] [--epochs N] [--batch-size B] [--lr LR] [--momentum-correction] [--density-warmup STEPS] " +
                "[--seed S] [--conv1 C] [--conv2 C] [--hidden H] [--train-limit N] [--test-limit N] [--report FILE.json] [--save-model " +
                "FILE.zip]");
            return null;
        }
    }
}
