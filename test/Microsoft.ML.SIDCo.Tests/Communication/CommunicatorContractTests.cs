using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Communication;

/// <summary>The same contract (<see cref="CommunicatorContract"/>) against in-process workers and real Open MPI.</summary>
public class CommunicatorContractTests
{
    private static readonly string[] s_expectedChecks =
        CommunicatorContract.Run(InProcessCommunicator.CreateSingle()).Select(c => c.Name).ToArray();

    [Theory]

    [Trait(Category.Name, Category.Unit)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void InProcessWorkersHonourTheContract(int workers)
    {
        using var group = new InProcessGroup(workers);
        var results = new IReadOnlyList<CheckResult>[workers];
        group.Run(c => results[c.Rank] = CommunicatorContract.Run(c));
        for (int r = 0; r < workers; r++)
        {
            Assert.Equal(s_expectedChecks, results[r].Select(c => c.Name).ToArray());
            foreach (var c in results[r]) Assert.True(c.Ok, $"rank {r}: {c.Name}: {c.Detail}");
        }
    }

    [Theory]

    [Trait(Category.Name, Category.Mpi)]
    [InlineData(2)]
    [InlineData(4)]
    public void OpenMpiRanksHonourTheContract(int ranks)
    {
        var run = MpiRunner.Run(ranks, MpiRunner.TestHost, "contract", TimeSpan.FromSeconds(120));
        run.AssertCompleted();
        var names =
            s_expectedChecks.Concat(["chunked-allreduce", "ring-allgather", "launched-by-mpirun", "ranks-on-this-machine",
            "probe-once-per-process"]).ToArray();
        for (int r = 0; r < ranks; r++)
        {
            var mine = run.Checks.Where(c => c.Rank == r).ToList();
            Assert.Equal(names, mine.Select(c => c.Name).ToArray());
            foreach (var c in mine) Assert.True(c.Ok, $"rank {r}: {c.Name}: {c.Detail}\n{run.Output}");
        }
    }
}

public class HybridCommunicatorTests
{
    [Fact]
    [Trait(Category.Name, Category.Mpi)]
    public void TwoWorkersInEachOfTwoRanksHonourTheContract()
    {
        var run = MpiRunner.Run(2, MpiRunner.TestHost, "hybrid-contract", TimeSpan.FromSeconds(120));
        run.AssertCompleted();
        var expected = CommunicatorContract.Run(InProcessCommunicator.CreateSingle()).Select(c => c.Name).ToArray();
        for (int r = 0; r < 4; r++)
        {
            var mine = run.Checks.Where(c => c.Rank == r).ToList();
            Assert.Equal(expected, mine.Select(c => c.Name).ToArray());
            foreach (var c in mine) Assert.True(c.Ok, $"global rank {r}: {c.Name}: {c.Detail}\n{run.Output}");
        }
    }
}

public class CommunicationFaultTests
{
    [Fact]
    [Trait(Category.Name, Category.Mpi)]
    public void MismatchedLengthsThrowOnEveryMpiRank()
    {
        var run = MpiRunner.Run(2, MpiRunner.TestHost, "mismatch", TimeSpan.FromSeconds(30));
        Assert.False(run.TimedOut, "hung instead of reporting the mismatch\n" + run.Output);
        var checks = run.Checks.Where(c => c.Name == "mismatch").ToList();
        Assert.Equal([0, 1], checks.Select(c => c.Rank).Order().ToArray());
        Assert.All(checks, c => Assert.True(c.Ok && c.Detail.Contains("rank 0 = 1000") && c.Detail.Contains("rank 1 = 1001"), c.Detail));
    }

