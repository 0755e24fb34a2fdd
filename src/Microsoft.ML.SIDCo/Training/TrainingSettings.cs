using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>What the model predicts.</summary>
public enum TrainingTask
{
    /// <summary>One of several classes (cross-entropy loss, softmax scores).</summary>
    MulticlassClassification,
    /// <summary>A real value (mean squared error).</summary>
    Regression,
    /// <summary>Two classes from a Boolean label (one logit, binary cross-entropy; sigmoid probability).</summary>
    BinaryClassification,
}

/// <summary>Task helpers.</summary>
internal static class TrainingTasks
{
    /// <summary>True for the tasks whose labels are class indices (multiclass and binary).</summary>
    public static bool IsClassification(this TrainingTask task) =>
        task is TrainingTask.MulticlassClassification or TrainingTask.BinaryClassification;

    /// <summary>Model outputs for <paramref name="classes"/> classes: one logit for binary, one value for regression.</summary>
    public static int Outputs(this TrainingTask task, int classes) => task == TrainingTask.MulticlassClassification ? classes : 1;
}

/// <summary>How the learning rate evolves after warm-up.</summary>
public enum LearningRateSchedule
{
    /// <summary>Constant.</summary>
    Constant,
    /// <summary>Cosine decay to zero over the run.</summary>
    Cosine,
    /// <summary>x0.1 at 50% and again at 75% of the run.</summary>
    Step,
}

/// <summary>Examples in memory: row-major features plus class indices or regression targets.</summary>
internal sealed class TrainingData
{
    /// <summary>Creates the data set.</summary>
    public TrainingData(float[] features, int featureLength, int[]? classLabels, float[]? targets)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentOutOfRangeException.ThrowIfLessThan(featureLength, 1);
        if (features.Length % featureLength != 0)
            throw new ArgumentException("Feature array length is not a multiple of the feature length.", nameof(features));
        if ((classLabels is null) == (targets is null)) throw new ArgumentException("Give either class labels or regression targets.");
        Count = features.Length / featureLength;
        if ((classLabels?.Length ?? targets!.Length) != Count)
            throw new ArgumentException($"{Count} feature rows but {(classLabels?.Length ?? targets!.Length)} labels.");
        Features = features; FeatureLength = featureLength; ClassLabels = classLabels; Targets = targets;
    }

    /// <summary>Number of examples.</summary>
    public int Count { get; }

    /// <summary>Features per example.</summary>
    public int FeatureLength { get; }

    /// <summary>Row-major features.</summary>
    public float[] Features { get; }

    /// <summary>Class indices 0..C-1 (classification; 0 = false, 1 = true for binary), else null.</summary>
    public int[]? ClassLabels { get; }

    /// <summary>Targets (regression), else null.</summary>
    public float[]? Targets { get; }

    /// <summary>
    /// True when these rows are this worker's own shard (each worker holds different rows); false when every worker holds
    /// all of them and takes its rows of each step from a shared order.
    /// </summary>
    public bool IsShard { get; init; }
}

/// <summary>Progress of a running training, reported by worker 0.</summary>
/// <param name="Epoch">Current epoch (0-based).</param>
/// <param name="Epochs">Total epochs.</param>
/// <param name="StepInEpoch">Steps done in this epoch.</param>
/// <param name="StepsPerEpoch">Steps per epoch.</param>
/// <param name="Loss">Running mean training loss of this epoch on worker 0.</param>
/// <param name="EpochDone">Metrics of the epoch that just ended, or null mid-epoch.</param>
public sealed record TrainingProgress(int Epoch, int Epochs, int StepInEpoch, int StepsPerEpoch, double Loss, EpochMetrics? EpochDone);

/// <summary>An option every worker must hold alike.</summary>
/// <param name="Name">Its public name (<c>Options.Density</c>).</param>
/// <param name="Value">Its value as text (invariant culture; doubles round-trip).</param>
/// <param name="KeptOnResume">True when it changes the model, so that a run resumed from a checkpoint must keep it.</param>
internal readonly record struct AgreedOption(string Name, string Value, bool KeptOnResume);

/// <summary>Settings of the data-parallel training loop (the ML.NET trainer's Options map onto these).</summary>
internal sealed record TrainingSettings
{
    /// <summary>Architecture.</summary>
    public required ModelDefinition Model { get; init; }
    /// <summary>Task.</summary>
    public required TrainingTask Task { get; init; }
    /// <summary>Classes (classification) or 1 (regression).</summary>
    public required int Outputs { get; init; }
    /// <summary>Passes over the data.</summary>
    public required int Epochs { get; init; }
    /// <summary>Examples per step per worker.</summary>
    public required int BatchSize { get; init; }
    /// <summary>Optimizer.</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.Sgd;
    /// <summary>Peak learning rate.</summary>
    public required double LearningRate { get; init; }
    /// <summary>SGD momentum.</summary>
    public required double Momentum { get; init; }
    /// <summary>Nesterov momentum.</summary>
    public bool Nesterov { get; init; }
    /// <summary>L2 weight decay.</summary>
    public double WeightDecay { get; init; }
    /// <summary>Adam beta1.</summary>
    public double AdamBeta1 { get; init; } = 0.9;
    /// <summary>Adam beta2.</summary>
    public double AdamBeta2 { get; init; } = 0.999;
    /// <summary>Adam epsilon.</summary>
    public double AdamEpsilon { get; init; } = 1e-8;
    /// <summary>Schedule after warm-up.</summary>
    public required LearningRateSchedule Schedule { get; init; }
    /// <summary>Steps of linear learning-rate warm-up.</summary>
    public int LearningRateWarmupSteps { get; init; }
    /// <summary>
    /// What a non-finite averaged gradient does, whatever path produced it (a compressor checks its own input earlier):
    /// throw, or skip the update on every worker. Default <see cref="NonFinitePolicy.Throw"/>.
    /// </summary>
    public NonFinitePolicy NonFiniteGradients { get; init; } = NonFinitePolicy.Throw;
    /// <summary>
    /// Where replicas and batches live: <c>cpu</c> (default), <c>cuda</c> (one GPU per worker of a machine) or <c>cuda:N</c>.
    /// Gradients come to the host bucket for the exchange either way.
    /// </summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Exchange buckets during backward when the hook can (<see cref="IBucketedGradientHook"/>).</summary>
    public bool OverlapBackward { get; init; }

