using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Samples;

// Scores Fashion-MNIST test images with a model that a SIDCo training pipeline saved with mlContext.Model.Save:
//   dotnet OnnxDeployment.dll model.zip [--limit N] [--scores FILE]
// --scores writes each row's Score (floats) and PredictedLabel key (uint), for comparison with the trained model.
if (args.Length < 1 || args[0].StartsWith("--", StringComparison.Ordinal))
{
    Console.Error.WriteLine("usage: OnnxDeployment model.zip [--limit N] [--scores FILE]");
    return 2;
}
int limit = int.MaxValue;
string? scoresPath = null;
for (int i = 1; i < args.Length - 1; i += 2)
{
    if (args[i] == "--limit") limit = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
    else if (args[i] == "--scores") scoresPath = args[i + 1];
}

var ml = new MLContext(seed: 1);
var model = ml.Model.Load(args[0], out var inputSchema);
Console.WriteLine($"loaded {args[0]}: input columns {string.Join(", ", inputSchema.Select(c => $"{c.Name} ({c.Type})"))}");
var test = ml.Data.LoadFromEnumerable(FashionMnist.Load(train: false, limit: limit));
var scored = model.Transform(test);
var metrics = ml.MulticlassClassification.Evaluate(scored);
Console.WriteLine($"test accuracy {metrics.MicroAccuracy:P2} on {scored.GetRowCount()} images, log-loss {metrics.LogLoss:F4}");

// One image through a prediction engine, as a web service would score a request.
var engine = ml.Model.CreatePredictionEngine<ImageExample, Prediction>(model);
var first = FashionMnist.Load(train: false, limit: 1)[0];
var prediction = engine.Predict(first);
Console.WriteLine($"first test image: {FashionMnist.ClassNames[(int)first.Label]}, predicted key {prediction.PredictedLabel} with " +
    $"probability {prediction.Score.Max():P1}");

if (scoresPath is not null)
{
    using var file = File.Create(scoresPath);
    foreach (var (score, key) in scored.GetColumn<float[]>("Score").Zip(scored.GetColumn<uint>("PredictedLabel")))
    {
        file.Write(MemoryMarshal.AsBytes(score.AsSpan()));
        file.Write(BitConverter.GetBytes(key));
    }
    Console.WriteLine($"scores: {scoresPath}");
}
return 0;

/// <summary>What the loaded model adds to an image: class probabilities and the predicted class's key.</summary>
internal sealed class Prediction
{
    public float[] Score { get; set; } = [];

    [KeyType(FashionMnist.Classes)]
    public uint PredictedLabel { get; set; }
}
