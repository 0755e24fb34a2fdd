using System.Diagnostics;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using TorchSharp;
using static TorchSharp.torch;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>
/// One worker's training run, split into its parts: a step (batch, forward and backward, the hook, the update), the
/// agreed stop, the close of an epoch (the workers' totals summed, the replicas compared, the metrics) and the
/// checkpoints. Every worker of the group runs one; they meet in the hook's exchange and in the collectives here.
/// </summary>
internal sealed class WorkerRun : IDisposable
{
    // Each epoch's data order is a permutation seeded by (seed x this + epoch): a prime, so seeds and epochs do not collide.
    private const int EpochSeedStride = 7919;

    // A shard's order is seeded apart from the other shards' by this prime times (rank + 1).
    private const int ShardSeedStride = 1_000_003;

    // Worker 0 reports progress every this many steps (and at each epoch's last).
    private const int ProgressInterval = 10;

    private readonly ICommunicator _comm;
    private readonly nn.Module<Tensor, Tensor> _model;
    private readonly TrainingData _train;
    private readonly TrainingData? _validation;
    private readonly TrainingSettings _s;
    private readonly ParameterSet _parameters;
    private readonly long _fingerprint;
    private readonly int _stepsPerEpoch;
    private readonly long _rows; // training rows over all workers
    private readonly long _totalSteps;
    private readonly IGradientHook _hook;
    private readonly BackwardOverlap? _overlap;
    private readonly FlatOptimizer _optimizer;
    private readonly float[] _bucket;
    private readonly double[] _compressTimes; // this epoch's per-step compress times, for their median
    private readonly Tensor _batch;           // one aligned input tensor, refilled every step
    private readonly long[] _classes;
    private readonly float[] _targets;
    private readonly int[] _stopFlag = new int[1];
    private TrainingHistory _history = new();
    private EpochTotals _totals;
    private long _step;
    private int _timedSteps;

