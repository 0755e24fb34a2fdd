using System.Globalization;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Training;

/// <summary>
/// A job that loses a rank resumes with fewer ranks, and later with more, from its checkpoints, and ends as accurate as one
/// that ran uninterrupted (the residual sums the resumes keep are checked numerically in CheckpointTests).
/// </summary>
[Trait(Category.Name, Category.Mpi)]
public sealed class ElasticResumeTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"sidco-elastic-{Guid.NewGuid():N}");

    [Fact]
    public void FourRanksLoseOneResumeWithThreeThenFiveAndMatchAnUninterruptedRun()
    {
        Directory.CreateDirectory(_dir);
        var killed = MpiRunner.Run(4, MpiRunner.TestHost, $"elastic {_dir} kill", TimeSpan.FromMinutes(3));
        Assert.False(killed.TimedOut, killed.Output);
        Assert.NotEqual(0, killed.ExitCode);
        Assert.Contains(killed.Checks, c => c.Name == "killing" && c.Rank == 3);

        var three = MpiRunner.Run(3, MpiRunner.TestHost, $"elastic {_dir} three", TimeSpan.FromMinutes(3));
        Assert.True(three.ExitCode == 0, three.Output);
        var five = MpiRunner.Run(5, MpiRunner.TestHost, $"elastic {_dir} five", TimeSpan.FromMinutes(3));
        Assert.True(five.ExitCode == 0, five.Output);
        var baseline = MpiRunner.Run(4, MpiRunner.TestHost, $"elastic {_dir} baseline", TimeSpan.FromMinutes(3));
        Assert.True(baseline.ExitCode == 0, baseline.Output);

        var (elasticAccuracy, epochs) = Result(five, "elastic-five");
        var (uninterrupted, _) = Result(baseline, "elastic-baseline");
        Assert.Equal(10, epochs);
        Assert.True(Math.Abs(elasticAccuracy - uninterrupted) <= 0.01,
            $"test accuracy {elasticAccuracy:P2} after resuming with 3 and 5 ranks, {uninterrupted:P2} uninterrupted");
    }

    // Rank 0's test accuracy and epoch count.
    private static (double Accuracy, int Epochs) Result(MpiRun run, string name)
    {
        var parts = Assert.Single(run.Checks, c => c.Name == name && c.Rank == 0).Detail.Split(' ');
        return (double.Parse(parts[0], CultureInfo.InvariantCulture), int.Parse(parts[1], CultureInfo.InvariantCulture));
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }
}
