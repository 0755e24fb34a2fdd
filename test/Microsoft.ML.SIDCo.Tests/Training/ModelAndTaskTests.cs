using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Tests.Training;

[Trait(Category.Name, Category.Training)]
public class ModelAndTaskTests
{
    private sealed class Row
    {
        [VectorType(8)] public float[] Features { get; set; } = [];
        public float Label { get; set; }
    }

    [Fact]
    public void RegressionLearnsALinearTargetAndEvaluatesWithMlNet()
    {
        var ml = new MLContext(seed: 1);
        var rng = new Random(5);
        float[] w = [0.5f, -1f, 2f, 0f, 1.5f, -0.5f, 0.25f, 1f];
        Row Make()
        {
            var x = Enumerable.Range(0, 8).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            return new Row { Features = x, Label = x.Zip(w, (a, b) => a * b).Sum() + 0.3f };
        }
        var train = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 4000).Select(_ => Make()).ToArray());
        var test = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 500).Select(_ => Make()).ToArray());
        var trainer = ml.Extensions.SIDCoTrainer(new SIDCo.SIDCoTrainer.Options
        {
            Task = TrainingTask.Regression,
            Model = SIDCoModels.Mlp(32),
            Workers = 2,
            Epochs = 10,
            BatchSize = 32,
            LearningRate = 0.02,
            Compressor = CompressorKind.SidcoPareto,
            Density = 0.05,
        });
        var model = trainer.Fit(train);
        var metrics = ml.Regression.Evaluate(model.Transform(test));
        Assert.True(metrics.RSquared > 0.95, $"R^2 {metrics.RSquared}");
    }

    [Fact]
    public void LstmClassifierLearnsASequenceTaskWithSidcoGP()
    {
        // Class = sign of the sequence's sum: the LSTM has to integrate over all steps.
        var rng = new Random(2);
        int steps = 12, n = 3000;
        var x = new float[n * steps];
        var y = new int[n];
        for (int i = 0; i < n; i++)
        {
            double sum = 0;
            for (int t = 0; t < steps; t++) { x[i * steps + t] = (float)(rng.NextDouble() * 2 - 1); sum += x[i * steps + t]; }
            y[i] = sum > 0 ? 1 : 0;
        }
        var data = new TrainingData(x, steps, y, null);
        using var result = DataParallelTrainer.RunInProcess(data, data, new TrainingSettings
        {
            Model = SIDCoModels.Lstm(steps, hidden: 16),
            Task = TrainingTask.MulticlassClassification,
            Outputs = 2,
            Epochs = 15,
            BatchSize = 32,
            LearningRate = 0.1,
            Momentum = 0.9,
            Schedule = LearningRateSchedule.Constant,
            CheckpointInterval = 500,
            Seed = 1,
            HookFactory = () =>
                new CompressionHook(new CompressionHookOptions
                {
                    Compressor = CompressorKind.SidcoGammaPareto,
                    Compression = new CompressorOptions { Density = 0.1 }
                }),
        }, workers: 2);
        Assert.True(result.History.Epochs[^1].ValidationAccuracy >= 0.85, $"accuracy {result.History.Epochs[^1].ValidationAccuracy}");
    }

    [Fact]
    public void BuiltInDescriptorsRebuildTheSameArchitecture()
    {
        foreach (var def in new[] { SIDCoModels.Mlp(5, 7), SIDCoModels.ConvNet(conv1: 4, conv2: 6, hidden: 9),
            SIDCoModels.Lstm(4, hidden: 5) })
        {
            using var a = def.Build(def.Name == "convnet" ? 784 : 8, 3);
            using var b = ModelDefinition.FromDescriptor(def.Descriptor).Build(def.Name == "convnet" ? 784 : 8, 3);
            Assert.Equal(new ParameterSet(a).LayoutFingerprint(), new ParameterSet(b).LayoutFingerprint());
        }
        Assert.Throws<FormatException>(() => ModelDefinition.FromDescriptor("resnet:depth=50"));
        Assert.Throws<ArgumentException>(() => SIDCoModels.ConvNet().Build(100, 10));
    }

    [Fact]
    public void OptimizersMatchTheirUpdateRules()
    {
        using var m = SIDCoModels.Mlp().Build(2, 1);
        var ps = new ParameterSet(m);
        var start = new float[ps.Length];
        ps.CopyTo(start);
        var g = Enumerable.Range(0, ps.Length).Select(i => 0.1f * (i + 1)).ToArray();
        var sgd = new SgdOptimizer(ps.Length, momentum: 0.9f, nesterov: false, weightDecay: 0);
        sgd.Step(ps, g, 0.5f);
        sgd.Step(ps, g, 0.5f);
        var now = new float[ps.Length];
        ps.CopyTo(now);
        // v1 = g, v2 = 0.9 g + g: p = p0 - 0.5 (g + 1.9 g)
        for (int i = 0; i < now.Length; i++) Assert.Equal(start[i] - 0.5f * g[i] - 0.5f * (0.9f * g[i] + g[i]), now[i], 5);
    }
}
