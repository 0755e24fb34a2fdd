using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Communication;

/// <summary>
/// A rank that stops must not hang the job: the collectives have a deadline, the live ranks name the missing one, the job
/// ends non-zero and a rerun resumes. A preempted job (SIGTERM) stops at the next step with a checkpoint.
/// </summary>
public sealed class CollectiveWatchdogTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"sidco-watchdog-{Guid.NewGuid():N}");

    [Fact]
    [Trait(Category.Name, Category.Unit)]
    public void AWaitPastTheDeadlineNamesTheMissingWorkerAndAborts()
    {
        using var group = new InProcessGroup(2);
        var log = new StringWriter();
        int aborted = 0;
        var settings = new StallSettings(TimeSpan.FromSeconds(1), _dir, "advice") { PollInterval = TimeSpan.FromMilliseconds(20) };
        group.Run(comm =>
        {
            using var watched = new WatchedCommunicator(comm, settings, code => Volatile.Write(ref aborted, code), log);
            watched.AtStep(6, 0.01);
            if (comm.Rank == 1)
            {
                // Worker 1 does not arrive until worker 0's watchdog has given up.
                SpinWait.SpinUntil(() => Volatile.Read(ref aborted) != 0, TimeSpan.FromSeconds(30));
            }
            watched.AllReduceSum<float>(new float[3]);
        });
        Assert.Equal(14, aborted);
        string report = log.ToString();
        Assert.Contains("SIDCo watchdog: rank 0 has waited", report);
        Assert.Contains("(AllReduceSum of 3 values) in step 7", report);
        Assert.Contains("Not arrived: rank 1.", report);
        Assert.Contains("ending the job with exit code 14. advice", report);
    }

    [Fact]
    [Trait(Category.Name, Category.Unit)]
    public void TheDeadlineGrowsWithTheLongestStep()
    {
        using var group = new InProcessGroup(1);
        group.Run(comm =>
        {
            using var watched = new WatchedCommunicator(comm, new StallSettings(TimeSpan.FromSeconds(10), _dir, ""), _ => { },
                TextWriter.Null);
            Assert.Equal(TimeSpan.FromSeconds(10), watched.Deadline);
            watched.AtStep(1, 2.0);
            Assert.Equal(TimeSpan.FromSeconds(40), watched.Deadline);
        });
    }

    [Fact]
    [Trait(Category.Name, Category.Mpi)]
    public void AStoppedRankEndsTheJobWithinTheDeadlineAndARerunResumes()
    {
        // Rank 2 stops itself (SIGSTOP) in step 46, after the checkpoint of step 40; the deadline is 10 s.
        const double Deadline = 10;
        var started = DateTimeOffset.UtcNow;
        var run = MpiRunner.Run(4, MpiRunner.TestHost, $"stall {_dir} 45", TimeSpan.FromSeconds(120));
        var ended = started + run.Elapsed;
        Assert.False(run.TimedOut, "the job hung\n" + run.Output);
        Assert.NotEqual(0, run.ExitCode);
        var stop = Assert.Single(run.Checks, c => c.Name == "stopping");
        Assert.Equal(2, stop.Rank);
        var stoppedAt = DateTimeOffset.FromUnixTimeMilliseconds(long.Parse(stop.Detail, System.Globalization.CultureInfo.InvariantCulture));
        double seconds = (ended - stoppedAt).TotalSeconds;
        Assert.True(seconds <= Deadline + 10, $"the job ended {seconds:F1} s after the stop");
        // Every live rank names the missing one (at the warning, and at the deadline unless another rank's abort came first).
        var lines = run.Output.Split('\n');
        foreach (int rank in new[] { 0, 1, 3 })
        {
            Assert.Contains(lines, l => l.Contains($"SIDCo watchdog: rank {rank} has waited") && l.Contains("in step 46")
                && l.Contains("Not arrived: rank 2."));
        }
        Assert.Contains(lines, l => l.Contains("Not arrived: rank 2.") && l.Contains("ending the job with exit code 14"));
        Assert.True(Directory.Exists(Path.Combine(_dir, "step-0000000040")));

        var rerun = MpiRunner.Run(4, MpiRunner.TestHost, $"stall {_dir} -1", TimeSpan.FromSeconds(120));
        Assert.True(rerun.ExitCode == 0, rerun.Output);
        // Progress is reported every 10 steps: a run from the start reports step 10 first, one resumed at 40 reports 50.
        Assert.Equal("0:50", Assert.Single(rerun.Checks, c => c.Name == "first-progress").Detail);
        Assert.Equal(4, rerun.Checks.Count(c => c.Name == "finished"));
    }

    [Theory]
    [Trait(Category.Name, Category.Mpi)]
    [InlineData("rank")]
    [InlineData("mpirun")]
    public void SigtermStopsEveryRankAtOneStepWithACheckpointAndARerunResumes(string target)
    {
        // Open MPI's mpirun passes a SIGTERM on to the ranks after odls_base_sigkill_timeout and sends SIGKILL as long after
        // that (1 s by default): 5 s here, the grace a preempting scheduler gives, for a loaded machine's ranks.
        var run = MpiRunner.Run(2, MpiRunner.TestHost, $"preempt {_dir} 30 {target}", TimeSpan.FromSeconds(120),
            "--mca", "odls_base_sigkill_timeout", "5");
        Assert.False(run.TimedOut, run.Output);
        var stops = run.Checks.Where(c => c.Name == "preempted").ToList();
        Assert.Equal([0, 1], stops.Select(c => c.Rank).Order().ToArray());
        long step = long.Parse(stops[0].Detail, System.Globalization.CultureInfo.InvariantCulture);
        Assert.All(stops, s => Assert.Equal(stops[0].Detail, s.Detail));
        // SIGTERM to a rank arrives in step 31: the run stops after it, losing nothing; mpirun passes it on a little later.
        if (target == "rank") Assert.Equal(31, step);
        Assert.True(step >= 31, $"stopped at {step}");
        Assert.True(Directory.Exists(Path.Combine(_dir, $"step-{step:D10}")), $"no checkpoint of step {step}\n{run.Output}");

        var rerun = MpiRunner.Run(2, MpiRunner.TestHost, $"preempt {_dir} -1 rank {step + 50}", TimeSpan.FromSeconds(120));
        Assert.True(rerun.ExitCode == 0, rerun.Output);
        Assert.Equal(2, rerun.Checks.Count(c => c.Name == "finished"));
        var first = Assert.Single(rerun.Checks, c => c.Name == "first-progress").Detail.Split(':').Select(int.Parse).ToArray();
        Assert.True(first[0] * 50 + first[1] > step, $"the rerun started at {first[0]}:{first[1]}, before step {step}");
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }
}
