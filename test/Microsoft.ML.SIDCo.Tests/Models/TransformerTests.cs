using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;
using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Tests.Support;
using Xunit.Abstractions;

namespace Microsoft.ML.SIDCo.Tests.Models;

/// <summary>
/// The built-in Transformer encoder: it learns the generated topic task data-parallel with SIDCo-E, the same under mpirun,
/// and its ONNX form scores as the TorchSharp model does.
/// </summary>
public class TransformerTests(ITestOutputHelper log)
{
    // Four topics: chance is 25 %.
    private const double WellAboveChance = 0.8;

    [Fact]
    [Trait(Category.Name, Category.Training)]
    public void TwoWorkersLearnTheTopicsWithSidcoEAndTwoMpiRanksReachTheSameModel()
    {
        var (accuracy, fingerprint) = Scenarios.TrainTopicTransformer(new MLContext(seed: 1), workers: 2);
        log.WriteLine($"2 in-process workers: test accuracy {accuracy:P2}");
        Assert.True(accuracy >= WellAboveChance, $"accuracy {accuracy:P2}");

        var run = MpiRunner.Run(2, MpiRunner.TestHost, "transformer", TimeSpan.FromMinutes(5));
        Assert.True(run.ExitCode == 0, run.Output);
        var checks = run.Checks.Where(c => c.Name == "transformer").ToList();
        Assert.Equal(2, checks.Count);
        var parts = checks[0].Detail.Split(' ');
        log.WriteLine($"mpirun -np 2: test accuracy {double.Parse(parts[0], CultureInfo.InvariantCulture):P2}");
        // A sparse exchange adds in rank order either way: the same data, seed and options give the same weights.
        Assert.All(checks, c => Assert.Equal(fingerprint.ToString(CultureInfo.InvariantCulture), c.Detail.Split(' ')[1]));
    }

    [Fact]
    [Trait(Category.Name, Category.Training)]
    public void TheOnnxFormScoresEveryDocumentAsTheTorchSharpModelDoes()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(TopicSequences.Generate(1000, seed: 1));
        var test = ml.Data.LoadFromEnumerable(TopicSequences.Generate(500, seed: 2));
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Extensions.SIDCoTrainer(new SIDCoTrainer.Options
            {
                Model = SIDCoModels.Transformer(TopicSequences.Steps, TopicSequences.Vocabulary, width: 16, heads: 2, layers: 2),
                Epochs = 2,
                Density = 0.01,
            }))
            .Fit(train);
        var zip = new MemoryStream();
        ml.Model.Save(model, train.Schema, zip);
        zip.Position = 0;
        var loaded = ml.Model.Load(zip, out _);
        var expected = model.Transform(test).GetColumn<float[]>("Score").ToArray();
        var actual = loaded.Transform(test).GetColumn<float[]>("Score").ToArray();
        double worst = expected.Zip(actual).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second)));
        log.WriteLine($"500 documents: largest |Score difference| {worst:G3}");
        Assert.True(worst <= TestHost.Conformance.OnnxTolerance, $"{worst}");
        Assert.Equal(model.Transform(test).GetColumn<uint>("PredictedLabel"), loaded.Transform(test).GetColumn<uint>("PredictedLabel"));
    }

    [Fact]
    [Trait(Category.Name, Category.Unit)]
    public void TheDescriptorRebuildsTheArchitectureAndBadSizesAreRefused()
    {
        var definition = SIDCoModels.Transformer(12, 30, width: 8, heads: 2, layers: 3, feedForward: 20);
        Assert.Equal("transformer:steps=12,vocabulary=30,width=8,heads=2,layers=3,feedforward=20", definition.Descriptor);
        using var a = definition.Build(12, 4);
        using var b = ModelDefinition.FromDescriptor(definition.Descriptor).Build(12, 4);
        Assert.Equal(new SIDCo.Training.ParameterSet(a).LayoutFingerprint(), new SIDCo.Training.ParameterSet(b).LayoutFingerprint());
        Assert.Throws<ArgumentOutOfRangeException>(() => SIDCoModels.Transformer(12, 30, width: 10, heads: 4));
        var e = Assert.Throws<ArgumentException>(() => definition.Build(13, 4));
        Assert.Contains("12 token ids", e.Message);
        // Ids outside the vocabulary are clamped, not an index error inside libtorch.
        using var scores = a.forward(TorchSharp.torch.tensor(new float[] { -5, 100, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }).reshape(1, 12));
        Assert.Equal([1L, 4L], scores.shape);
    }
}
