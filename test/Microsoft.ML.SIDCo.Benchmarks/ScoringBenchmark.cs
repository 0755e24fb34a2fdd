using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>
/// Scoring throughput of a trained SIDCo model on TorchSharp (<see cref="SIDCoTransformer"/>) against its ML.NET-native
/// ONNX form (<see cref="SIDCoTransformerExtensions.ToOnnxPipeline"/>, what <c>mlContext.Model.Save</c> writes), side by
/// side in one process on the same Fashion-MNIST test rows: batch (Transform, then a cursor over Score and
/// PredictedLabel) and one row at a time (a prediction engine). The weights do not matter for speed: each model is
/// trained for a few steps only.
///   scoring [--models mlp,convnet,lstm] [--rows 2000] [--engine-rows 500] [--runs 5] [--json FILE]
/// </summary>
internal static class ScoringBenchmark
{
    private sealed record Row(string Model, int Parameters, string Runtime, string Mode, int Rows, double Ms, double RowsPerSecond,
        int TorchThreads);

    public static int Run(BenchArgs a)
    {
        var ml = new MLContext(seed: 1);
        int rows = a.Int("rows", 2000), engineRows = a.Int("engine-rows", 500), runs = a.Int("runs", 5);
        var train = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: true, limit: 2000));
        var images = FashionMnist.Load(train: false, limit: rows);
        var test = ml.Data.Cache(ml.Data.LoadFromEnumerable(images));
        var results = new List<Row>();
        foreach (var name in a.List("models", "mlp,convnet,lstm"))
        {
            var definition = name switch
            {
                "mlp" => SIDCoModels.Mlp(128), // the trainer's default architecture
                "lstm" => SIDCoModels.Lstm(FashionMnist.Side, 64),
                _ => Bench.Model(name),
            };
            var options = new SIDCoTrainer.Options { Model = definition, Epochs = 1, MaxStepsPerEpoch = 5 };
            var torch = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Extensions.SIDCoTrainer(options)).Fit(train);
            var onnx = torch.ToOnnxPipeline();
            int parameters = new Training.ParameterSet(torch.LastTransformer.Module).Length;
            int threads = TorchSharp.torch.get_num_threads();
            foreach (var (runtime, model) in new[] { ("TorchSharp", (ITransformer)torch), ("ONNX Runtime", onnx) })
            {
                double batchMs = Bench.MedianMs(() => ReadAll(model.Transform(test)), runs);
                results.Add(new Row(name, parameters, runtime, "batch", rows, batchMs, rows / batchMs * 1000, threads));
                var engine = ml.Model.CreatePredictionEngine<ImageExample, Prediction>(model);
                double engineMs = Bench.MedianMs(() => { for (int i = 0; i < engineRows; i++) engine.Predict(images[i]); }, runs);
                results.Add(new Row(name, parameters, runtime, "PredictionEngine", engineRows, engineMs, engineRows / engineMs * 1000,
                    threads));
            }
        }
        var ratios = results.GroupBy(r => (r.Model, r.Mode)).Select(g => new
        {
            g.Key.Model,
            g.Key.Mode,
            OnnxOverTorchSharp =
                g.Single(r => r.Runtime == "ONNX Runtime").RowsPerSecond / g.Single(r => r.Runtime == "TorchSharp").RowsPerSecond,
        }).ToList();
        string table = Bench.Table(["model", "parameters", "mode", "TorchSharp rows/s", "ONNX Runtime rows/s", "ONNX / TorchSharp"],
            ratios.Select(r => new[]
            {
                r.Model, Bench.F(results.First(x => x.Model == r.Model).Parameters, "N0"), r.Mode,
                Bench.F(results.Single(x => x.Model == r.Model && x.Mode == r.Mode && x.Runtime == "TorchSharp").RowsPerSecond, "N0"),
                Bench.F(results.Single(x => x.Model == r.Model && x.Mode == r.Mode && x.Runtime == "ONNX Runtime").RowsPerSecond, "N0"),
                $"{r.OnnxOverTorchSharp:F2}x",
            }));
        Bench.WriteResults(a.Get("json"), results, table, ratios);
        return 0;
    }

    // A user reads the columns a scorer adds: every row's Score and PredictedLabel.
    private static void ReadAll(IDataView scored)
    {
        using var cursor = scored.GetRowCursor([scored.Schema["Score"], scored.Schema["PredictedLabel"]]);
        var score = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
        var predicted = cursor.GetGetter<uint>(scored.Schema["PredictedLabel"]);
        VBuffer<float> s = default;
        uint p = 0;
        while (cursor.MoveNext())
        {
            score(ref s);
            predicted(ref p);
        }
        Debug.Assert(p > 0 || s.Length > 0);
    }

    private sealed class Prediction
    {
        public float[] Score { get; set; } = [];
        public uint PredictedLabel { get; set; }
    }
}
