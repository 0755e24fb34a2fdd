using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.SIDCo;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;

// The RNN case: each 28x28 image is read as a sequence of 28 rows of 28 pixels by an LSTM,
// trained data-parallel with SIDCo-GP compression. Data ships with Debian (dataset-fashion-mnist).
//   dotnet SequenceLstm.dll [--compressor sidco-gp] [--density 0.01] [--workers 4] [--epochs 3] [--train-limit N] [--report FILE]
string Arg(string name, string fallback) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
var inv = CultureInfo.InvariantCulture;
var compressor = CompressorNames.Parse(Arg("--compressor", "sidco-gp"));
double density = double.Parse(Arg("--density", "0.01"), inv);
int workers = int.Parse(Arg("--workers", "4"), inv), epochs = int.Parse(Arg("--epochs", "3"), inv);
int trainLimit = int.Parse(Arg("--train-limit", "20000"), inv);

var ml = new MLContext(seed: 1);
var train = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: true, limit: trainLimit));
var test = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: false, limit: 5000));
var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
var trainer = ml.Extensions.SIDCoTrainer(new SIDCoTrainer.Options
{
    Model = SIDCoModels.Lstm(steps: FashionMnist.Side, hidden: 96),
    Compressor = compressor,
    Density = density,
    Workers = workers,
    Epochs = epochs,
    BatchSize = 32,
    LearningRate = 0.1,
    Momentum = 0.9,
    GradientClipNorm = 5,
    Seed = 1,
    // The sample shows compression, so it fixes the sparse exchange: Auto times whether compressing pays, and between
    // threads of one process (memory as the link) the dense exchange of the whole gradient often costs less.
    ExchangeMode = ExchangeMode.Sparse,
});
trainer.ProgressReported += (_, p) =>
    {
        if (p.EpochDone is { } m) Console.WriteLine($"epoch {m.Epoch}: loss {m.Loss:F3}, train accuracy {m.Accuracy:P2}, density " +
    $"{m.AchievedDensity:G3}, {m.BytesPerStep / 1024:F1} KiB/step vs {m.DenseBytesPerStep / 1024:F0} KiB dense, compress " +
    $"{m.CompressMs:F2} ms, communicate {m.CommunicateMs:F2} ms");
    };
Console.WriteLine($"LSTM over image rows: {compressor.ToName()} at density {density}, {workers} workers, {epochs} epochs, {trainLimit} " +
    $"training images");
var watch = Stopwatch.StartNew();
var model = trainer.Fit(keys.Transform(train));
var metrics = ml.MulticlassClassification.Evaluate(model.Transform(keys.Transform(test)));
Console.WriteLine($"test accuracy {metrics.MicroAccuracy:P2}, log-loss {metrics.LogLoss:F3}, wall time {watch.Elapsed.TotalSeconds:F0} s");
if (Arg("--report", "") is { Length: > 0 } report)
{
    var sampleReport = new SampleReport(compressor.ToName(), density, model.Info.Workers, model.Info.Transport,
        metrics.MicroAccuracy, metrics.LogLoss, watch.Elapsed.TotalSeconds, model.History.Epochs);
    Console.WriteLine($"plot: {sampleReport.Write(report)}");
}
return 0;
