using System.Diagnostics;
using Microsoft.ML.SIDCo.Communication;
using TorchSharp;
using static TorchSharp.torch;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

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
        using var threads = TorchProcess.Enter(IntraOpThreads(settings, 1));
        var model = CreateReplicas(train.FeatureLength, settings, 1)[0];
        try
        {
            Place(model, DeviceFor(settings, settings.LocalRank));
            AlignWeights(comm, model);
            var (history, steps) = WorkerLoop(comm, model, train, validation, settings);
            Place(model, torch.CPU);
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
    public static TrainingResult RunHybrid(ICommunicator hosts, int workersPerHost, TrainingData train, TrainingData? validation,
        TrainingSettings settings)
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
    internal static int IntraOpThreads(TrainingSettings settings, int workersInProcess) =>
        IntraOpThreads(settings.NumberOfThreads, workersInProcess,
        Environment.ProcessorCount, settings.ProcessesOnMachine, Environment.GetEnvironmentVariable("OMP_NUM_THREADS"));

    /// <inheritdoc cref="IntraOpThreads(TrainingSettings, int)"/>
    internal static int IntraOpThreads(int? configured, int workersInProcess, int processorCount, int ranksOnMachine, string? ompNumThreads)
    {
        if (configured is int chosen) return chosen;
        if (int.TryParse(ompNumThreads, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture,
            out int fixedCount) && fixedCount > 0)
            return fixedCount;
        long sharing = (long)Math.Max(1, workersInProcess) * Math.Max(1, ranksOnMachine);
        return (int)Math.Max(1, processorCount / sharing);
    }

    // One replica and one thread per in-process worker; worker 0's model is the result, the others are released.
    private static TrainingResult RunThreads(int workers, TrainingData train, TrainingSettings settings,
        Func<InProcessCommunicator, nn.Module<Tensor, Tensor>, (TrainingHistory History, long Steps)> body)
    {
        using var threads = TorchProcess.Enter(IntraOpThreads(settings, workers));
        var models = CreateReplicas(train.FeatureLength, settings, workers);
        using var group = new InProcessGroup(workers);
        var results = new (TrainingHistory History, long Steps)[workers];
        try
        {
            group.Run(comm =>
            {
                Place(models[comm.Rank], DeviceFor(settings, comm.Rank));
                results[comm.Rank] = body(comm, models[comm.Rank]);
            });
            Place(models[0], torch.CPU);
        }
        catch
        {
            foreach (var m in models) m.Dispose();
            throw;
        }
        for (int w = 1; w < workers; w++) models[w].Dispose();
        return new TrainingResult(models[0], results[0].History, results[0].Steps);
    }

    // Moves a replica's parameters to the device it trains on (nothing to do on the CPU, where they are).
    private static void Place(nn.Module<Tensor, Tensor> model, Device device)
    {
        if (model.parameters().FirstOrDefault() is not { } first || first.device.type == device.type
            && first.device.index == device.index) return;
        model.to(device);
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
        var first = TorchProcess.BuildSeeded(s.Model, inputs, s.Outputs, s.Seed);
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

    /// <summary>Steps per epoch for <paramref name="examples"/> examples over <paramref name="workers"/> workers (the root sizes the run
    /// with it too).</summary>
    internal static int StepsPerEpoch(int examples, int workers, int batchSize, int maxStepsPerEpoch)
    {
        int steps = examples / workers / batchSize;
        return maxStepsPerEpoch > 0 ? Math.Min(steps, maxStepsPerEpoch) : steps;
    }

    private static (TrainingHistory, long) WorkerLoop(ICommunicator comm, nn.Module<Tensor, Tensor> model, TrainingData train,
        TrainingData? validation, TrainingSettings s)
    {
        using var run = new WorkerRun(comm, model, train, validation, s);
        return run.Run();
    }

    /// <summary>
    /// The task's loss on a batch and, for classification, the count of correct predictions: cross-entropy over the class
    /// logits, binary cross-entropy on the single logit (a logit above 0 predicts true), mean squared error for regression.
    /// </summary>
    internal static (Tensor Loss, Tensor? Correct) Loss(TrainingTask task, Tensor output, long[] classes, float[] targets)
    {
        switch (task)
        {
            case TrainingTask.MulticlassClassification:
                {
                    var y = torch.tensor(classes, device: output.device);
                    return (nn.functional.cross_entropy(output, y), output.argmax(1).eq(y).sum());
                }
            case TrainingTask.BinaryClassification:
                {
                    var y = torch.tensor(classes, device: output.device);
                    var logit = output.view(-1);
                    return (nn.functional.binary_cross_entropy_with_logits(logit, y.to_type(ScalarType.Float32)),
                        logit.gt(0).eq(y.gt(0)).sum());
                }
            default:
                return (nn.functional.mse_loss(output.view(-1), torch.tensor(targets, device: output.device)), null);
        }
    }

    /// <summary><paramref name="input"/> on the device of <paramref name="model"/>'s parameters (itself when that is the CPU).</summary>
    internal static Tensor OnDevice(Tensor input, nn.Module<Tensor, Tensor> model)
    {
        var device = model.parameters().FirstOrDefault()?.device;
        return device is null || device.type == DeviceType.CPU ? input : input.to(device);
    }

    /// <summary>
    /// The device worker <paramref name="localIndex"/> of this machine trains on: the settings' device, where <c>cuda</c> alone
    /// means one GPU per worker of the machine (<c>cuda:{local index}</c>).
    /// </summary>
    internal static Device DeviceFor(TrainingSettings settings, int localIndex)
        => settings.Device == "cuda" ? torch.device(DeviceType.CUDA, localIndex) : torch.device(settings.Device);

    /// <summary>Loss and accuracy on <paramref name="data"/>, each worker scoring its share (collective).</summary>
    internal static (double? Loss, double? Accuracy) Evaluate(ICommunicator comm, nn.Module<Tensor, Tensor> model, TrainingData data,
        TrainingTask task, double lossScale)
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
                for (int j = 0; j < n; j++) Array.Copy(data.Features, (long)rows[start + j] * data.FeatureLength, x,
                    (long)j * data.FeatureLength, data.FeatureLength);
                using var scope = torch.NewDisposeScope();
                var output = model.forward(OnDevice(AlignedTensors.From(x, n, data.FeatureLength), model));
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
}

/// <summary>
/// TorchSharp's process-wide state, shared by every Fit of the process: the random generator that initialises a model
/// and the intra-op thread count. Concurrent Fits initialise one at a time, so each gets the model its seed gives; and
/// they run with one thread count, since a Fit that changed it would change the other's arithmetic (a matrix product's
/// sums follow its threads).
/// </summary>
internal static class TorchProcess
{
    private static readonly object s_gate = new();
    private static int s_running;
    private static int s_threads;

    /// <summary>Builds <paramref name="model"/> from the global generator seeded with <paramref name="seed"/>, atomically.</summary>
    public static nn.Module<Tensor, Tensor> BuildSeeded(Models.ModelDefinition model, int inputs, int outputs, int seed)
    {
        lock (s_gate)
        {
            torch.manual_seed(seed);
            return model.Build(inputs, outputs);
        }
    }

    /// <summary>
    /// Starts a Fit that runs with <paramref name="threads"/> intra-op threads; refused while another Fit of this process
    /// runs with a different count. Dispose the result when the Fit ends.
    /// </summary>
    public static IDisposable Enter(int threads)
    {
        lock (s_gate)
        {
            if (s_running > 0 && s_threads != threads)
            {
                throw new InvalidOperationException(
                    $"Another SIDCoTrainer.Fit in this process runs with {s_threads} TorchSharp threads; this one would use {threads}, "
                    + "and a process has one thread count for all its Fits. Set Options.NumberOfThreads to the same value on both, "
                    + "or run them one after the other.");
            }
            if (s_running == 0)
            {
                torch.set_num_threads(threads);
                s_threads = threads;
            }
            s_running++;
            return new Exit();
        }
    }

    private sealed class Exit : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 1) return;
            lock (s_gate) s_running--;
        }
    }
}
