using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Tests.Support;
using Xunit.Abstractions;

namespace Microsoft.ML.SIDCo.Tests.Onnx;

/// <summary>The ONNX export of every built-in architecture, its ML.NET-native form, and the custom-model extension point.</summary>
[Collection(FashionMnistCollection.Name)]
[Trait(Category.Name, Category.Training)]
public sealed class OnnxExportTests(FashionMnistFixture data, ITestOutputHelper log)
{
    public static TheoryData<string> Architectures => new() { "mlp", "convnet", "lstm" };

    private static ModelDefinition Architecture(string name) => name switch
    {
        "mlp" => SIDCoModels.Mlp(64, 32),
        "convnet" => SIDCoModels.ConvNet(conv1: 8, conv2: 16, hidden: 32),
        _ => SIDCoModels.Lstm(28, 32, 2),
    };

    // A short SIDCo run of the architecture on the fixture's 3,000 images: MapValueToKey, then the trainer.
    private TransformerChain<SIDCoTransformer> Train(ModelDefinition model) => data.Ml.Transforms.Conversion.MapValueToKey("Label")
        .Append(data.Ml.Extensions.SIDCoTrainer(new SIDCoTrainer.Options
        {
            Model = model,
            Workers = 2,
            Epochs = 3,
            BatchSize = 32,
            LearningRate = 0.05,
            Density = 0.01
        }))
        .Fit(data.Train);

    [Theory]
    [MemberData(nameof(Architectures))]
    public void TheOnnxFormAndASavedModelScoreEveryTestImageAsTheTorchSharpModelDoes(string architecture)
    {
        var model = Train(Architecture(architecture));
        var expected = model.Transform(data.Test);
        var zip = new MemoryStream();
        data.Ml.Model.Save(model, data.Train.Schema, zip);
        zip.Position = 0;
        var loaded = data.Ml.Model.Load(zip, out _);
        foreach (var (name, actual) in new[] { ("ToOnnxPipeline", model.ToOnnxPipeline().Transform(data.Test)),
            ("Model.Save/Load", loaded.Transform(data.Test)) })
        {
            var a = expected.GetColumn<float[]>("Score").ToArray();
            var b = actual.GetColumn<float[]>("Score").ToArray();
            double worst = a.Zip(b).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second)));
            int labels =
                expected.GetColumn<uint>("PredictedLabel").Zip(actual.GetColumn<uint>("PredictedLabel")).Count(p => p.First != p.Second);
            log.WriteLine($"{architecture} {name}: {a.Length} test images, largest |Score difference| {worst:G3}, PredictedLabel differs " +
                $"on {labels}; saved zip {zip.Length} bytes");
            Assert.Equal(a.Length, b.Length);
            Assert.True(worst <= TestHost.Conformance.OnnxTolerance, $"{name}: {worst}");
            Assert.Equal(0, labels);
            VBuffer<uint> ka = default, kb = default;
            expected.Schema["PredictedLabel"].GetKeyValues(ref ka);
            actual.Schema["PredictedLabel"].GetKeyValues(ref kb);
            Assert.Equal(ka.DenseValues(), kb.DenseValues());
            Assert.Equal(expected.Schema["Score"].Type, actual.Schema["Score"].Type);
            Assert.Equal(expected.Schema["PredictedLabel"].Type, actual.Schema["PredictedLabel"].Type);
        }
    }

    [Fact]
    public void TheStandaloneExportScoresBatchesInOnnxRuntimeAndMarksMissingRows()
    {
        var model = Train(SIDCoModels.Mlp(32));
        var sidco = model.LastTransformer;
        var stream = new MemoryStream();
        sidco.ExportOnnx(stream);
        var images = Samples.FashionMnist.Load(train: false, limit: 50);
        images[7].Features[100] = float.NaN; // a row with a missing feature
        var batch = new DenseTensor<float>(images.SelectMany(i => i.Features).ToArray(), [images.Length, Samples.FashionMnist.Pixels]);
        using var session = new InferenceSession(stream.ToArray());
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("features", batch)]);
        var score = results.Single(r => r.Name == "Score").AsTensor<float>();
        var predicted = results.Single(r => r.Name == "PredictedLabel").AsTensor<long>().ToArray();
        Assert.Equal([images.Length, 10], score.Dimensions.ToArray());
        for (int i = 0; i < images.Length; i++)
        {
            var expected = sidco.Predict(images[i].Features);
            var row = Enumerable.Range(0, 10).Select(c => score[i, c]).ToArray();
            if (i == 7)
            {
                Assert.All(row, v => Assert.True(float.IsNaN(v)));
                Assert.Equal(-1, predicted[i]);
                continue;
            }
            Assert.All(expected.Zip(row), p =>
                Assert.True(Math.Abs(p.First - p.Second) <= TestHost.Conformance.OnnxTolerance, $"row {i}: {p.First} vs {p.Second}"));
            Assert.Equal(Array.IndexOf(expected, expected.Max()), predicted[i]);
        }
    }

    [Fact]
    public void ACustomArchitectureSavesThroughItsOwnExporterAndWithoutOneSaysWhatToAdd()
    {
        // A linear model written by hand, with an exporter written on the public OnnxGraph: x W^T + b as one Gemm.
        var withExporter =
            ModelDefinition.Custom("linear", (inputs, outputs) => TorchSharp.torch.nn.Linear(inputs, outputs), (module, graph, input) =>
        {
            var p = module.named_parameters().ToDictionary(x => x.name, x => (TorchSharp.torch.Tensor)x.parameter);
            return graph.Node("Gemm", [input, graph.Weights("weight", p["weight"]), graph.Weights("bias", p["bias"])], ("transB", 1L));
        });
        var model = Train(withExporter);
        var zip = new MemoryStream();
        data.Ml.Model.Save(model, data.Train.Schema, zip);
        zip.Position = 0;
        var loaded = data.Ml.Model.Load(zip, out _);
        Assert.Equal(model.Transform(data.Test).GetColumn<uint>("PredictedLabel"),
            loaded.Transform(data.Test).GetColumn<uint>("PredictedLabel"));

        var without = Train(ModelDefinition.Custom("linear", (inputs, outputs) => TorchSharp.torch.nn.Linear(inputs, outputs)));
        var e = Assert.Throws<NotSupportedException>(() => data.Ml.Model.Save(without, data.Train.Schema, new MemoryStream()));
        Assert.Contains("'linear' has no ONNX exporter", e.Message);
        Assert.Contains("ModelDefinition.Custom(name, factory, onnx)", e.Message);
        Assert.Throws<NotSupportedException>(() => without.LastTransformer.ExportOnnx(new MemoryStream()));
    }
}
