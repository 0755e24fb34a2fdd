using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.SIDCo;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;

// A Transformer encoder trained from scratch, data-parallel with SIDCo-E, on generated documents of 24 token ids whose
// label is their topic (see Shared/TopicSequences.cs). Run under mpirun for one worker per rank.
//   dotnet TopicTransformer.dll [--compressor sidco-e] [--density 0.01] [--workers 2] [--epochs 8] [--rows 8000]
string Arg(string name, string fallback) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
var inv = CultureInfo.InvariantCulture;
var compressor = CompressorNames.Parse(Arg("--compressor", "sidco-e"));
double density = double.Parse(Arg("--density", "0.01"), inv);
int workers = int.Parse(Arg("--workers", "2"), inv), epochs = int.Parse(Arg("--epochs", "8"), inv);
int rows = int.Parse(Arg("--rows", "8000"), inv);

var ml = new MLContext(seed: 1);
var train = ml.Data.LoadFromEnumerable(TopicSequences.Generate(rows, seed: 1));
var test = ml.Data.LoadFromEnumerable(TopicSequences.Generate(2000, seed: 2));
var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
    .Append(ml.Extensions.SIDCoTrainer(new SIDCoTrainer.Options
    {
        Model = SIDCoModels.Transformer(TopicSequences.Steps, TopicSequences.Vocabulary, width: 64, heads: 4, layers: 2),
        Compressor = compressor,
        Density = density,
        Workers = workers,
        Epochs = epochs,
        BatchSize = 32,
        LearningRate = 0.05,
        // The sample shows compression, so it fixes the sparse exchange: Auto times whether compressing pays, and between
        // threads of one process (memory as the link) the dense exchange of the whole gradient often costs less.
        ExchangeMode = ExchangeMode.Sparse,
    }))
    .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
var watch = Stopwatch.StartNew();
var model = pipeline.Fit(train);
var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
if (SIDCoTrainer.IsPrimaryWorker)
{
    Console.WriteLine($"{TopicSequences.Topics} topics (chance 25 %): test accuracy {metrics.MicroAccuracy:P2}, log-loss " +
        $"{metrics.LogLoss:F3}, "
        + $"{watch.Elapsed.TotalSeconds:F0} s with {SIDCoTrainer.WorldSize} process(es)");
}
return 0;
