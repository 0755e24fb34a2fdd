using System.Diagnostics;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;
using Xunit.Abstractions;

namespace Microsoft.ML.SIDCo.Tests.Conformance;

/// <summary>Cancellation, the rank API and saving, as ML.NET user code meets them in-process and under mpirun.</summary>
[Collection(FashionMnistCollection.Name)]
[Trait(Category.Name, Category.Training)]
public sealed class TrainerLifecycleTests(FashionMnistFixture data, ITestOutputHelper log) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sidco-lifecycle-").FullName;

    // Long enough that only a cancel ends it within the test's time.
    private static SIDCoTrainer.Options LongRun(string? checkpoints) => new()
    {
        Model = SIDCoModels.Mlp(32),
        Workers = 2,
        Epochs = 1000,
        BatchSize = 25,
        Density = 0.01,
        Seed = 3,
        CheckpointDirectory = checkpoints,
        CheckpointInterval = 1_000_000,
    };

    [Fact]
    public void CancelExecutionStopsEveryWorkerWithinAStepWritesACheckpointAndTheRunResumes()
    {
        var ml = new MLContext(seed: 1);
        var view = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data.Train).Transform(data.Train);
        var trainer = ml.Extensions.SIDCoTrainer(LongRun(_dir));
        long canceledAt = -1, stepsBefore = 0;
        var watch = new Stopwatch();
        trainer.ProgressReported += (_, p) =>
        {
            stepsBefore = (long)p.Epoch * p.StepsPerEpoch + p.StepInEpoch;
            if (p.Epoch == 1 && canceledAt < 0)
            {
                canceledAt = stepsBefore;
                watch.Start();
                MlNetHost.CancelExecution(ml); // what Microsoft.ML.Experimental's mlContext.CancelExecution() calls
            }
        };
        var e = Assert.Throws<OperationCanceledException>(() => trainer.Fit(view));
        log.WriteLine($"canceled after step {canceledAt}; Fit threw after {watch.ElapsedMilliseconds} ms: {e.Message}");
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"{watch.Elapsed}");
        // Both workers stopped together at the next step boundary and wrote that step's checkpoint.
        string? latest = TrainingCheckpoint.Latest(_dir);
        Assert.NotNull(latest);
        long saved = long.Parse(Path.GetFileName(latest)["step-".Length..], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(saved, canceledAt, canceledAt + 1);
        Assert.Contains($"canceled at step {saved}", e.Message);
        Assert.Contains(_dir, e.Message);

        // A new context (a canceled one stays canceled, as in ML.NET) resumes from there: its first progress report is
        // of a step after the checkpoint (a fresh run would report step 10 first), and the first epoch's metrics come back.
        var ml2 = new MLContext(seed: 1);
        var options = LongRun(_dir);
        options.StopAfterSteps = saved + 20;
        var again = ml2.Extensions.SIDCoTrainer(options);
        long firstReported = -1;
        again.ProgressReported += (_, p) => { if (firstReported < 0) firstReported = (long)p.Epoch * p.StepsPerEpoch + p.StepInEpoch; };
        using var resumed = again.Fit(ml2.Transforms.Conversion.MapValueToKey("Label").Fit(data.Train).Transform(data.Train));
        Assert.InRange(firstReported, saved + 1, saved + 20);
        // The history holds every step of the run, the canceled Fit's included (the last epoch is the partial one).
        Assert.Equal(saved + 20, resumed.History.Epochs.Sum(h => h.Steps));
        Assert.EndsWith($"step-{saved + 20:D10}", TrainingCheckpoint.Latest(_dir));
    }

    [Fact]
    public void ACanceledTokenStopsFitAndACanceledContextRefusesToStart()
    {
        var ml = new MLContext(seed: 1);
        var view = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data.Train).Transform(data.Train);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        var watch = Stopwatch.StartNew();
        var e = Assert.Throws<OperationCanceledException>(() => ml.Extensions.SIDCoTrainer(LongRun(null)).Fit(view, cts.Token));
        log.WriteLine($"token canceled after 1 s; Fit threw after {watch.ElapsedMilliseconds} ms: {e.Message}");
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(6), $"{watch.Elapsed}");
        Assert.Contains("canceled at step", e.Message);

        MlNetHost.CancelExecution(ml);
        var before = Assert.Throws<OperationCanceledException>(() => ml.Extensions.SIDCoTrainer(LongRun(null)).Fit(view));
        Assert.Contains("before it started", before.Message);
    }

    [Fact]
    public void OutsideMpirunThisProcessIsThePrimaryWorkerAndSaveWrites()
    {
        Assert.Equal((0, 1, true), (SIDCoTrainer.Rank, SIDCoTrainer.WorldSize, SIDCoTrainer.IsPrimaryWorker));
        var options = new SIDCoTrainer.Options { Model = SIDCoModels.Mlp(8), Epochs = 1, MaxStepsPerEpoch = 2 };
        var keyed = data.Ml.Transforms.Conversion.MapValueToKey("Label").Fit(data.Train).Transform(data.Train);
        using var model = data.Ml.Extensions.SIDCoTrainer(options).Fit(keyed);
        string path = Path.Combine(_dir, "model.zip");
        Assert.True(model.Save(path));
        using var loaded = data.Ml.Extensions.LoadSIDCoModel(path);
        Assert.Equal(model.WeightsFingerprint, loaded.WeightsFingerprint);
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
    }

    [Fact]

    [Trait(Category.Name, Category.Mpi)]
    public void UnderMpirunOnlyThePrimaryRankSavesAndACancelOnOneRankStopsBoth()
    {
        var run = MpiRunner.Run(2, MpiRunner.TestHost, $"lifecycle {_dir}", TimeSpan.FromMinutes(4));
        log.WriteLine(run.Output);
        run.AssertCompleted();
        Assert.All(run.Checks, c => Assert.True(c.Ok, $"rank {c.Rank} {c.Name}: {c.Detail}"));
        Assert.Equal(["0 0 2 True", "1 1 2 False"],
            run.Checks.Where(c => c.Name == "rank").OrderBy(c => c.Rank).Select(c => $"{c.Rank} {c.Detail}"));
        Assert.Equal(["0 True", "1 False"],
            run.Checks.Where(c => c.Name == "save-shared").OrderBy(c => c.Rank).Select(c => $"{c.Rank} {c.Detail}"));
        // Rank 1 canceled its own token; both ranks stopped at the same step.
        var stops = run.Checks.Where(c => c.Name == "canceled").Select(c => c.Detail).ToList();
        Assert.Equal(2, stops.Count);
        Assert.Single(stops.Distinct());
    }

    public void Dispose() { try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } }
}
