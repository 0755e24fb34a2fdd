using System.Globalization;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Training;

/// <summary>With sharded data each MPI rank holds its own quarter of the rows and trains as well as with all of them.</summary>
public sealed class ShardedDataTests : IDisposable
{
    private readonly string _file = Path.Combine(Path.GetTempPath(), $"sidco-shard-{Guid.NewGuid():N}.idv");

    [Fact]
    [Trait(Category.Name, Category.Mpi)]
    public void FourRanksHoldAQuarterOfTheRowsEachAndReachTheSameAccuracyBand()
    {
        const int Rows = 6000;
        var written = MpiRunner.RunPlain(MpiRunner.TestHost, $"write-idv {_file} {Rows}", TimeSpan.FromMinutes(2));
        Assert.True(written.ExitCode == 0, written.Output);
        var results = new Dictionary<string, (long[] Rows, double Accuracy)>();
        foreach (string mode in new[] { "on", "off" })
        {
            var run = MpiRunner.Run(4, MpiRunner.TestHost, $"shard {_file} {mode}", TimeSpan.FromMinutes(3));
            Assert.True(run.ExitCode == 0, run.Output);
            var rows = run.Checks.Where(c => c.Name == $"rows-{mode}").OrderBy(c => c.Rank)
                .Select(c => long.Parse(c.Detail.Split(' ')[0], CultureInfo.InvariantCulture)).ToArray();
            double accuracy = double.Parse(Assert.Single(run.Checks, c => c.Name == $"shard-{mode}" && c.Rank == 0).Detail.Split(' ')[0],
                CultureInfo.InvariantCulture);
            results[mode] = (rows, accuracy);
        }
        Assert.Equal([Rows / 4, Rows / 4, Rows / 4, Rows / 4], results["on"].Rows);
        Assert.Equal([Rows, Rows, Rows, Rows], results["off"].Rows);
        Assert.True(Math.Abs(results["on"].Accuracy - results["off"].Accuracy) <= 0.03,
            $"sharded {results["on"].Accuracy:P1}, every row on every rank {results["off"].Accuracy:P1}");
    }

    [Fact]
    [Trait(Category.Name, Category.Unit)]
    public void TheScaleAgreedFromMomentsIsTheScaleOfAllTargets()
    {
        var rng = new Random(3);
        var targets = Enumerable.Range(0, 1000).Select(_ => (float)(rng.NextDouble() * 40 + 100)).ToArray();
        var whole = TargetScale.Of(targets);
        double sum = targets.Sum(t => (double)t), squares = targets.Sum(t => (double)t * t);
        var agreed = TargetScale.FromMoments(targets.Length, sum, squares);
        Assert.Equal(whole.Mean, agreed.Mean, 1e-9);
        Assert.Equal(whole.Scale, agreed.Scale, 1e-6);
        Assert.Equal(TargetScale.Identity, TargetScale.FromMoments(0, 0, 0));
        Assert.Equal(1, TargetScale.FromMoments(3, 6, 12).Scale); // a constant target keeps a scale of 1
    }

    public void Dispose() => File.Delete(_file);
}