    public WorkerRun(ICommunicator comm, nn.Module<Tensor, Tensor> model, TrainingData train, TrainingData? validation,
        TrainingSettings settings)
    {
        _comm = comm;
        _model = model;
        _train = train;
        _validation = validation;
        _s = settings;
        _parameters = new ParameterSet(model);
        _fingerprint = settings.Fingerprint();
        comm.VerifyAgreement("the training options", settings.AgreedOptions.Select(o => (o.Name, o.Value)).ToList());
        comm.VerifyAgreement("the training settings derived from the data (epochs, batch size, classes)", _fingerprint);
        // Every worker makes the same number of steps: with shards, as many as the smallest shard allows.
        int perWorker = train.Count / comm.Size;
        _rows = train.Count;
        if (train.IsShard)
        {
            var counts = new long[comm.Size];
            comm.AllGather<long>([train.Count], counts);
            _rows = counts.Sum();
            perWorker = (int)counts.Min();
        }
        else comm.VerifyAgreement("the number of training examples", train.Count);
        _stepsPerEpoch = DataParallelTrainer.StepsPerEpoch(perWorker * comm.Size, comm.Size, settings.BatchSize, settings.MaxStepsPerEpoch);
        if (_stepsPerEpoch < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(settings.BatchSize), settings.BatchSize,
                $"BatchSize {settings.BatchSize} x {comm.Size} workers exceeds the {train.Count} training examples: no full step fits in " +
                    $"an epoch.");
        }
        _totalSteps = (long)_stepsPerEpoch * settings.Epochs;
        _hook = settings.HookFactory();
        try
        {
            _hook.Initialize(new GradientHookContext(comm, _parameters.Length, _parameters.Slices));
        }
        catch
        {
            _hook.Dispose();
            throw;
        }
        _optimizer =
            FlatOptimizer.Create(settings.Optimizer, _parameters.Length, settings.Momentum, settings.Nesterov, settings.WeightDecay,
            settings.AdamBeta1, settings.AdamBeta2, settings.AdamEpsilon);
        _bucket = new float[_parameters.Length];
        if (settings.OverlapBackward && comm.Size > 1 && _hook is IBucketedGradientHook bucketed)
            _overlap = new BackwardOverlap(_model, _parameters, bucketed, _bucket, settings.BucketBytes);
        _compressTimes = new double[_stepsPerEpoch];
        _batch = torch.empty([settings.BatchSize, train.FeatureLength], ScalarType.Float32);
        _classes = new long[settings.BatchSize];
        _targets = new float[settings.BatchSize];
    }

    /// <summary>Trains from the newest checkpoint (or the start) to the last epoch, or to
    /// <see cref="TrainingSettings.StopAfterSteps"/>.</summary>
    public (TrainingHistory History, long Steps) Run()
    {
        Resume();
        for (int epoch = (int)(_step / _stepsPerEpoch); epoch < _s.Epochs && !StopsBefore(_step); epoch++)
        {
            int seed = _s.Seed * EpochSeedStride + epoch + (_train.IsShard ? ShardSeedStride * (_comm.Rank + 1) : 0);
            var order = Permutation(_train.Count, seed);
            var watch = Stopwatch.StartNew();
            if (_step % _stepsPerEpoch == 0) _totals = default;
            _timedSteps = 0;
            _model.train();
            for (int inEpoch = (int)(_step % _stepsPerEpoch); inEpoch < _stepsPerEpoch && !StopsBefore(_step); inEpoch++)
            {
                ThrowIfStopRequested();
                Step(order, inEpoch);
                if (_comm.Rank == 0 && _s.Log is { } log && _hook is IGradientHookNotes notes && notes.TakeNote() is { } note) log(note);
                // A checkpoint is due every CheckpointInterval steps and where StopAfterSteps ends the run (so the next run
                // resumes there); one due on an epoch's last step is written after the epoch's metrics join the history.
                if (CheckpointDue() && inEpoch < _stepsPerEpoch - 1) SaveCheckpoint(_totals.AsSpan());
                if (_comm.Rank == 0 && _s.Progress is { } progress
                    && (inEpoch % ProgressInterval == ProgressInterval - 1 || inEpoch == _stepsPerEpoch - 1))
                    progress(new TrainingProgress(epoch, _s.Epochs, inEpoch + 1, _stepsPerEpoch, _totals.MeanLoss, null));
            }
            if (_totals.Steps == 0) break;
            var metrics = CloseEpoch(epoch, watch.Elapsed.TotalSeconds);
            if (CheckpointDue() && _step % _stepsPerEpoch == 0) SaveCheckpoint(new double[EpochTotals.Length]);
            if (_comm.Rank == 0) _s.Progress?.Invoke(new TrainingProgress(epoch, _s.Epochs, _stepsPerEpoch, _stepsPerEpoch, metrics.Loss,
                metrics));
        }
        _model.eval();
        return (_history, _step);
    }

    private void Resume()
    {
        if (_s.CheckpointDirectory is not { } dir || !_s.Resume) return;
        if (TrainingCheckpoint.TryLoad(dir, _comm, _fingerprint, KeptOptions, _parameters, _optimizer, _hook,
            EpochTotals.Length) is not { } resumed) return;
        _history = resumed.History;
        _step = resumed.Workers == _comm.Size ? resumed.Step : ElasticStep(resumed.Step, resumed.Workers);
        if (_step % _stepsPerEpoch != 0) resumed.EpochTotals.CopyTo(_totals.AsSpan());
    }

    // The step where a run saved by another number of workers continues: the same epoch, after the rows its workers had
    // consumed of that epoch's order (an epoch has another number of steps now), so the schedule keeps its place.
    private long ElasticStep(long savedStep, int savedWorkers)
    {
        long savedPerEpoch = Math.Max(1, _rows / savedWorkers / _s.BatchSize);
        if (_s.MaxStepsPerEpoch > 0) savedPerEpoch = Math.Min(savedPerEpoch, _s.MaxStepsPerEpoch);
        long epoch = savedStep / savedPerEpoch;
        long consumed = savedStep % savedPerEpoch * _s.BatchSize * savedWorkers;
        long inEpoch = Math.Min(consumed / ((long)_s.BatchSize * _comm.Size), _stepsPerEpoch - 1);
        return epoch * _stepsPerEpoch + inEpoch;
    }

    // One optimizer step on this worker's rows of the epoch's order; the hook leaves the averaged gradient in the bucket.
    private void Step(int[] order, int inEpoch)
    {
        long start = Stopwatch.GetTimestamp();
        int b = _s.BatchSize, d = _train.FeatureLength, p = _comm.Size;
        bool classify = _s.Task.IsClassification();
        var x = AlignedTensors.Floats(_batch);
        for (int j = 0; j < b; j++)
        {
            // A shard's rows are this worker's own; otherwise the workers take turns along one shared order.
            int row = _train.IsShard ? order[inEpoch * b + j] : order[((long)inEpoch * b + j) * p + _comm.Rank];
            _train.Features.AsSpan((int)((long)row * d), d).CopyTo(x.Slice(j * d, d));
            if (classify) _classes[j] = _train.ClassLabels![row];
            else _targets[j] = _train.Targets![row];
        }
        double lossValue;
        long correct = 0;
        _overlap?.BeginStep(_step);
        using (torch.NewDisposeScope())
        {
            var output = _model.forward(DataParallelTrainer.OnDevice(_batch, _model));
            var (loss, correctTensor) = DataParallelTrainer.Loss(_s.Task, output, _classes, _targets);
            if (correctTensor is not null) correct = correctTensor.item<long>();
            _model.zero_grad();
            loss.backward();
            lossValue = loss.item<float>() * _s.LossScale;
        }
        GradientHookStats hook;
        double computeMs;
        if (_overlap is not null)
        {
            // Backward has exchanged most buckets already: what remains is waited for here, and counted as the exchange.
            computeMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            hook = _overlap.EndBackward();
        }
        else
        {
            _parameters.GatherGradients(_bucket);
            computeMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            hook = _hook.Reduce(_bucket, _step);
        }

        long updateStart = Stopwatch.GetTimestamp();
        // Every path meets here: the averaged gradient is the same on every worker, so all of them decide alike.
        bool update = true;
        if (NonFinite.FirstIndex(_bucket) is var bad and >= 0)
        {
            if (_s.NonFiniteGradients == NonFinitePolicy.Throw)
                throw NonFiniteGradientException.InAveragedGradient(_step, bad, _bucket[bad]);
            update = false;
            hook = hook with { Skipped = true };
        }
        if (update && _s.GradientClipNorm > 0)
        {
            float norm = TensorPrimitives.Norm<float>(_bucket);
            if (norm > _s.GradientClipNorm) TensorPrimitives.Multiply(_bucket, (float)(_s.GradientClipNorm / norm), _bucket);
        }
        if (update)
        {
            _optimizer.Step(_parameters, _bucket, _s.LearningRateAt(_step, _totalSteps));
            _parameters.Commit();
        }
        computeMs += Stopwatch.GetElapsedTime(updateStart).TotalMilliseconds;
        _step++;

        if (_s.ReplicaCheckInterval > 0 && _step % _s.ReplicaCheckInterval == 0) VerifyReplicas($"after step {_step}");
        double stepMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        if (_comm is IWatchedCommunicator watched) watched.AtStep(_step, stepMs / 1000);
        _totals.Add(lossValue, correct, b, computeMs, stepMs, hook);
        _compressTimes[_timedSteps++] = hook.CompressMs;
    }

    // Stops every worker at the same step when any asks (a one-value collective per step), after writing that step's
    // checkpoint when there is a directory.
    private void ThrowIfStopRequested()
    {
        if (_s.StopRequested is not { } stopRequested) return;
        _stopFlag[0] = stopRequested() ? 1 : 0;
        if (_comm.Size > 1) _comm.AllReduceSum<int>(_stopFlag);
        if (_stopFlag[0] == 0) return;
        string where = "";
        if (_s.CheckpointDirectory is { } dir && _step > 0)
        {
            SaveCheckpoint(_totals.AsSpan());
            where = $"; a checkpoint of step {_step} was written to '{dir}', from which a Fit with the same options resumes";
        }
        throw new OperationCanceledException($"Training was canceled at step {_step} of {_totalSteps}{where}.");
    }

    // Sums the workers' totals, compares the replicas and records the epoch's metrics (collective).
    private EpochMetrics CloseEpoch(int epoch, double seconds)
    {
        var totals = _totals.AsSpan();
        _comm.AllReduceSum<double>(totals);
        double[] medians = [_timedSteps > 0 ? Median(_compressTimes.AsSpan(0, _timedSteps)) : 0, _timedSteps > 0 ? 1 : 0];
        _comm.AllReduceSum<double>(medians);
        VerifyReplicas($"after epoch {epoch + 1}");
        var (validationLoss, validationAccuracy) = _validation is null
            ? (null, null)
            : DataParallelTrainer.Evaluate(_comm, _model, _validation, _s.Task, _s.LossScale);
        bool classify = _s.Task.IsClassification();
        var t = _totals;
        double workerSteps = t.Steps;
        var metrics = new EpochMetrics
        {
            Epoch = epoch + 1,
            Steps = (int)(workerSteps / _comm.Size),
            Loss = t.MeanLoss,
            Accuracy = classify ? t.Correct / t.Examples : null,
            ValidationLoss = validationLoss,
            ValidationAccuracy = classify ? validationAccuracy : null,
            AchievedDensity = t.Selected / workerSteps / _parameters.Length,
            AchievedOverTarget = t.AchievedOverTarget / workerSteps,
            BytesPerStep = t.BytesSent / workerSteps,
            DenseBytesPerStep = new CostModel(0, 0, _comm.Size).DenseBytesPerRank(_parameters.Length),
            ComputeMs = t.ComputeMs / workerSteps,
            CompressMs = t.CompressMs / workerSteps,
            CompressMsMedian = medians[1] > 0 ? medians[0] / medians[1] : 0,
            CommunicateMs = t.CommunicateMs / workerSteps,
            PredictedCommunicateMs = t.PredictedCommunicateMs / workerSteps,
            WaitMs = t.WaitMs / workerSteps,
            StepMs = t.StepMs / workerSteps,
            SparseFraction = t.SparseSteps / workerSteps,
            Stages = t.Stages / workerSteps,
            SkippedContributions = (int)t.SkippedContributions,
            Seconds = seconds,
        };
        _history.Epochs.Add(metrics);
        return metrics;
    }

    // The replicas hold the same parameters, and they are finite (a diverged run stops here instead of finishing silently).
    private void VerifyReplicas(string when)
    {
        _comm.VerifyAgreement($"the model parameters {when} (replicas diverged)", _parameters.Fingerprint());
        for (int i = 0; i < _parameters.Slices.Count; i++)
        {
            if (NonFinite.FirstIndex(_parameters.Values(i)) is var bad and >= 0)
            {
                throw new InvalidOperationException($"Parameter '{_parameters.Slices[i].Name}' holds a non-finite value at index {bad} "
                    + $"{when}: training diverged. Lower Options.LearningRate or set Options.GradientClipNorm.");
            }
        }
    }

    private bool CheckpointDue() => _s.CheckpointDirectory is not null && (_step % _s.CheckpointInterval == 0 || StopsAt(_step));

    private void SaveCheckpoint(ReadOnlySpan<double> totals)
        => TrainingCheckpoint.Save(_s.CheckpointDirectory!, _comm, _step, _fingerprint, KeptOptions, _parameters, _optimizer, _hook,
            _history, totals);

    // The options a resumed run must keep, by name.
    private Dictionary<string, string> KeptOptions => _s.AgreedOptions.Where(o => o.KeptOnResume).ToDictionary(o => o.Name, o => o.Value);

    private bool StopsBefore(long step) => _s.StopAfterSteps > 0 && step >= _s.StopAfterSteps;

    private bool StopsAt(long step) => _s.StopAfterSteps > 0 && step == _s.StopAfterSteps;

    // Sorts the values in place.
    private static double Median(Span<double> values)
    {
        values.Sort();
        int m = values.Length / 2;
        return values.Length % 2 == 1 ? values[m] : 0.5 * (values[m - 1] + values[m]);
    }

    private static int[] Permutation(int n, int seed)
    {
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        new Random(seed).Shuffle(order);
        return order;
    }

    public void Dispose()
    {
        _overlap?.Dispose();
        _hook.Dispose();
        _batch.Dispose();
    }
}
