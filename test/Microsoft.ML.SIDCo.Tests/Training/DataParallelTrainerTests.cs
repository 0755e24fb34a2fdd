using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Tests.Training;

[Trait(Category.Name, Category.Unit)]
public class DataParallelTrainerTests
{
    [Theory]
    [InlineData(1, 16, 1, null, 16)]  // one worker alone on the machine: every core
    [InlineData(4, 16, 1, null, 4)]   // four in-process workers share the cores
    [InlineData(1, 16, 4, null, 4)]   // four MPI ranks on one machine: not 16 threads each
    [InlineData(2, 16, 2, null, 4)]   // two ranks with two workers each
    [InlineData(1, 2, 4, null, 1)]    // more ranks than cores: one thread each, never zero
    [InlineData(1, 16, 4, "3", 3)]    // OMP_NUM_THREADS, when set, wins
    [InlineData(1, 16, 4, "0", 4)]    // ... but not when it is not a positive number
    [InlineData(1, 16, 4, "many", 4)]
    public void IntraOpThreadsShareTheMachinesCores(int workersInProcess, int processors, int ranksOnMachine, string? omp, int expected)
        => Assert.Equal(expected, DataParallelTrainer.IntraOpThreads(null, workersInProcess, processors, ranksOnMachine, omp));

    [Fact]
    public void AConfiguredCountWinsOverOmpNumThreadsAndTheSharing()
        => Assert.Equal(5, DataParallelTrainer.IntraOpThreads(5, 1, 16, 4, "3"));
}
