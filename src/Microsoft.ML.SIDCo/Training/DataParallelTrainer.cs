using System.Diagnostics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using Microsoft.ML.SIDCo.Communication;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>The result of a training run: worker 0's model (identical on every worker) and the history.</summary>
internal sealed class TrainingResult(nn.Module<Tensor, Tensor> model, TrainingHistory history, long steps) : IDisposable
{
    /// <summary>The trained module.</summary>
    public nn.Module<Tensor, Tensor> Model { get; } = model;

    /// <summary>Per-epoch metrics.</summary>
    public TrainingHistory History { get; } = history;

    /// <summary>Steps completed in total.</summary>
    public long Steps { get; } = steps;

    /// <summary>Releases the module's native memory.</summary>
    public void Dispose() => Model.Dispose();
}

/// <summary>
/// Data-parallel training on TorchSharp: every worker holds a replica, trains on its shard, and
/// between backward and the optimizer step runs the gradient hook, which leaves the same averaged
/// gradient on every worker; replicas therefore stay bitwise identical (checked by fingerprint).
/// </summary>
internal static class DataParallelTrainer
{
    /// <summary>Trains with <paramref name="workers"/> in-process workers (threads).</summary>
    public static TrainingResult RunInProcess(TrainingData train, TrainingData? validation, TrainingSettings settings, int workers)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        return RunThreads(workers, train, settings, (comm, model) => WorkerLoop(comm, model, train, validation, settings));
    }

    /// <summary>Trains as one worker of <paramref name="comm"/> (e.g. an MPI rank). Collective: every worker calls it.</summary>
    public static TrainingResult RunWorker(ICommunicator comm, TrainingData train, TrainingData? validation, TrainingSettings settings)
    {
        ArgumentNullException.ThrowIfNull(comm);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(settings);
        torch.set_num_threads(IntraOpThreads(settings, 1));
        var model = CreateReplicas(train.FeatureLength, settings, 1)[0];
        try
        {
            AlignWeights(comm, model);
            var (history, steps) = WorkerLoop(comm, model, train, validation, settings);
            return new TrainingResult(model, history, steps);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Trains with <paramref name="workersPerHost"/> in-process workers inside each rank of <paramref name="hosts"/>
    /// (e.g. one MPI rank per machine, one thread per device): hosts x workers replicas in all. Collective over <paramref name="hosts"/>.
    /// </summary>
    public static TrainingResult RunHybrid(ICommunicator hosts, int workersPerHost, TrainingData train, TrainingData? validation, TrainingSettings settings)
    {
        ArgumentNullException.ThrowIfNull(hosts);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentOutOfRangeException.ThrowIfLessThan(workersPerHost, 1);
        return RunThreads(workersPerHost, train, settings, (local, model) =>
        {
            var comm = new HybridCommunicator(local, hosts);
            AlignWeights(comm, model);
            return WorkerLoop(comm, model, train, validation, settings);
        });
    }

    /// <summary>
    /// TorchSharp intra-op threads for a process with <paramref name="workersInProcess"/> workers: the configured
    /// count (<see cref="TrainingSettings.NumberOfThreads"/>) when set; else <c>OMP_NUM_THREADS</c> when set to a positive
    /// number (as with torchrun); else the machine's cores shared by every worker on it (this process's workers times
    /// <see cref="TrainingSettings.ProcessesOnMachine"/>), at least one. Without the sharing, four ranks on one machine
    /// would each start a thread per core and preempt one another.
    /// </summary>
    internal static int IntraOpThreads(TrainingSettings settings, int workersInProcess) => IntraOpThreads(settings.NumberOfThreads, workersInProcess,
        Environment.ProcessorCount, settings.ProcessesOnMachine, Environment.GetEnvironmentVariable("OMP_NUM_THREADS"));

    /// <inheritdoc cref="IntraOpThreads(TrainingSettings, int)"/>
    internal static int IntraOpThreads(int? configured, int workersInProcess, int processorCount, int ranksOnMachine, string? ompNumThreads)
    {
        if (configured is int chosen) return chosen;
        if (int.TryParse(ompNumThreads, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int fixedCount) && fixedCount > 0)
            return fixedCount;
        long sharing = (long)Math.Max(1, workersInProcess) * Math.Max(1, ranksOnMachine);
        return (int)Math.Max(1, processorCount / sharing);
    }

    // One replica and one thread per in-process worker; worker 0's model is the result, the others are released.
    private static TrainingResult RunThreads(int workers, TrainingData train, TrainingSettings settings,
        Func<InProcessCommunicator, nn.Module<Tensor, Tensor>, (TrainingHistory History, long Steps)> body)
    {
        torch.set_num_threads(IntraOpThreads(settings, workers));
        var models = CreateReplicas(train.FeatureLength, settings, workers);
        using var group = new InProcessGroup(workers);
        var results = new (TrainingHistory History, long Steps)[workers];
        try
        {
            group.Run(comm => results[comm.Rank] = body(comm, models[comm.Rank]));
        }
        catch
        {
            foreach (var m in models) m.Dispose();
            throw;
        }
        for (int w = 1; w < workers; w++) models[w].Dispose();
        return new TrainingResult(models[0], results[0].History, results[0].Steps);
    }

    // Same seed gives the same initialisation everywhere; broadcasting rank 0's weights makes it certain.
    private static void AlignWeights(ICommunicator comm, nn.Module<Tensor, Tensor> model)
    {
        var ps = new ParameterSet(model);
        comm.VerifyAgreement("the model layout", ps.LayoutFingerprint());
        var flat = new float[ps.Length];
        ps.CopyTo(flat);
        comm.Broadcast<float>(flat, 0);
        ps.CopyFrom(flat);
    }

    private static nn.Module<Tensor, Tensor>[] CreateReplicas(int inputs, TrainingSettings s, int count)
    {
        torch.manual_seed(s.Seed);
        var first = s.Model.Build(inputs, s.Outputs);
        var models = new nn.Module<Tensor, Tensor>[count];
        models[0] = first;
        var ps0 = new ParameterSet(first);
        var flat = new float[ps0.Length];
        ps0.CopyTo(flat);
        for (int w = 1; w < count; w++)
        {
            models[w] = s.Model.Build(inputs, s.Outputs);
            new ParameterSet(models[w]).CopyFrom(flat);
        }
        return models;
    }

    // Sorts the values in place.
    private static double Median(Span<double> values)
    {
        values.Sort();
        int m = values.Length / 2;
        return values.Length % 2 == 1 ? values[m] : 0.5 * (values[m - 1] + values[m]);
    }

    /// <summary>Steps per epoch for <paramref name="examples"/> examples over <paramref name="workers"/> workers.</summary>
    public static int StepsPerEpoch(int examples, int workers, TrainingSettings s)
    {
        int steps = examples / workers / s.BatchSize;
        return s.MaxStepsPerEpoch > 0 ? Math.Min(steps, s.MaxStepsPerEpoch) : steps;
    }

    private static (TrainingHistory, long) WorkerLoop(ICommunicator comm, nn.Module<Tensor, Tensor> model, TrainingData train, TrainingData? validation, TrainingSettings s)
    {
        int p = comm.Size, rank = comm.Rank, b = s.BatchSize, d = train.FeatureLength;
        var ps = new ParameterSet(model);
        long fingerprint = s.Fingerprint(p);
        comm.VerifyAgreement("the training options", fingerprint);
        comm.VerifyAgreement("the number of training examples", train.Count);
        int stepsPerEpoch = StepsPerEpoch(train.Count, p, s);
        if (stepsPerEpoch < 1) throw new ArgumentOutOfRangeException(nameof(s.BatchSize), s.BatchSize, $"BatchSize {b} x {p} workers exceeds the {train.Count} training examples: no full step fits in an epoch.");
        long totalSteps = (long)stepsPerEpoch * s.Epochs;

        using var hook = s.HookFactory();
        hook.Initialize(new GradientHookContext(comm, ps.Length, ps.Slices));
        var optimizer = FlatOptimizer.Create(s.Optimizer, ps.Length, s.Momentum, s.Nesterov, s.WeightDecay, s.AdamBeta1, s.AdamBeta2, s.AdamEpsilon);
        var history = new TrainingHistory();
        long step = 0;
        // [loss, correct, examples, compute, compress, communicate, predicted, selected, bytes, quality, sparse steps, skipped, steps, step ms, stages, wait]:
        // this worker's running totals of the epoch in progress (a checkpoint keeps them, so a resumed epoch reports all its steps).
        var acc = new double[EpochTotalsLength];
        if (s.CheckpointDirectory is { } dir && s.Resume && TrainingCheckpoint.TryLoad(dir, comm, fingerprint, ps, optimizer, hook, acc.Length) is { } resumed)
        {
            (step, history, var totals) = resumed;
            if (step % stepsPerEpoch != 0) totals.CopyTo(acc, 0);
        }

        var bucket = new float[ps.Length];
        var compressTimes = new double[stepsPerEpoch]; // this epoch's per-step compress times, for their median
        using var batch = torch.empty([b, d], ScalarType.Float32); // one aligned input tensor, refilled every step
        var yClass = new long[b];
        var yReal = new float[b];
        double denseBytes = new CostModel(0, 0, p).DenseBytesPerRank(ps.Length);
        bool classify = s.Task.IsClassification();
        var stopFlag = new int[1];

        for (int epoch = (int)(step / stepsPerEpoch); epoch < s.Epochs; epoch++)
        {
            if (s.StopAfterSteps > 0 && step >= s.StopAfterSteps) break;
            var order = Permutation(train.Count, s.Seed * 7919 + epoch);
            var epochWatch = Stopwatch.StartNew();
            if (step % stepsPerEpoch == 0) Array.Clear(acc);
            int timedSteps = 0;
            model.train();
            for (int inEpoch = (int)(step % stepsPerEpoch); inEpoch < stepsPerEpoch; inEpoch++)
            {
                if (s.StopAfterSteps > 0 && step >= s.StopAfterSteps) break;
                if (s.StopRequested is { } stopRequested && StopAgreed(comm, stopRequested, stopFlag))
                {
                    // Every worker reaches this at the same step, so the checkpoint (collective) is consistent.
                    string where = "";
                    if (s.CheckpointDirectory is { } sdir && step > 0)
                    {
                        TrainingCheckpoint.Save(sdir, comm, step, fingerprint, ps, optimizer, hook, history, acc);
                        where = $"; a checkpoint of step {step} was written to '{sdir}', from which a Fit with the same options resumes";
                    }
                    throw new OperationCanceledException($"Training was canceled at step {step} of {totalSteps}{where}.");
                }
                long stepStart = Stopwatch.GetTimestamp();
                var x = AlignedTensors.Floats(batch);
                for (int j = 0; j < b; j++)
                {
                    int row = order[((long)inEpoch * b + j) * p + rank];
                    train.Features.AsSpan((int)((long)row * d), d).CopyTo(x.Slice(j * d, d));
                    if (classify) yClass[j] = train.ClassLabels![row]; else yReal[j] = train.Targets![row];
                }
                double lossValue; long correct = 0;
                using (var scope = torch.NewDisposeScope())
                {
                    var output = model.forward(batch);
                    var (loss, correctTensor) = Loss(s.Task, output, yClass, yReal);
                    if (correctTensor is not null) correct = correctTensor.item<long>();
                    model.zero_grad();
                    loss.backward();
                    lossValue = loss.item<float>() * s.LossScale;
                }
                ps.GatherGradients(bucket);
                double computeMs = Stopwatch.GetElapsedTime(stepStart).TotalMilliseconds;

                var hs = hook.Reduce(bucket, step);

                long updateStart = Stopwatch.GetTimestamp();
                if (s.GradientClipNorm > 0)
                {
                    float norm = TensorPrimitives.Norm<float>(bucket);
                    if (norm > s.GradientClipNorm) TensorPrimitives.Multiply(bucket, (float)(s.GradientClipNorm / norm), bucket);
                }
                optimizer.Step(ps, bucket, s.LearningRateAt(step, totalSteps));
                computeMs += Stopwatch.GetElapsedTime(updateStart).TotalMilliseconds;
                step++;

                if (s.ReplicaCheckInterval > 0 && step % s.ReplicaCheckInterval == 0)
                    comm.VerifyAgreement($"the model parameters after step {step} (replicas diverged)", ps.Fingerprint());

                acc[0] += lossValue * b; acc[1] += correct; acc[2] += b; acc[3] += computeMs; acc[4] += hs.CompressMs; acc[5] += hs.CommunicateMs;
                acc[6] += hs.PredictedCommunicateMs; acc[7] += hs.Selected; acc[8] += hs.BytesSent; acc[9] += hs.AchievedOverTarget;
                acc[10] += hs.Mode == ExchangeMode.Sparse ? 1 : 0; acc[11] += hs.Skipped ? 1 : 0; acc[12] += 1;
                acc[13] += Stopwatch.GetElapsedTime(stepStart).TotalMilliseconds;
                acc[14] += hs.Stages;
                acc[15] += hs.WaitMs;
                compressTimes[timedSteps++] = hs.CompressMs;
                // A checkpoint is due every CheckpointInterval steps and where StopAfterSteps ends the run (so the next run
                // resumes there); one due on an epoch's last step is written after the epoch's metrics join the history.
                if (s.CheckpointDirectory is { } cdir && (step % s.CheckpointInterval == 0 || StopsHere(s, step)) && inEpoch < stepsPerEpoch - 1)
                    TrainingCheckpoint.Save(cdir, comm, step, fingerprint, ps, optimizer, hook, history, acc);
                if (rank == 0 && s.Progress is { } progress && (inEpoch % 10 == 9 || inEpoch == stepsPerEpoch - 1))
                    progress(new TrainingProgress(epoch, s.Epochs, inEpoch + 1, stepsPerEpoch, acc[0] / acc[2], null));
            }
            if (acc[12] == 0) break;
            comm.AllReduceSum<double>(acc);
            double[] medians = [timedSteps > 0 ? Median(compressTimes.AsSpan(0, timedSteps)) : 0, timedSteps > 0 ? 1 : 0];
            comm.AllReduceSum<double>(medians);
            comm.VerifyAgreement($"the model parameters after epoch {epoch + 1} (replicas diverged)", ps.Fingerprint());
            double workerSteps = acc[12];
            var (vLoss, vAcc) = validation is null ? (null, null) : Evaluate(comm, model, validation, s.Task, s.LossScale);
            var metrics = new EpochMetrics
            {
                Epoch = epoch + 1,
                Steps = (int)(workerSteps / p),
                Loss = acc[0] / acc[2],
                Accuracy = classify ? acc[1] / acc[2] : null,
                ValidationLoss = vLoss,
                ValidationAccuracy = classify ? vAcc : null,
                AchievedDensity = acc[7] / workerSteps / ps.Length,
                AchievedOverTarget = acc[9] / workerSteps,
                BytesPerStep = acc[8] / workerSteps,
                DenseBytesPerStep = denseBytes,
                ComputeMs = acc[3] / workerSteps,
                CompressMs = acc[4] / workerSteps,
                CompressMsMedian = medians[1] > 0 ? medians[0] / medians[1] : 0,
                CommunicateMs = acc[5] / workerSteps,
                PredictedCommunicateMs = acc[6] / workerSteps,
                WaitMs = acc[15] / workerSteps,
                StepMs = acc[13] / workerSteps,
                SparseFraction = acc[10] / workerSteps,
                Stages = acc[14] / workerSteps,
                SkippedContributions = (int)acc[11],
                Seconds = epochWatch.Elapsed.TotalSeconds,
            };
            history.Epochs.Add(metrics);
            if (s.CheckpointDirectory is { } edir && (step % s.CheckpointInterval == 0 || StopsHere(s, step)) && step % stepsPerEpoch == 0)
                TrainingCheckpoint.Save(edir, comm, step, fingerprint, ps, optimizer, hook, history, new double[acc.Length]);
            if (rank == 0) s.Progress?.Invoke(new TrainingProgress(epoch, s.Epochs, stepsPerEpoch, stepsPerEpoch, metrics.Loss, metrics));
        }
        model.eval();
        return (history, step);
    }

    /// <summary>How many running totals a worker keeps per epoch (and a checkpoint holds per rank).</summary>
    internal const int EpochTotalsLength = 16;

    private static bool StopsHere(TrainingSettings s, long step) => s.StopAfterSteps > 0 && step == s.StopAfterSteps;

    // True when any worker asks to stop; collective (one int) when there are several workers.
    private static bool StopAgreed(ICommunicator comm, Func<bool> stopRequested, int[] flag)
    {
        flag[0] = stopRequested() ? 1 : 0;
        if (comm.Size > 1) comm.AllReduceSum<int>(flag);
        return flag[0] > 0;
    }

    /// <summary>
    /// The task's loss on a batch and, for classification, the count of correct predictions: cross-entropy over the class
    /// logits, binary cross-entropy on the single logit (a logit above 0 predicts true), mean squared error for regression.
    /// </summary>
    private static (Tensor Loss, Tensor? Correct) Loss(TrainingTask task, Tensor output, long[] classes, float[] targets)
    {
        switch (task)
        {
            case TrainingTask.MulticlassClassification:
            {
                var y = torch.tensor(classes);
                return (nn.functional.cross_entropy(output, y), output.argmax(1).eq(y).sum());
            }
            case TrainingTask.BinaryClassification:
            {
                var y = torch.tensor(classes);
                var logit = output.view(-1);
                return (nn.functional.binary_cross_entropy_with_logits(logit, y.to_type(ScalarType.Float32)), logit.gt(0).eq(y.gt(0)).sum());
            }
            default:
                return (nn.functional.mse_loss(output.view(-1), torch.tensor(targets)), null);
        }
    }

    /// <summary>Loss and accuracy on <paramref name="data"/>, each worker scoring its share (collective).</summary>
    private static (double? Loss, double? Accuracy) Evaluate(ICommunicator comm, nn.Module<Tensor, Tensor> model, TrainingData data, TrainingTask task, double lossScale)
    {
        bool classify = task.IsClassification();
        const int Batch = 500;
        var sums = new double[3];
        model.eval();
        using (torch.no_grad())
        {
            var rows = Enumerable.Range(0, data.Count).Where(i => i % comm.Size == comm.Rank).ToArray();
            for (int start = 0; start < rows.Length; start += Batch)
            {
                int n = Math.Min(Batch, rows.Length - start);
                var x = new float[n * data.FeatureLength];
                for (int j = 0; j < n; j++) Array.Copy(data.Features, (long)rows[start + j] * data.FeatureLength, x, (long)j * data.FeatureLength, data.FeatureLength);
                using var scope = torch.NewDisposeScope();
                var output = model.forward(AlignedTensors.From(x, n, data.FeatureLength));
                var slice = rows.AsSpan(start, n);
                long[] classes = classify ? Gather(slice, data.ClassLabels!, c => (long)c) : [];
                float[] targets = classify ? [] : Gather(slice, data.Targets!, t => t);
                var (loss, correct) = Loss(task, output, classes, targets);
                sums[0] += loss.item<float>() * lossScale * n;
                if (correct is not null) sums[1] += correct.item<long>();
                sums[2] += n;
            }
        }
        model.train();
        comm.AllReduceSum<double>(sums);
        return (sums[0] / sums[2], classify ? sums[1] / sums[2] : null);
    }

    private static TOut[] Gather<TIn, TOut>(ReadOnlySpan<int> rows, TIn[] source, Func<TIn, TOut> convert)
    {
        var result = new TOut[rows.Length];
        for (int i = 0; i < rows.Length; i++) result[i] = convert(source[rows[i]]);
        return result;
    }

    private static int[] Permutation(int n, int seed)
    {
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        new Random(seed).Shuffle(order);
        return order;
    }
}
