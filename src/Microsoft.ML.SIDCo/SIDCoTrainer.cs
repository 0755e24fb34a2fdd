using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Kernels;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Training;
using TorchSharp;

namespace Microsoft.ML.SIDCo;

/// <summary>
/// Trains a TorchSharp model data-parallel with communication-efficient gradient exchange (SIDCo by
/// default) and returns a <see cref="SIDCoTransformer"/> that scores like any ML.NET trainer's model.
/// </summary>
/// <remarks>
/// Started plainly, it runs <see cref="Options.Workers"/> in-process workers; started by
/// <c>mpirun -np N</c>, each rank is one worker and trains on its shard of the same data. The same
/// user code runs either way, and the fitted transformer is identical on every worker.
/// Create it with <c>mlContext.Extensions.SIDCoTrainer(...)</c>.
/// </remarks>
public sealed partial class SIDCoTrainer : IEstimator<SIDCoTransformer>
{
    private readonly MLContext _ml;
    private readonly IHost _host;
    private readonly Func<bool> _hostCanceled;

    internal SIDCoTrainer(MLContext ml, Options options)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _ml = ml;
        _host = ((IHostEnvironment)ml).Register(nameof(SIDCoTrainer));
        _hostCanceled = MlNetHost.CancellationProbe(_host);
        TrainerOptions = options;
    }

    /// <summary>The options this trainer was created with.</summary>
    public Options TrainerOptions { get; }

    /// <summary>
    /// This process's rank among the processes of an <c>mpirun</c> job (0 .. <see cref="WorldSize"/> - 1), or 0 when the
    /// process was not started by <c>mpirun</c>. Every rank runs the same program and ends training with the same model.
    /// </summary>
    public static int Rank => MpiCommunicator.IsLaunchedByMpirun ? MpiCommunicator.LaunchedRank
        : MpiNetCommunicator.IsLaunchedByMpiexec ? MpiNetCommunicator.LaunchedRank : 0;

    /// <summary>Processes in the <c>mpirun</c> job, or 1 when the process was not started by <c>mpirun</c> (in-process workers are threads
    /// of this one process).</summary>
    public static int WorldSize => MpiCommunicator.IsLaunchedByMpirun ? MpiCommunicator.LaunchedWorldSize
        : MpiNetCommunicator.IsLaunchedByMpiexec ? MpiNetCommunicator.LaunchedWorldSize : 1;

    /// <summary>
    /// True on the one process that should print, evaluate and save: rank 0 under <c>mpirun</c>, and always outside it.
    /// <see cref="SIDCoTransformer.Save(string, bool)"/> writes only here unless told otherwise.
    /// </summary>
    public static bool IsPrimaryWorker => Rank == 0;

    /// <summary>Checks the input columns and returns the output schema (the columns the fitted transformer adds, with their
    /// annotations).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var o = TrainerOptions;
        if (Find(inputSchema, o.FeatureColumnName) is not { } features)
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"Feature column '{o.FeatureColumnName}' not found (Options.FeatureColumnName)");
        if (features.Kind != SchemaShape.Column.VectorKind.Vector || features.ItemType != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"Schema mismatch for feature column '{o.FeatureColumnName}': expected known-size vector of Single, got " +
                $"{Describe(features)} (Options.FeatureColumnName)");
        if (Find(inputSchema, o.LabelColumnName) is not { } label)
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"Label column '{o.LabelColumnName}' not found (Options.LabelColumnName)");
        bool ok = o.Task switch
        {
            // A SchemaShape carries a key's raw type (UInt32) and IsKey, not its cardinality.
            TrainingTask.MulticlassClassification => label.Kind == SchemaShape.Column.VectorKind.Scalar && label.IsKey,
            TrainingTask.BinaryClassification =>
                label.Kind == SchemaShape.Column.VectorKind.Scalar && !label.IsKey && label.ItemType == BooleanDataViewType.Instance,
            _ => label.Kind == SchemaShape.Column.VectorKind.Scalar && !label.IsKey && label.ItemType == NumberDataViewType.Single,
        };
        if (!ok) throw LabelMismatch(nameof(inputSchema), Describe(label));
        // Placeholder key values of the label's type stand in for the values, which only the data holds.
        KeyValues? keyValues = null;
        const int SchemaClasses = 2;
        if (o.Task == TrainingTask.MulticlassClassification && Find(label.Annotations, MlNetAnnotations.KeyValues) is { } kv)
            keyValues = KeyValues.Placeholder(kv.ItemType, SchemaClasses);
        // The output columns are exactly those of the scoring mapping the fitted transformer uses.
        return SIDCoTransformer.CreateScoringEstimator(_ml, o.FeatureColumnName, featureLength: 1, o.Task, SchemaClasses, keyValues,
            static (_, _) => { })
            .GetOutputSchema(inputSchema);
    }

    /// <summary>
    /// Trains on <paramref name="input"/> and returns the fitted transformer. <c>mlContext.CancelExecution()</c> stops it
    /// (as it stops ML.NET's trainers) with <see cref="OperationCanceledException"/>.
    /// </summary>
    public SIDCoTransformer Fit(IDataView input) => Fit(input, CancellationToken.None);

    /// <summary>
    /// Trains on <paramref name="input"/>; a cancel through <paramref name="cancellationToken"/> or <c>mlContext.CancelExecution()</c>
    /// on any worker stops every worker (every MPI rank) together within a step, writes a checkpoint when
    /// <see cref="Options.CheckpointDirectory"/> is set, and throws <see cref="OperationCanceledException"/>.
    /// </summary>
    public SIDCoTransformer Fit(IDataView input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = TrainerOptions;
        o.Validate();
        CheckSchema(input.Schema, nameof(input));
        if (o.ValidationData is not null) CheckSchema(o.ValidationData.Schema, nameof(o.ValidationData));
        if (o.CheckpointDirectory is { } checkpoints) CheckWritable(checkpoints);
        // SIGTERM (a scheduler preempting the job, or mpirun passing on its own) stops every worker at the next step with a
        // checkpoint, like a cancel, instead of ending the process mid-step.
        bool terminated = false;
        using var sigterm = OnSigterm(() => Volatile.Write(ref terminated, true));
        bool IsCanceled() => cancellationToken.IsCancellationRequested || _hostCanceled() || Volatile.Read(ref terminated);
        if (IsCanceled()) throw new OperationCanceledException("Training was canceled before it started.");
        TorchRuntime.EnsureLoaded();
        CheckDevice(o.Device);
        using var ch = _host.Start("Training");
        // One communicator for the whole Fit (sharded data is counted through it before training starts), over the MPI that
        // launched the process.
        using IWorldCommunicator? mpi = World(o.Transport);
        var data = ReadData(input, o, mpi, ch, IsCanceled);
        var model = o.Model ?? SIDCoModels.Mlp(Defaults.HiddenLayer);
        var (batchSize, stepsPerEpoch, epochs) = PlanRun(o, data, model, ch);

        using var pch = _host.StartProgressChannel("SIDCo training");
        TrainingProgress? last = null;
        pch.SetHeader(new ProgressHeader(["loss"], ["epochs", "steps"]), e =>
        {
            if (last is not { } p) return;
            e.SetProgress(0, p.Epoch, p.Epochs);
            e.SetProgress(1, p.StepInEpoch, p.StepsPerEpoch);
            e.SetMetric(0, p.Loss);
        });
        IGradientHook CreateHook()
        {
            var hookOptions = o.ToHookOptions(stepsPerEpoch);
            // One backend per worker: ILGPU backends hold device buffers and are not thread-safe.
            if (o.Kernels == KernelBackend.Ilgpu)
            {
                hookOptions.Kernels = IlgpuGradientKernels.CreatePreferred();
                hookOptions.OwnsKernels = true;
            }
            if (data.Hybrid && o.HierarchicalExchange) return new HierarchicalCompressionHook(hookOptions);
            // Nothing to compress: the dense hook, which can exchange during backward.
            if (o.Compressor == CompressorKind.None) return new DenseAllReduceHook(o.WirePrecision);
            return o.CompressPerBucket ? new BucketedCompressionHook(hookOptions, o.BucketBytes)
                : new CompressionHook(hookOptions);
        }
        void Report(TrainingProgress p)
        {
            last = p;
            if (p.EpochDone is { } m) ch.Info(MessageSensitivity.None, DescribeEpoch(p, m));
            ProgressReported?.Invoke(this, p);
        }
        var loaded = data.Loaded;
        var settings = o.ToTrainingSettings(model, o.Task.Outputs(loaded.Classes), epochs, batchSize,
            lossScale: loaded.Scale.Scale * loaded.Scale.Scale, o.GradientHook ?? CreateHook, Report,
            note => ch.Info(MessageSensitivity.None, note), IsCanceled);

        var result = mpi is null
            ? DataParallelTrainer.RunInProcess(loaded.Data, data.Validation, settings, o.Workers)
            : RunMpi(mpi, o, data, settings);
        var info = new SIDCoTransformer.TrainingInfo(o.Compressor.ToName(), o.TargetDensity, data.Workers,
            data.Hybrid ? $"{mpi!.Transport}+inprocess" : mpi?.Transport ?? "inprocess");
        return new SIDCoTransformer(_ml, result.Model, model, o.FeatureColumnName, loaded.Data.FeatureLength, o.Task, loaded.Classes,
            loaded.KeyValues, loaded.Scale, result.History, info);
    }

    // The MPI job's world, or null for in-process workers.
    private static IWorldCommunicator? World(TransportKind transport) => transport switch
    {
        TransportKind.Mpi => new MpiCommunicator(),
        TransportKind.MpiNet => new MpiNetCommunicator(),
        TransportKind.Auto when MpiCommunicator.IsLaunchedByMpirun => new MpiCommunicator(),
        TransportKind.Auto when MpiNetCommunicator.IsLaunchedByMpiexec => new MpiNetCommunicator(),
        _ => null,
    };

    // The training rows as this process holds them, with what the run is sized from.
    private sealed record TrainingInput(LoadedData Loaded, TrainingData? Validation, long Rows, int RowsPerWorker, int Workers,
        bool Hybrid, bool Sharded);

    // Reads the training (and validation) rows: all of them, or under MPI with sharding this rank's own, counted across ranks.
    private static TrainingInput ReadData(IDataView input, Options o, IWorldCommunicator? mpi, IChannel ch, Func<bool> isCanceled)
    {
        bool hybrid = mpi is not null && o.WorkersPerRank > 1;
        int workers = mpi is not null ? mpi.Size * o.WorkersPerRank : o.Workers;
        bool shard = mpi is { Size: > 1 } && !hybrid && (o.ShardData ?? IsLarge(input, o));
        // Ranks given different data views could decide differently, and would then make different collectives.
        mpi?.VerifyAgreement("whether the training data is sharded (Options.ShardData)", shard ? 1 : 0);
        var loaded = shard
            ? DataLoading.Read(input, o.FeatureColumnName, o.LabelColumnName, o.Task, scale: null, isCanceled, (mpi!.Rank, mpi.Size),
                targets => AgreedScale(mpi, targets))
            : DataLoading.Read(input, o.FeatureColumnName, o.LabelColumnName, o.Task, scale: null, isCanceled);
        var train = loaded.Data;
        if (loaded.SkippedRows > 0)
        {
            ch.Warning(MessageSensitivity.None, $"Skipped {loaded.SkippedRows} of {loaded.SkippedRows + train.Count} training rows "
                + $"{(shard ? "of this rank's shard " : "")}with a missing label or a NaN or infinite feature.");
        }
        long rows = train.Count;
        int perWorker = train.Count / Math.Max(1, workers);
        if (shard)
        {
            var counts = new long[mpi!.Size];
            mpi.AllGather<long>([train.Count], counts);
            rows = counts.Sum();
            perWorker = (int)counts.Min();
        }
        if (rows < workers)
        {
            throw new ArgumentOutOfRangeException(nameof(Options.Workers), workers, $"The training data has {rows} usable rows, fewer "
                + $"than the {workers} workers (Options.Workers, or the ranks of mpirun): every worker needs at least one row per step.");
        }
        TrainingData? validation = null;
        if (o.ValidationData is not null)
        {
            validation = DataLoading.Read(o.ValidationData, o.FeatureColumnName, o.LabelColumnName, o.Task, loaded.Scale, isCanceled).Data;
            if (validation.FeatureLength != train.FeatureLength)
            {
                throw new ArgumentException($"ValidationData has {validation.FeatureLength} features per row; the training data has "
                    + $"{train.FeatureLength}.", nameof(o.ValidationData));
            }
        }
        return new TrainingInput(loaded, validation, rows, perWorker, workers, hybrid, shard);
    }

    /// <summary>Sharding by default: when the rows' features would take more than this on every rank, or their count is unknown.</summary>
    internal const long ShardThresholdBytes = 256L << 20;

    // Whether the automatic choice shards this data.
    private static bool IsLarge(IDataView input, Options o)
    {
        if (input.GetRowCount() is not { } count) return true;
        int features = (input.Schema[o.FeatureColumnName].Type as VectorDataViewType)?.Size ?? 1;
        return count * features * (long)sizeof(float) > ShardThresholdBytes;
    }

    // The regression standardisation of targets spread over the ranks: every rank gets the same (collective).
    private static TargetScale AgreedScale(IWorldCommunicator mpi, float[] targets)
    {
        double sum = 0, squares = 0;
        foreach (float t in targets)
        {
            sum += t;
            squares += (double)t * t;
        }
        var moments = new[] { targets.Length, sum, squares };
        mpi.AllReduceSum<double>(moments);
        return TargetScale.FromMoments(moments[0], moments[1], moments[2]);
    }

    // Batch size, steps per epoch and epochs, with the warnings and the one-line summary they make.
    private static (int BatchSize, int StepsPerEpoch, int Epochs) PlanRun(Options o, TrainingInput data, ModelDefinition model, IChannel ch)
    {
        int batchSize = EffectiveBatchSize(o.BatchSize, data.RowsPerWorker);
        if (o.BatchSize is { } asked && batchSize != asked)
        {
            ch.Warning(MessageSensitivity.None, $"BatchSize {asked} x {data.Workers} workers exceeds the {data.Rows} training rows: "
                + $"each worker takes {batchSize} rows per step.");
        }
        // EffectiveBatchSize leaves every worker at least one batch, so an epoch has at least one step.
        int stepsPerEpoch =
            DataParallelTrainer.StepsPerEpoch(data.RowsPerWorker * data.Workers, data.Workers, batchSize, o.MaxStepsPerEpoch);
        int epochs = o.Epochs ?? AutomaticEpochs(stepsPerEpoch);
        string density = o.Density is { } d ? $"{d}" : $"auto ({o.TargetDensity}, at least {Defaults.MinimumSelected} entries)";
        string where = data.Hybrid ? "workers over MPI ranks" : data.Workers > 1 && data.Sharded ? "MPI ranks, each with its shard"
            : data.Workers > 1 && WorldSize > 1 && o.Transport != TransportKind.InProcess ? "MPI ranks" : "in-process workers";
        ch.Info(MessageSensitivity.None, $"SIDCo: {model.Descriptor}, {data.Rows} examples x {data.Loaded.Data.FeatureLength} features, "
            + $"{data.Workers} {where}, {epochs} epochs of {stepsPerEpoch} steps at {batchSize} rows per worker, "
            + $"compressor {o.Compressor.ToName()} at density {density}, exchange {o.ExchangeMode}");
        return (batchSize, stepsPerEpoch, epochs);
    }

    // One worker per rank (or several per rank), under the collective deadline.
    private static TrainingResult RunMpi(IWorldCommunicator mpi, Options o, TrainingInput data, TrainingSettings settings)
    {
        using var watched = o.CollectiveTimeoutSeconds > 0 && mpi.Size > 1 ? Watch(mpi, o) : null;
        ICommunicator world = (ICommunicator?)watched ?? mpi;
        try
        {
            return data.Hybrid
                ? DataParallelTrainer.RunHybrid(world, o.WorkersPerRank, data.Loaded.Data, data.Validation, settings)
                : DataParallelTrainer.RunWorker(world, data.Loaded.Data, data.Validation, settings);
        }
        catch (Exception e) when (mpi.Size > 1
            && e is not RankMismatchException and not CheckpointException and not ArgumentException and not OperationCanceledException)
        {
            // Peers may be blocked in a collective this rank will never join: end the whole job.
            Console.Error.WriteLine($"rank {mpi.Rank}: {e}");
            mpi.Abort(1);
            throw;
        }
    }

    // A CUDA device this process cannot use is refused before any data is read, with what to install.
    private static void CheckDevice(string device)
    {
        if (device == "cpu") return;
        int index = device == "cuda" ? 0 : int.Parse(device.AsSpan(5), CultureInfo.InvariantCulture);
        if (!torch.cuda.is_available())
        {
            throw new ArgumentException($"Options.Device is \"{device}\", but TorchSharp finds no CUDA device: this process loaded a "
                + "CPU build of libtorch, or the machine has no NVIDIA GPU and driver. Reference TorchSharp-cuda-linux (or "
                + "TorchSharp-cuda-windows) instead of TorchSharp-cpu or libtorch-cpu-<rid>, or set Options.Device = \"cpu\". "
                + "CUDA training is untested in this project.", nameof(Options.Device));
        }
        if (index >= torch.cuda.device_count())
        {
            throw new ArgumentException($"Options.Device is \"{device}\", but this machine has {torch.cuda.device_count()} CUDA "
                + "device(s).", nameof(Options.Device));
        }
    }

    private static PosixSignalRegistration? OnSigterm(Action handler)
    {
        try
        {
            return PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
            {
                c.Cancel = true;
                handler();
            });
        }
        catch (PlatformNotSupportedException)
        {
            return null; // no SIGTERM on this platform: nothing to catch
        }
    }

    // The collective deadline of an MPI job; the waiting ranks compare notes in the checkpoint directory (shared by the ranks,
    // as checkpoints need) or, without one, in a directory of this machine named after the job.
    private static WatchedCommunicator Watch(IWorldCommunicator comm, Options o)
    {
        // Open MPI names the job; an MPICH-family mpiexec starts a machine's ranks from one proxy process, its parent.
        string job = Environment.GetEnvironmentVariable("PMIX_NAMESPACE") ?? Environment.GetEnvironmentVariable("OMPI_MCA_ess_base_jobid")
            ?? ParentProcessId() ?? "job";
        string board = o.CheckpointDirectory is { } dir
            ? Path.Combine(dir, "watchdog")
            : Path.Combine(Path.GetTempPath(), $"sidco-watchdog-{job}");
        string advice = o.CheckpointDirectory is { } checkpoints
            ? $"A rerun with the same options resumes from the newest checkpoint in '{checkpoints}'."
            : "Set Options.CheckpointDirectory so that a rerun can resume.";
        return new WatchedCommunicator(comm, new StallSettings(TimeSpan.FromSeconds(o.CollectiveTimeoutSeconds), board, advice),
            comm.Abort, Console.Error);
    }

    private static string? ParentProcessId()
    {
        const string Status = "/proc/self/status", Field = "PPid:";
        if (!File.Exists(Status)) return null;
        return File.ReadLines(Status).FirstOrDefault(l => l.StartsWith(Field, StringComparison.Ordinal))?[Field.Length..].Trim();
    }

    // One line per epoch in the ML.NET log.
    private static string DescribeEpoch(TrainingProgress p, EpochMetrics m)
        => $"epoch {m.Epoch}/{p.Epochs}: loss {m.Loss:F4}"
            + (m.Accuracy is { } a ? $", accuracy {a:P2}" : "")
            + (m.ValidationAccuracy is { } v ? $", validation accuracy {v:P2}" : "")
            + $", density {m.AchievedDensity:G3}, {m.BytesPerStep / 1024:F1} KiB/step (dense {m.DenseBytesPerStep / 1024:F1}), "
            + $"compute {m.ComputeMs:F1} ms, compress {m.CompressMs:F2} ms, communicate {m.CommunicateMs:F2} ms";

    // A checkpoint directory that cannot be written would otherwise fail at the first checkpoint, after hours of training.
    private static void CheckWritable(string directory)
    {
        string probe = Path.Combine(directory, $".write-probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            Directory.CreateDirectory(directory);
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException(
                $"CheckpointDirectory '{directory}' cannot be written: {e.Message}", nameof(Options.CheckpointDirectory), e);
        }
    }

    /// <summary>
    /// The rows each worker takes per step: <paramref name="batchSize"/>, or fewer when a worker has fewer rows
    /// (<paramref name="rowsPerWorker"/>; a small data set trains instead of being refused).
    /// </summary>
    internal static int EffectiveBatchSize(int? batchSize, int rowsPerWorker)
    {
        int perWorker = Math.Max(1, rowsPerWorker);
        return batchSize is { } b ? Math.Min(b, perWorker) : Math.Clamp(perWorker / Defaults.MinimumStepsPerEpoch, 1, Defaults.BatchSize);
    }

    /// <summary>The automatic number of epochs: enough for <see cref="Defaults.MinimumSteps"/> steps, within the automatic
    /// bounds.</summary>
    internal static int AutomaticEpochs(int stepsPerEpoch)
        => (int)Math.Clamp((Defaults.MinimumSteps + stepsPerEpoch - 1) / stepsPerEpoch, Defaults.MinimumEpochs, Defaults.MaximumEpochs);

    /// <summary>Raised on worker 0's thread as training progresses (every few steps and at every epoch end).</summary>
    public event EventHandler<TrainingProgress>? ProgressReported;

    private static SchemaShape.Column? Find(SchemaShape shape, string name)
    {
        SchemaShape.Column? found = null;
        foreach (var c in shape) if (c.Name == name) found = c; // the last column of a name is the visible one
        return found;
    }

    // The same checks as GetOutputSchema, on a concrete schema (where vector sizes are known).
    private void CheckSchema(DataViewSchema schema, string argument)
    {
        var o = TrainerOptions;
        var f = schema.GetColumnOrNull(o.FeatureColumnName)
            ?? throw new ArgumentOutOfRangeException(argument,
            $"Feature column '{o.FeatureColumnName}' not found (Options.FeatureColumnName)");
        if (f.Type is not VectorDataViewType { IsKnownSize: true } v || v.ItemType != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(argument,
                $"Schema mismatch for feature column '{o.FeatureColumnName}': expected known-size vector of Single, got {f.Type} " +
                $"(Options.FeatureColumnName)");
        var l = schema.GetColumnOrNull(o.LabelColumnName)
            ?? throw new ArgumentOutOfRangeException(argument, $"Label column '{o.LabelColumnName}' not found (Options.LabelColumnName)");
        bool ok = o.Task switch
        {
            TrainingTask.MulticlassClassification => l.Type is KeyDataViewType,
            TrainingTask.BinaryClassification => l.Type == BooleanDataViewType.Instance,
            _ => l.Type == NumberDataViewType.Single,
        };
        if (!ok) throw LabelMismatch(argument, l.Type.ToString() ?? "unknown");
    }

    // What the label must be for the task, and what to change when it is not.
    private ArgumentOutOfRangeException LabelMismatch(string argument, string got)
    {
        var o = TrainerOptions;
        var (expected, advice) = o.Task switch
        {
            TrainingTask.MulticlassClassification =>
                ("Key", "Options.Task is MulticlassClassification: map labels to keys with " +
                "mlContext.Transforms.Conversion.MapValueToKey; for a Boolean label set Options.Task = TrainingTask.BinaryClassification"),
            TrainingTask.BinaryClassification =>
                ("Boolean",
                "Options.Task is BinaryClassification; for more than two classes use MulticlassClassification with a key label"),
            _ => ("Single", "Options.Task is Regression: convert the label with mlContext.Transforms.Conversion.ConvertType"),
        };
        return new ArgumentOutOfRangeException(argument,
            $"Schema mismatch for label column '{o.LabelColumnName}': expected {expected}, got {got} (Options.LabelColumnName; {advice})");
    }

    private static string Describe(SchemaShape.Column c) => c.Kind switch
    {
        SchemaShape.Column.VectorKind.Vector => $"known-size vector of {c.ItemType}",
        SchemaShape.Column.VectorKind.VariableVector => $"variable-size vector of {c.ItemType}",
        _ => c.IsKey ? "Key" : c.ItemType.ToString() ?? "unknown",
    };
}