    [Fact]
    [Trait(Category.Name, Category.Training)]
    public void ManyInProcessWorkersShareTheProbesMemory()
    {
        // Each in-process worker used to allocate the cost probe's full buffers (36 MiB, and 32 MiB more for the scatter
        // probe): 32 workers on a tiny model peaked near 2.6 GB. The probe's budget is now shared by a process's workers.
        var run = MpiRunner.RunPlain(MpiRunner.TestHost, "memory 32", TimeSpan.FromMinutes(2));
        Assert.True(run.ExitCode == 0, run.Output);
        var check = Assert.Single(run.Checks, c => c.Name == "memory");
        long peak = long.Parse(check.Detail.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(peak < 1L << 30, $"peak working set {peak / (1 << 20)} MiB with 32 workers");
    }

    [Fact]
    [Trait(Category.Name, Category.Mpi)]
    public void RanksThatDisagreeOnAnOptionNameItOnEveryRank()
    {
        // Different DenseWarmupSteps or StopAfterSteps made the ranks call different collectives and hang for good.
        var run = MpiRunner.Run(2, MpiRunner.TestHost, "disagree", TimeSpan.FromSeconds(120));
        Assert.False(run.TimedOut, "hung instead of reporting the disagreement\n" + run.Output);
        foreach (var (option, rank0, rank1) in new[] { ("DenseWarmupSteps", "0", "3"), ("StopAfterSteps", "5", "6") })
        {
            var checks = run.Checks.Where(c => c.Name == $"disagree-{option}").ToList();
            Assert.Equal([0, 1], checks.Select(c => c.Rank).Order().ToArray());
            Assert.All(checks, c => Assert.True(
                c.Ok && c.Detail.Contains($"Options.{option}") && c.Detail.Contains($"rank 0 = {rank0}")
                    && c.Detail.Contains($"rank 1 = {rank1}"),
                c.Detail));
        }
    }

    [Fact]

    [Trait(Category.Name, Category.Mpi)]
    public void ARankThatDiesEndsTheJobWithAnError()
    {
        var run = MpiRunner.Run(2, MpiRunner.TestHost, "die", TimeSpan.FromSeconds(30));
        Assert.False(run.TimedOut, "mpirun hung after a rank died\n" + run.Output);
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains(run.Checks, c => c.Name == "dying");
        Assert.True(run.Elapsed < TimeSpan.FromSeconds(30));
    }

    [Fact]

    [Trait(Category.Name, Category.Unit)]
    public void AFailingInProcessWorkerReleasesItsPeers()
    {
        using var group = new InProcessGroup(3);
        var e = Assert.Throws<InvalidOperationException>(() => group.Run(c =>
        {
            if (c.Rank == 2) throw new InvalidOperationException("worker 2 broke");
            for (int i = 0; i < 100; i++) c.AllReduceSum<float>(new float[10]);
        }));
        Assert.Equal("worker 2 broke", e.Message);
    }

    [Fact]

    [Trait(Category.Name, Category.Unit)]
    public void InProcessLengthMismatchThrowsOnEveryWorker()
    {
        using var group = new InProcessGroup(3);
        var messages = new string?[3];
        group.Run(c =>
        {
            try { c.AllReduceSum<float>(new float[10 + c.Rank]); }
            catch (RankMismatchException e) { messages[c.Rank] = e.Message; }
        });
        Assert.All(messages, m => Assert.Contains("lengths differ", m));
    }
}

[Trait(Category.Name, Category.Unit)]
public class GradientExchangeWaitTests
{
    [Fact]
    public void TheWaitForALateWorkerIsTheCountsAllgatherAndTheDenseAllreduceReportsNone()
    {
        // Worker 1 reaches the exchange 300 ms after worker 0: worker 0 must spend at least that long in the
        // counts allgather, and the wait is part of the exchange's time, never more than it.
        const int Late = 300, N = 1000;
        using var group = new InProcessGroup(2);
        var sparse = new ExchangeStats[2];
        var dense = new ExchangeStats[2];
        var model = new CostModel(1e-6, 1e-9, 2);
        group.Run(c =>
        {
            var local = new Microsoft.ML.SIDCo.Kernels.SparseBuffer();
            local.Add(c.Rank, 1f);
            var output = new float[N];
            // Both exchanges are made first: making one is collective too (the workers agree on its length).
            var exchange = new GradientExchange(c, N, ExchangeMode.Sparse, model: model);
            var denseExchange = new GradientExchange(c, N, ExchangeMode.Dense, model: model);
            exchange.AllReduce(local, output); // untimed: the first call sizes buffers
            c.Barrier();
            if (c.Rank == 1) Thread.Sleep(Late);
            sparse[c.Rank] = exchange.AllReduce(local, output);
            c.Barrier();
            if (c.Rank == 1) Thread.Sleep(Late);
            dense[c.Rank] = denseExchange.AllReduceDense(output);
        });
        Assert.True(sparse[0].WaitMs >= 0.5 * Late, $"the early worker waited {sparse[0].WaitMs} ms");
        Assert.All(sparse, s => Assert.InRange(s.WaitMs, 0, s.ElapsedMs));
        Assert.All(dense, d => Assert.Equal(0, d.WaitMs));
        Assert.True(dense[0].ElapsedMs >= 0.5 * Late, "a dense allreduce holds its wait inside its elapsed time");
    }
}

[Trait(Category.Name, Category.Unit)]
public class CostModelTests
{
    [Theory]
    [InlineData(4, 0.001, ExchangeMode.Sparse)]
    [InlineData(4, 0.01, ExchangeMode.Sparse)]
    [InlineData(4, 0.3, ExchangeMode.Dense)]   // P * density > 1: the union of supports fills the vector
    [InlineData(64, 0.05, ExchangeMode.Dense)]
    [InlineData(64, 0.001, ExchangeMode.Sparse)]
    public void UnionFillInFlipsTheChoiceToDense(int workers, double density, ExchangeMode expected)
    {
        var model = new CostModel(AlphaSeconds: 20e-6, BetaSecondsPerByte: 1e-9, Workers: workers);
        long n = 10_000_000, total = (long)(density * n) * workers;
        Assert.Equal(expected, model.Choose(n, total));
    }

