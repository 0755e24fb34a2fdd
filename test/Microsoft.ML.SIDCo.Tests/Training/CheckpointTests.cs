using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Tests.Training;

[Trait(Category.Name, Category.Training)]
public sealed class CheckpointTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sidco-ckpt-" + Guid.NewGuid().ToString("N"));
    private static readonly TrainingData s_data = Load();

    private static TrainingData Load()
    {
        var rows = Samples.FashionMnist.Load(train: true, limit: 2000);
        return new TrainingData(rows.SelectMany(r => r.Features).ToArray(), 784, rows.Select(r => (int)r.Label).ToArray(), null);
    }

    private TrainingSettings Settings(double learningRate = 0.05, long stopAfter = 0, bool checkpoints = true,
        bool adaptiveStages = true) => new()
        {
            Model = SIDCoModels.Mlp(32),
            Task = TrainingTask.MulticlassClassification,
            Outputs = 10,
            Epochs = 2,
            BatchSize = 25,
            MaxStepsPerEpoch = 20,
            LearningRate = learningRate,
            Momentum = 0.9,
            Schedule = LearningRateSchedule.Constant,
            Seed = 3,
            CheckpointDirectory = checkpoints ? _dir : null,
            CheckpointInterval = 10,
            StopAfterSteps = stopAfter,
            ReplicaCheckInterval = 1,
            // Two stages from the start: the second stage's peaks bound carries over from call to call, so the checkpoint must
            // hold it (with adaptive stages the controller's state must carry over too, and it may settle on one stage).
            HookFactory = () =>
                new CompressionHook(new CompressionHookOptions
                {
                    Compressor = CompressorKind.SidcoExponential,
                    Compression = new CompressorOptions { Density = 0.01, Stages = 2, AdaptiveStages = adaptiveStages },
                    // A fixed exchange repeats exactly; Auto decides from timings whether compressing pays.
                    Exchange = ExchangeMode.Sparse,
                }),
        };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ResumedRunEndsBitwiseEqualToAnUninterruptedOne(bool adaptiveStages)
    {
        using var uninterrupted =
            DataParallelTrainer.RunInProcess(s_data, null, Settings(checkpoints: false, adaptiveStages: adaptiveStages), workers: 2);
        // Stopped mid-epoch and between two interval checkpoints (10, 20): the stop writes one of its own.
        using (var interrupted =
            DataParallelTrainer.RunInProcess(s_data, null, Settings(stopAfter: 25, adaptiveStages: adaptiveStages), workers: 2))
            Assert.Equal(25, interrupted.Steps);
        Assert.EndsWith("step-0000000025", TrainingCheckpoint.Latest(_dir));
        using var resumed = DataParallelTrainer.RunInProcess(s_data, null, Settings(adaptiveStages: adaptiveStages), workers: 2);
        Assert.Equal(40, resumed.Steps);
        Assert.Equal(new ParameterSet(uninterrupted.Model).Fingerprint(), new ParameterSet(resumed.Model).Fingerprint());
        // The second epoch ran in two pieces; its metrics still cover all 20 steps, as in the uninterrupted run.
        Assert.Equal(uninterrupted.History.Epochs.Select(e => (e.Steps, e.Loss, e.Accuracy, e.AchievedDensity)),
            resumed.History.Epochs.Select(e => (e.Steps, e.Loss, e.Accuracy, e.AchievedDensity)));
    }

    [Fact]
    public void CorruptCheckpointIsRefusedAndNothingIsLoaded()
    {
        using (DataParallelTrainer.RunInProcess(s_data, null, Settings(stopAfter: 10), workers: 2)) { }
        string latest = TrainingCheckpoint.Latest(_dir)!;
        var file = Path.Combine(latest, "hook-rank1.bin");
        var bytes = File.ReadAllBytes(file);
        bytes[^5] ^= 0xFF;
        File.WriteAllBytes(file, bytes);
        var e = Assert.Throws<CheckpointException>(() => DataParallelTrainer.RunInProcess(s_data, null, Settings(), workers: 2));
        Assert.Contains("corrupt", e.Message);
        Assert.Contains("hook-rank1.bin", e.Message);

        // The check runs before any state is touched: a model given to the loader keeps its weights.
        using var model = SIDCoModels.Mlp(32).Build(784, 10);
        var ps = new ParameterSet(model);
        long before = ps.Fingerprint();
        var comm = Microsoft.ML.SIDCo.Communication.InProcessCommunicator.CreateSingle();
        Assert.Throws<CheckpointException>(() =>
            {
                _ = TrainingCheckpoint.TryLoad(_dir, comm, Settings().Fingerprint(), new Dictionary<string, string>(), ps,
                    new SgdOptimizer(ps.Length, 0.9f, false, 0), new DenseAllReduceHook(), EpochTotals.Length);
            });
        Assert.Equal(before, ps.Fingerprint());
    }

    [Fact]
    public void CheckpointFromOtherOptionsOrWorkerCountIsRefused()
    {
        using (DataParallelTrainer.RunInProcess(s_data, null, Settings(stopAfter: 10), workers: 2)) { }
        var e = Assert.Throws<CheckpointException>(() =>
            DataParallelTrainer.RunInProcess(s_data, null, Settings(learningRate: 0.1), workers: 2));
        Assert.Contains("different training options", e.Message);
        // A hook that cannot spread its state over another number of workers refuses them.
        var opaque = Settings() with { HookFactory = () => new OpaqueHook() };
        using (DataParallelTrainer.RunInProcess(s_data, null, opaque with { StopAfterSteps = 20, CheckpointDirectory = _dir + "-opaque" },
            workers: 2)) { }
        var e2 = Assert.Throws<CheckpointException>(() =>
            DataParallelTrainer.RunInProcess(s_data, null, opaque with { CheckpointDirectory = _dir + "-opaque" }, workers: 1));
        Assert.Contains("2 workers", e2.Message);
        Assert.Contains("cannot spread its state", e2.Message);
    }

    [Fact]
    public void AResumeWithFewerThenMoreWorkersKeepsTheResidualSumAndTrainsOn()
    {
        // 4 workers stop after 25 steps (mid-epoch 2), 3 workers go on to step 32, 5 finish the run.
        using (DataParallelTrainer.RunInProcess(s_data, null, Settings(stopAfter: 25), workers: 4)) { }
        string saved = Path.Combine(_dir, "step-0000000025");
        var states = Enumerable.Range(0, 4).Select(r => File.ReadAllBytes(Path.Combine(saved, $"hook-rank{r}.bin"))).ToList();
        int length = new ParameterSet(SIDCoModels.Mlp(32).Build(784, 10)).Length;
        // Each saved residual, read back as it was written, and their sum in double precision.
        var before = new double[length];
        foreach (var state in states)
        {
            var residual = LoadResidual(state, length);
            for (int i = 0; i < length; i++) before[i] += residual[i];
        }
        Assert.True(before.Any(v => v != 0), "the saved residuals are all zero");
        foreach (int workers in new[] { 3, 5 })
        {
            var after = new double[length];
            using var group = new Microsoft.ML.SIDCo.Communication.InProcessGroup(workers);
            var residuals = new float[workers][];
            group.Run(comm =>
            {
                using var hook = (CompressionHook)Settings().HookFactory();
                hook.Initialize(new GradientHookContext(comm, length, []));
                ((IElasticHook)hook).LoadRedistributed(states.Select(b => (Stream)new MemoryStream(b)).ToList(), comm.Rank, workers);
                residuals[comm.Rank] = hook.Feedback!.Residual.ToArray();
            });
            foreach (var residual in residuals) for (int i = 0; i < length; i++) after[i] += residual[i];
            double scale = before.Max(Math.Abs);
            for (int i = 0; i < length; i++) Assert.True(Math.Abs(after[i] - before[i]) <= 1e-6 * scale, $"{workers} workers, entry {i}");
        }

        using (var three = DataParallelTrainer.RunInProcess(s_data, null, Settings(stopAfter: 32), workers: 3))
        {
            // The epoch in progress is reported as far as it went (its totals carry the 4 workers' share before the resume).
            Assert.Equal(2, three.History.Epochs.Count);
            Assert.True(three.History.Epochs[1].Loss < three.History.Epochs[0].Loss);
        }
        using var five = DataParallelTrainer.RunInProcess(s_data, null, Settings(), workers: 5);
        using var uninterrupted = DataParallelTrainer.RunInProcess(s_data, null, Settings(checkpoints: false), workers: 4);
        Assert.Equal(2, five.History.Epochs.Count);
        // The loss goes on falling, and ends near where an uninterrupted run's does (not bitwise: the workers changed).
        Assert.True(five.History.Epochs[1].Loss < five.History.Epochs[0].Loss);
        Assert.InRange(five.History.Epochs[1].Loss, 0.8 * uninterrupted.History.Epochs[1].Loss,
            1.25 * uninterrupted.History.Epochs[1].Loss);
    }

    // A saved hook state's residual, read through the hook's own loader.
    private float[] LoadResidual(byte[] state, int length)
    {
        var comm = Microsoft.ML.SIDCo.Communication.InProcessCommunicator.CreateSingle();
        using var hook = (CompressionHook)Settings().HookFactory();
        hook.Initialize(new GradientHookContext(comm, length, []));
        hook.LoadState(new MemoryStream(state));
        return hook.Feedback!.Residual.ToArray();
    }

    // The dense exchange, as a user's hook that knows nothing of elastic resumes.
    private sealed class OpaqueHook : IGradientHook
    {
        private readonly DenseAllReduceHook _inner = new();

        public void Initialize(GradientHookContext context) => _inner.Initialize(context);

        public GradientHookStats Reduce(Span<float> gradient, long step) => _inner.Reduce(gradient, step);

        public void SaveState(Stream stream) { }

        public void LoadState(Stream stream) { }

        public void Dispose() => _inner.Dispose();
    }

    [Fact]
    public void WeightsFileRejectsCorruptionAndForeignLayoutsWithoutChangingTheModel()
    {
        using var a = SIDCoModels.Mlp(8).Build(20, 3);
        using var b = SIDCoModels.Mlp(9).Build(20, 3);
        var pa = new ParameterSet(a);
        var saved = new MemoryStream();
        pa.Save(saved);
        var pb = new ParameterSet(b);
        long before = pb.Fingerprint();
        var e = Assert.Throws<InvalidDataException>(() => pb.Load(new MemoryStream(saved.ToArray())));
        Assert.Contains("fc0.weight", e.Message);
        Assert.Equal(before, pb.Fingerprint());
        var bytes = saved.ToArray();
        bytes[40] ^= 1;
        long beforeA = pa.Fingerprint();
        Assert.Throws<InvalidDataException>(() => pa.Load(new MemoryStream(bytes)));
        Assert.Equal(beforeA, pa.Fingerprint());
    }

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true); }
}
