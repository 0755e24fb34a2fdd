using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;
using TorchSharp;

namespace Microsoft.ML.SIDCo.Tests.Training;

[Trait(Category.Name, Category.Unit)]
public class BackwardOverlapTests
{
    public static TheoryData<string> Models() => new() { "mlp", "convnet", "transformer" };

    private static ModelDefinition Model(string name) => name switch
    {
        "mlp" => SIDCoModels.Mlp(64, 32),
        "convnet" => SIDCoModels.ConvNet(),
        _ => SIDCoModels.Transformer(steps: 12, vocabulary: 30, width: 16, heads: 2, layers: 2),
    };

    private static torch.Tensor Input(string name, int worker) => name switch
    {
        "transformer" => torch.randint(0, 30, [4, 12], generator: new torch.Generator((ulong)(7 + worker))).to(torch.float32),
        _ => torch.randn([4, 784], generator: new torch.Generator((ulong)(7 + worker))),
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void BucketsLeaveDuringBackwardAndAverageBitwiseLikeTheWholeVector(string name)
    {
        const int workers = 2;
        var whole = new float[workers][];
        var overlapped = new float[workers][];
        var launchedEarly = new int[workers];
        var bucketCount = new int[workers];
        var modules = new torch.nn.Module<torch.Tensor, torch.Tensor>[workers];
        lock (typeof(BackwardOverlapTests))
        {
            for (int w = 0; w < workers; w++) { torch.manual_seed(3); modules[w] = Model(name).Build(name == "transformer" ? 12 : 784, 4); }
        }
        using var group = new InProcessGroup(workers);
        group.Run(comm =>
        {
            var model = modules[comm.Rank];
            var parameters = new ParameterSet(model);
            using var hook = new DenseAllReduceHook();
            hook.Initialize(new GradientHookContext(comm, parameters.Length, parameters.Slices));

            void Backward()
            {
                using var scope = torch.NewDisposeScope();
                model.zero_grad();
                model.forward(Input(name, comm.Rank)).pow(2).sum().backward();
            }

            Backward();
            var plain = new float[parameters.Length];
            parameters.GatherGradients(plain);
            hook.Reduce(plain, 0);
            whole[comm.Rank] = plain;

            var bucket = new float[parameters.Length];
            // Small buckets (4 KiB) so that every model has several.
            using var overlap = new BackwardOverlap(model, parameters, hook, bucket, bucketBytes: 4 << 10);
            overlap.BeginStep(1);
            Backward();
            var stats = overlap.EndBackward();
            Assert.Equal(parameters.Length, stats.Selected);
            overlapped[comm.Rank] = bucket;
            launchedEarly[comm.Rank] = overlap.LaunchedDuringBackward;
            bucketCount[comm.Rank] = overlap.Buckets.Count;
            Assert.Equal(parameters.Length, overlap.Buckets.Sum(b => b.Count));
        });
        Assert.Equal(whole[0], whole[1]);
        for (int w = 0; w < workers; w++) Assert.Equal(whole[w], overlapped[w]);
        Assert.True(bucketCount[0] >= 2, $"{bucketCount[0]} buckets");
        // Everything but the first layer's bucket (its input needs no gradient) can leave while backward runs.
        Assert.True(launchedEarly[0] >= 1, $"{launchedEarly[0]} of {bucketCount[0]} buckets left during backward");
    }
}

/// <summary>The trainer's overlapped dense exchange: the same model as without overlap, in-process and under mpirun.</summary>
public class OverlappedTrainingTests(Xunit.Abstractions.ITestOutputHelper log)
{
    [Fact]
    [Trait(Category.Name, Category.Mpi)]
    public void OverlapLeavesTheModelBitwiseTheSameInProcessAndUnderMpirun()
    {
        var ml = new MLContext(seed: 1);
        var (train, _) = TestHost.Scenarios.LoadData(ml, 2000, 100);
        long on = TestHost.Scenarios.TrainDense(ml, train, workers: 2, overlap: true);
        long off = TestHost.Scenarios.TrainDense(ml, train, workers: 2, overlap: false);
        log.WriteLine($"in-process: {on} with overlap, {off} without");
        Assert.Equal(off, on);

        foreach (int ranks in new[] { 2, 4 })
        {
            var run = MpiRunner.Run(ranks, MpiRunner.TestHost, "overlap", TimeSpan.FromMinutes(5));
            Assert.True(run.ExitCode == 0, run.Output);
            var checks = run.Checks.Where(c => c.Name == "overlap").ToList();
            Assert.Equal(ranks, checks.Count);
            log.WriteLine($"mpirun -np {ranks}: {checks[0].Detail}");
            // Sums in rank order: overlap or not, and every rank alike; with 2 ranks, the same as 2 in-process workers.
            Assert.All(checks, c => Assert.Equal(checks[0].Detail, c.Detail));
            var parts = checks[0].Detail.Split(' ');
            Assert.Equal(parts[0], parts[1]);
            if (ranks == 2) Assert.Equal(on.ToString(System.Globalization.CultureInfo.InvariantCulture), parts[0]);
        }
    }

    [Fact]
    [Trait(Category.Name, Category.Training)]
    public void PerBucketSidcoOverlapsWithTheSameModelAndKeepsTheDensity()
    {
        var ml = new MLContext(seed: 1);
        var (train, test) = TestHost.Scenarios.LoadData(ml, 2000, 500);
        var (on, model) = TestHost.Scenarios.TrainOverlapped(ml, train, workers: 2, overlap: true, perBucket: true);
        var (off, _) = TestHost.Scenarios.TrainOverlapped(ml, train, workers: 2, overlap: false, perBucket: true);
        var last = model.History.Epochs[^1];
        double accuracy = ml.MulticlassClassification.Evaluate(model.Transform(
            ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(test))).MicroAccuracy;
        log.WriteLine($"per-bucket SIDCo-E 0.01: accuracy {accuracy:F4}, achieved density {last.AchievedDensity:F4}, "
            + $"fingerprints {on} / {off}");
        // The same buckets, compressors and sums, whether they go during backward or after it.
        Assert.Equal(off, on);
        Assert.InRange(last.AchievedDensity, 0.005, 0.02);
        Assert.True(accuracy >= 0.5, $"accuracy {accuracy}");
    }
}
