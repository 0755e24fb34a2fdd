using System.Globalization;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Tests.Support;
using Xunit.Abstractions;

namespace Microsoft.ML.SIDCo.Tests.Communication;

/// <summary>
/// The MPI.NET binding under MPICH (the Linux stand-in for Microsoft MPI): the communicator contract the Open MPI binding
/// honours, and a training that ends with the model two Open MPI ranks reach.
/// </summary>
[Trait(Category.Name, Category.Mpi)]
public class MpiNetCommunicatorTests(ITestOutputHelper log)
{
    private static readonly string[] s_expectedChecks =
        CommunicatorContract.Run(InProcessCommunicator.CreateSingle()).Select(c => c.Name).ToArray();

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void MpichRanksHonourTheContractThroughMpiNet(int ranks)
    {
        var run = MpiRunner.RunMpich(ranks, MpiRunner.TestHost, "contract-mpinet", TimeSpan.FromSeconds(120));
        run.AssertCompleted();
        var names = s_expectedChecks.Append("launched-by-mpiexec").ToArray();
        for (int r = 0; r < ranks; r++)
        {
            var mine = run.Checks.Where(c => c.Rank == r).ToList();
            Assert.Equal(names, mine.Select(c => c.Name).ToArray());
            foreach (var c in mine) Assert.True(c.Ok, $"rank {r}: {c.Name}: {c.Detail}\n{run.Output}");
        }
    }

    [Fact]
    public void TwoMpichRanksTrainTheModelTwoOpenMpiRanksTrain()
    {
        // The same program, unchanged: the trainer takes MPI.NET because MPICH's mpiexec launched it.
        var mpich = MpiRunner.RunMpich(2, MpiRunner.TestHost, "train", TimeSpan.FromMinutes(5));
        Assert.True(mpich.ExitCode == 0, mpich.Output);
        var openMpi = MpiRunner.Run(2, MpiRunner.TestHost, "train", TimeSpan.FromMinutes(5));
        Assert.True(openMpi.ExitCode == 0, openMpi.Output);
        Assert.All(mpich.Checks.Where(c => c.Name == "transport"), c => Assert.Equal("mpinet/2", c.Detail));
        var prints = mpich.Checks.Concat(openMpi.Checks).Where(c => c.Name == "fingerprint").Select(c => c.Detail).ToList();
        Assert.Equal(4, prints.Count);
        Assert.Single(prints.Distinct());
        double accuracy = double.Parse(mpich.Checks.First(c => c.Name == "accuracy").Detail, CultureInfo.InvariantCulture);
        log.WriteLine($"mpiexec.mpich -n 2 and mpirun -np 2: the same weights; test accuracy {accuracy:P2}");
    }
}
