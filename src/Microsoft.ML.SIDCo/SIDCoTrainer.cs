using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Kernels;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Training;

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

    internal SIDCoTrainer(MLContext ml, Options options)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _ml = ml;
        _host = ((IHostEnvironment)ml).Register(nameof(SIDCoTrainer));
        TrainerOptions = options;
    }

    /// <summary>The options this trainer was created with.</summary>
    public Options TrainerOptions { get; }

    /// <summary>Checks the input columns and returns the output schema (Score, and PredictedLabel for classification).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var o = TrainerOptions;
        if (Find(inputSchema, o.FeatureColumnName) is not { } features)
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Feature column '{o.FeatureColumnName}' not found");
        if (features.Kind != SchemaShape.Column.VectorKind.Vector || features.ItemType != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Schema mismatch for feature column '{o.FeatureColumnName}': expected known-size vector of Single, got {Describe(features)}");
        if (Find(inputSchema, o.LabelColumnName) is not { } label)
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Label column '{o.LabelColumnName}' not found");
        if (o.Task == TrainingTask.MulticlassClassification)
        {
            // A SchemaShape carries a key's raw type (UInt32) and IsKey, not its cardinality.
            if (label.Kind != SchemaShape.Column.VectorKind.Scalar || !label.IsKey)
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Schema mismatch for label column '{o.LabelColumnName}': expected Key, got {Describe(label)} (map labels to keys with mlContext.Transforms.Conversion.MapValueToKey)");
        }
        else if (label.Kind != SchemaShape.Column.VectorKind.Scalar || label.IsKey || label.ItemType != NumberDataViewType.Single)
        {
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Schema mismatch for label column '{o.LabelColumnName}': expected Single, got {Describe(label)}");
        }
        // The output columns are exactly those of the scoring mapping the fitted transformer uses.
        return SIDCoTransformer.CreateScoringEstimator(_ml, o.FeatureColumnName, featureLength: 1, o.Task, classes: 2, null, static (_, _) => { })
            .GetOutputSchema(inputSchema);
    }

    /// <summary>Trains on <paramref name="input"/> and returns the fitted transformer.</summary>
    public SIDCoTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = TrainerOptions;
        o.Validate();
        CheckSchema(input.Schema, nameof(input));
        var (train, classes, keyValues) = DataLoading.Read(input, o.FeatureColumnName, o.LabelColumnName, o.Task);
        TrainingData? validation = null;
        if (o.ValidationData is not null)
        {
            CheckSchema(o.ValidationData.Schema, nameof(o.ValidationData));
            validation = DataLoading.Read(o.ValidationData, o.FeatureColumnName, o.LabelColumnName, o.Task).Data;
            if (validation.FeatureLength != train.FeatureLength)
                throw new ArgumentException($"ValidationData has {validation.FeatureLength} features per row; the training data has {train.FeatureLength}.", nameof(o.ValidationData));
        }

        bool useMpi = o.Transport == TransportKind.Mpi || (o.Transport == TransportKind.Auto && MpiCommunicator.IsLaunchedByMpirun);
        bool hybrid = useMpi && o.WorkersPerRank > 1;
        int workers = useMpi ? MpiCommunicator.LaunchedWorldSize * o.WorkersPerRank : o.Workers;
        var model = o.Model ?? SIDCoModels.Mlp(128);

        using var ch = _host.Start("Training");
        using var pch = _host.StartProgressChannel("SIDCo training");
        TrainingProgress? last = null;
        pch.SetHeader(new ProgressHeader(["loss"], ["epochs", "steps"]), e =>
        {
            if (last is { } p) { e.SetProgress(0, p.Epoch, p.Epochs); e.SetProgress(1, p.StepInEpoch, p.StepsPerEpoch); e.SetMetric(0, p.Loss); }
        });
        ch.Info(MessageSensitivity.None, $"SIDCo: {model.Descriptor}, {train.Count} examples x {train.FeatureLength} features, {workers} {(useMpi ? "MPI ranks" : "in-process workers")}, compressor {o.Compressor.ToName()} at density {o.Density}, exchange {o.ExchangeMode}");
        int stepsPerEpoch = Math.Max(1, train.Count / workers / o.BatchSize);
        if (o.MaxStepsPerEpoch > 0) stepsPerEpoch = Math.Min(stepsPerEpoch, o.MaxStepsPerEpoch);
        // With momentum correction the hook carries the momentum (for compressed exchanges; dense keeps it too).
        bool momentumCorrection = o.MomentumCorrection && o.GradientHook is null && o.Momentum > 0;
        var settings = new TrainingSettings
        {
            Model = model, Task = o.Task, Outputs = o.Task == TrainingTask.Regression ? 1 : classes, Epochs = o.Epochs, BatchSize = o.BatchSize,
            Optimizer = o.Optimizer, LearningRate = o.LearningRate, Momentum = momentumCorrection ? 0 : o.Momentum, Nesterov = o.Nesterov, WeightDecay = o.WeightDecay,
            Schedule = o.Schedule, LearningRateWarmupSteps = o.LearningRateWarmupSteps, GradientClipNorm = o.GradientClipNorm, Seed = o.Seed,
            CheckpointDirectory = o.CheckpointDirectory, CheckpointInterval = o.CheckpointInterval, ReplicaCheckInterval = o.ReplicaCheckInterval,
            MaxStepsPerEpoch = o.MaxStepsPerEpoch, StopAfterSteps = o.StopAfterSteps, NumberOfThreads = o.NumberOfThreads,
            HookFactory = o.GradientHook ?? (() =>
            {
                var hookOptions = new CompressionHookOptions
                {
                    Compressor = o.Compressor, Compression = o.ToCompressorOptions(), ErrorFeedback = o.ErrorFeedback, Exchange = o.ExchangeMode,
                    HalfPrecisionValues = o.HalfPrecisionValues, DenseWarmupSteps = o.DenseWarmupSteps + (long)o.DenseWarmupEpochs * stepsPerEpoch,
                    DensityWarmupSteps = o.DensityWarmupSteps, DensityWarmupStart = o.DensityWarmupStart,
                    MomentumCorrection = momentumCorrection ? o.Momentum : 0,
                    // One backend per worker: ILGPU backends hold device buffers and are not thread-safe.
                    Kernels = o.Kernels == KernelBackend.Ilgpu ? IlgpuGradientKernels.CreatePreferred() : null, OwnsKernels = o.Kernels == KernelBackend.Ilgpu,
                };
                return hybrid && o.HierarchicalExchange ? new HierarchicalCompressionHook(hookOptions) : new CompressionHook(hookOptions);
            }),
            Progress = p =>
            {
                last = p;
                if (p.EpochDone is { } m)
                    ch.Info(MessageSensitivity.None, $"epoch {m.Epoch}/{p.Epochs}: loss {m.Loss:F4}" + (m.Accuracy is { } a ? $", accuracy {a:P2}" : "") + (m.ValidationAccuracy is { } v ? $", validation accuracy {v:P2}" : "")
                        + $", density {m.AchievedDensity:G3}, {m.BytesPerStep / 1024:F1} KiB/step (dense {m.DenseBytesPerStep / 1024:F1}), compute {m.ComputeMs:F1} ms, compress {m.CompressMs:F2} ms, communicate {m.CommunicateMs:F2} ms");
                ProgressReported?.Invoke(this, p);
            },
        };

        TrainingResult result;
        if (useMpi)
        {
            using var comm = new MpiCommunicator();
            try { result = hybrid ? DataParallelTrainer.RunHybrid(comm, o.WorkersPerRank, train, validation, settings) : DataParallelTrainer.RunWorker(comm, train, validation, settings); }
            catch (Exception e) when (comm.Size > 1 && e is not RankMismatchException and not CheckpointException and not ArgumentException)
            {
                // Peers may be blocked in a collective this rank will never join: end the whole job.
                Console.Error.WriteLine($"rank {comm.Rank}: {e}");
                comm.Abort(1);
                throw;
            }
        }
        else
        {
            result = DataParallelTrainer.RunInProcess(train, validation, settings, o.Workers);
        }
        var info = new SIDCoTransformer.TrainingInfo(o.Compressor.ToName(), o.Density, workers, hybrid ? "mpi+inprocess" : useMpi ? "mpi" : "inprocess");
        return new SIDCoTransformer(_ml, result.Model, model, o.FeatureColumnName, train.FeatureLength, o.Task, classes, keyValues, result.History, info);
    }

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
        var f = schema.GetColumnOrNull(o.FeatureColumnName) ?? throw new ArgumentOutOfRangeException(argument, $"Feature column '{o.FeatureColumnName}' not found");
        if (f.Type is not VectorDataViewType { IsKnownSize: true } v || v.ItemType != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(argument, $"Schema mismatch for feature column '{o.FeatureColumnName}': expected known-size vector of Single, got {f.Type}");
        var l = schema.GetColumnOrNull(o.LabelColumnName) ?? throw new ArgumentOutOfRangeException(argument, $"Label column '{o.LabelColumnName}' not found");
        if (o.Task == TrainingTask.MulticlassClassification && l.Type is not KeyDataViewType)
            throw new ArgumentOutOfRangeException(argument, $"Schema mismatch for label column '{o.LabelColumnName}': expected Key, got {l.Type} (map labels to keys with mlContext.Transforms.Conversion.MapValueToKey)");
        if (o.Task == TrainingTask.Regression && l.Type != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(argument, $"Schema mismatch for label column '{o.LabelColumnName}': expected Single, got {l.Type}");
    }

    private static string Describe(SchemaShape.Column c) => c.Kind switch
    {
        SchemaShape.Column.VectorKind.Vector => $"known-size vector of {c.ItemType}",
        SchemaShape.Column.VectorKind.VariableVector => $"variable-size vector of {c.ItemType}",
        _ => c.IsKey ? "Key" : c.ItemType.ToString() ?? "unknown",
    };
}
