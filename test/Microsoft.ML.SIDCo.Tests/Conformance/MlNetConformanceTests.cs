using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Tests.Support;
using Xunit.Abstractions;

namespace Microsoft.ML.SIDCo.Tests.Conformance;

/// <summary>
/// The ML.NET conformance suite (<see cref="TestHost.Conformance"/>) on every data set, with the trainer's defaults:
/// in-process, and the same checks under mpirun with two ranks.
/// </summary>
[Trait(Category.Name, Category.Training)]
public sealed class MlNetConformanceTests(ITestOutputHelper log)
{
    private const int ChecksPerCase = 8;

    public static TheoryData<string> Cases => new(ConformanceCase.All.Select(c => c.Name));

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryPathAnMlNetUserTakesGivesTheRightAnswer(string name)
    {
        var results = TestHost.Conformance.Run(ConformanceCase.Named(name));
        foreach (var r in results) log.WriteLine($"{(r.Ok ? "ok  " : "FAIL")} {r.Name}: {r.Detail}");
        Assert.Equal(ChecksPerCase, results.Count);
        Assert.All(results, r => Assert.True(r.Ok, $"{r.Name}: {r.Detail}"));
    }

    [Fact]
    public void IrisTrainsWithBatch64OnTwoWorkers()
    {
        // Issue 25, finding 7: 119 training rows over 2 workers at batch 64 were refused; each worker now takes its 59 rows.
        var ml = new MLContext(seed: 1);
        var (train, test) = ConformanceCase.Named("iris").Split(ml);
        var trainer = ml.Extensions.SIDCoTrainer(new SIDCoTrainer.Options { BatchSize = 64, Workers = 2 });
        var model = TestHost.Conformance.Pipeline(ml, SIDCo.Training.TrainingTask.MulticlassClassification, trainer).Fit(train);
        double accuracy = ml.MulticlassClassification.Evaluate(model.Transform(test)).MicroAccuracy;
        var history = TestHost.Conformance.Sidco(model).History.Epochs;
        log.WriteLine($"iris, batch 64, 2 workers: {history.Count} epochs of {history[0].Steps} step(s), test accuracy {accuracy:F4}");
        Assert.Equal(1, history[0].Steps);
        Assert.True(accuracy >= 0.9, $"{accuracy}");
    }

    [Fact]

    [Trait(Category.Name, Category.Mpi)]
    public void TheSameChecksHoldUnderMpirunWithTwoRanks()
    {
        var run = MpiRunner.Run(2, MpiRunner.TestHost, "conformance", TimeSpan.FromMinutes(8));
        run.AssertCompleted();
        foreach (var c in run.Checks) log.WriteLine($"rank {c.Rank} {(c.Ok ? "ok  " : "FAIL")} {c.Name}: {c.Detail}");
        Assert.Equal(2 * ChecksPerCase * ConformanceCase.All.Count, run.Checks.Count);
        Assert.All(run.Checks, c => Assert.True(c.Ok, $"rank {c.Rank} {c.Name}: {c.Detail}"));
        // Both ranks end with the same model: the fit check reports its fingerprint.
        Assert.All(run.Checks.Where(c => c.Name.EndsWith("/fit", StringComparison.Ordinal)).GroupBy(c => c.Name), g =>
            Assert.Single(g.Select(c => c.Detail).Distinct()));
    }
}