    [Fact]
    public void PredictionsFollowTheAlphaBetaFormulas()
    {
        var m = new CostModel(1e-5, 2e-9, 4);
        Assert.Equal(2 * 3 * 1e-5 + 2.0 * 3 / 4 * 4 * 1000 * 2e-9, m.DenseSeconds(1000), 15);
        Assert.Equal(3 * 3 * 1e-5 + 3.0 / 4 * 100 * 8 * 2e-9, m.SparseSeconds(100), 15);
        Assert.Equal(3.0 / 4 * 100 * 6, m.SparseBytesPerRank(100, valueBytes: 2), 9);
        Assert.Equal(0, new CostModel(1, 1, 1).DenseSeconds(1000));
        // The scatter-add term: on shared memory a large union makes sparse lose even below P * density = 1.
        var fastLink = new CostModel(1e-6, 0.05e-9, 4, ScatterSecondsPerEntry: 4e-9);
        Assert.Equal(ExchangeMode.Dense, fastLink.Choose(25_600_000, 10_240_000));
        Assert.Equal(ExchangeMode.Sparse, fastLink.Choose(25_600_000, 102_400));
        Assert.Equal(3 * 3 * 1e-6 + 3.0 / 4 * 100 * 8 * 0.05e-9 + 100 * 4e-9, fastLink.SparseSeconds(100), 15);
    }

    [Fact]
    public void ProbeMeasuresPositiveParametersAndAllWorkersAgree()
    {
        using var group = new InProcessGroup(2);
        var models = new CostModel[2];
        group.Run(c => models[c.Rank] = CostModel.Probe(c, repetitions: 5));
        Assert.Equal(models[0], models[1]);
        Assert.True(models[0].AlphaSeconds > 0 && models[0].BetaSecondsPerByte > 0 && models[0].ScatterSecondsPerEntry > 0);
        Assert.Same(models[0], CostModel.Probe(group.Communicators[0])); // cached per communicator
    }
}
