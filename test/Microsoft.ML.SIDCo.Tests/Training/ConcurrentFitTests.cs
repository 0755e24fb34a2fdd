using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Tests.Training;

/// <summary>Fits running at the same time in one process give the models they give alone, or are refused.</summary>
[Collection(FashionMnistCollection.Name)]
[Trait(Category.Name, Category.Training)]
public class ConcurrentFitTests(FashionMnistFixture data)
{
    // A model that takes a while to build: the seeding went through the process-wide generator, and a second Fit that
    // reseeded it mid-build gave one of the two models other initial weights.
    private static readonly ModelDefinition SlowToBuild = ModelDefinition.Custom("slow-to-build", (inputs, outputs) =>
    {
        var first = TorchSharp.torch.nn.Linear(inputs, 32);
        Thread.Sleep(200);
        var second = TorchSharp.torch.nn.Linear(32, outputs);
        return TorchSharp.torch.nn.Sequential(first, TorchSharp.torch.nn.ReLU(), second);
    });

    private static SIDCoTrainer.Options Options() => new()
    {
        Model = SlowToBuild,
        Epochs = 1,
        MaxStepsPerEpoch = 2,
        BatchSize = 32,
        Density = 0.01,
        NumberOfThreads = 1,
    };

    [Fact]
    public void TwoConcurrentFitsGiveTheModelsEachGivesAlone()
    {
        var keyed = data.Ml.Transforms.Conversion.MapValueToKey("Label").Fit(data.Train).Transform(data.Train);
        using var alone = data.Ml.Extensions.SIDCoTrainer(Options()).Fit(keyed);
        const int Rounds = 3;
        for (int round = 0; round < Rounds; round++)
        {
            // Threads of their own (the thread pool of a small machine may run two tasks one after the other).
            var models = new SIDCoTransformer?[2];
            var errors = new Exception?[2];
            var threads = Enumerable.Range(0, 2).Select(i => new Thread(() =>
            {
                try { models[i] = data.Ml.Extensions.SIDCoTrainer(Options()).Fit(keyed); }
                catch (Exception e) { errors[i] = e; }
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            Assert.All(errors, e => Assert.Null(e));
            foreach (var model in models)
            {
                Assert.Equal(alone.WeightsFingerprint, model!.WeightsFingerprint);
                model.Dispose();
            }
        }
    }

    [Fact]
    public void AConcurrentFitWithAnotherThreadCountIsRefused()
    {
        using var first = TorchProcess.Enter(2);
        var e = Assert.Throws<InvalidOperationException>(() => TorchProcess.Enter(3));
        Assert.Contains("Options.NumberOfThreads", e.Message);
        using (TorchProcess.Enter(2)) { } // the same count joins
    }
}