    /// <summary>Bucket size of an overlapped exchange in bytes (the first bucket is 1 MiB).</summary>
    public long BucketBytes { get; init; } = 25 << 20;
    /// <summary>This process's rank among the processes of its machine (the GPU a <c>cuda</c> device means under MPI).</summary>
    public int LocalRank { get; init; }
    /// <summary>Clip the averaged gradient's global L2 norm to this (0 = off).</summary>
    public double GradientClipNorm { get; init; }
    /// <summary>TorchSharp intra-op threads of this process, or null to share the machine's cores among the workers on it (the rule is in
    /// DataParallelTrainer.IntraOpThreads).</summary>
    public int? NumberOfThreads { get; init; }
    /// <summary>
    /// Processes of this job on this machine (the MPI ranks started here; 1 otherwise): their workers share its cores.
    /// Default 1.
    /// </summary>
    public int ProcessesOnMachine { get; init; } = 1;
    /// <summary>Seed for initialisation and data order.</summary>
    public int Seed { get; init; }
    /// <summary>Where checkpoints go (null = none).</summary>
    public string? CheckpointDirectory { get; init; }
    /// <summary>Steps between checkpoints.</summary>
    public required int CheckpointInterval { get; init; }
    /// <summary>Resume from the latest checkpoint in <see cref="CheckpointDirectory"/> when there is one.</summary>
    public bool Resume { get; init; } = true;
    /// <summary>Steps between replica fingerprint checks (0 = only at epoch ends).</summary>
    public int ReplicaCheckInterval { get; init; }
    /// <summary>Cap on steps per epoch (0 = the whole shard).</summary>
    public int MaxStepsPerEpoch { get; init; }
    /// <summary>Stop after this many steps in total (0 = run all epochs); with a checkpoint directory a checkpoint is written
    /// there.</summary>
    public long StopAfterSteps { get; init; }
    /// <summary>Creates each worker's gradient hook.</summary>
    public required Func<IGradientHook> HookFactory { get; init; }
    /// <summary>Progress callback (called on worker 0's thread).</summary>
    public Action<TrainingProgress>? Progress { get; init; }
    /// <summary>Where worker 0 reports what its hook decided during the run (<see cref="IGradientHookNotes"/>).</summary>
    public Action<string>? Log { get; init; }
    /// <summary>
    /// Asked by every worker before every step; when it returns true on any worker, all workers stop together at the
    /// same step (a one-value collective per step), write a checkpoint when <see cref="CheckpointDirectory"/> is set, and
    /// throw <see cref="OperationCanceledException"/>. Null: no check and no collective.
    /// </summary>
    public Func<bool>? StopRequested { get; init; }
    /// <summary>
    /// Factor applied to the reported losses (training and validation): a regression trained on standardised targets
    /// reports its mean squared error in the label's own units with the target variance here. Default 1.
    /// </summary>
    public double LossScale { get; init; } = 1;

    /// <summary>
    /// The user's options every worker must hold alike, by their public names: checked at start-up (a difference names the
    /// option and each rank's value) and, those <see cref="AgreedOption.KeptOnResume"/>, against a checkpoint. Default none.
    /// </summary>
    public IReadOnlyList<AgreedOption> AgreedOptions { get; init; } = [];

    /// <summary>
    /// A fingerprint of everything that must agree across workers and with a checkpoint (the number of workers aside: a run
    /// may resume with another).
    /// </summary>
    public long Fingerprint() => Communication.CommunicatorExtensions.Fingerprint(
        $"{Model.Descriptor}|{Task}|{Outputs}|{Epochs}|{BatchSize}|{Optimizer}|{LearningRate:R}|{Momentum:R}|{Nesterov}|"
        + $"{WeightDecay:R}|{Schedule}|{LearningRateWarmupSteps}|{GradientClipNorm:R}|{Seed}|{MaxStepsPerEpoch}|"
        + string.Join("|", AgreedOptions.Where(o => o.KeptOnResume).Select(o => $"{o.Name}={o.Value}")));

    /// <summary>Learning rate at <paramref name="step"/> of <paramref name="totalSteps"/>.</summary>
    public float LearningRateAt(long step, long totalSteps)
    {
        double lr = LearningRate;
        if (step < LearningRateWarmupSteps) return (float)(lr * (step + 1) / LearningRateWarmupSteps);
        double progress =
            totalSteps <= LearningRateWarmupSteps ? 1 : (double)(step - LearningRateWarmupSteps) / (totalSteps - LearningRateWarmupSteps);
        return (float)(Schedule switch
        {
            LearningRateSchedule.Cosine => lr * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1, progress))),
            LearningRateSchedule.Step => lr * (progress >= 0.75 ? 0.01 : progress >= 0.5 ? 0.1 : 1),
            _ => lr,
        });
    }
}
