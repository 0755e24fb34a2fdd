using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo;

/// <summary>Where the workers run.</summary>
public enum TransportKind
{
    /// <summary>One worker per MPI rank when the process was started by Open MPI's mpirun (or, over MPI.NET, by an MPICH-family
    /// mpiexec), else <see cref="SIDCoTrainer.Options.Workers"/> in-process
    /// workers.</summary>
    Auto,
    /// <summary>In-process workers (threads), even under mpirun.</summary>
    InProcess,
    /// <summary>One worker per MPI rank over Open MPI; fails when not started by Open MPI's mpirun.</summary>
    Mpi,
    /// <summary>
    /// One worker per MPI rank over MPI.NET, for the MPICH family: Microsoft MPI's <c>mpiexec</c> on Windows, MPICH's
    /// <c>mpiexec.mpich</c> on Linux. Fails when not started by such an <c>mpiexec</c>.
    /// </summary>
    MpiNet,
}

/// <summary>Which backend runs the compression kernels.</summary>
public enum KernelBackend
{
    /// <summary>Vectorised, multi-threaded CPU kernels.</summary>
    Cpu,
    /// <summary>ILGPU kernels on the best device found (a CUDA/OpenCL GPU, else ILGPU's CPU accelerator).</summary>
    Ilgpu,
}

public sealed partial class SIDCoTrainer
{
    /// <summary>
    /// Options of <see cref="SIDCoTrainer"/>. Every field has a documented default; <see cref="Validate"/>
    /// runs before training and names the offending option in its exception.
    /// </summary>
    /// <remarks>
    /// | Group | Options |
    /// | --- | --- |
    /// | Data | <see cref="LabelColumnName"/>, <see cref="FeatureColumnName"/>, <see cref="ValidationData"/> |
    /// | Model | <see cref="Model"/>, <see cref="Task"/> |
    /// | Compression | <see cref="Compressor"/>, <see cref="Density"/>, <see cref="AdaptiveStages"/>, <see cref="Stages"/>,
    /// <see cref="SelectionCap"/>, <see cref="ErrorFeedback"/>, <see cref="MomentumCorrection"/>, <see cref="NonFiniteGradients"/>,
    /// <see cref="DenseWarmupSteps"/>, <see cref="DenseWarmupEpochs"/>, <see cref="DensityWarmupSteps"/>, <see cref="DensityWarmupStart"/>,
    /// <see cref="GradientHook"/> |
    /// | Exchange | <see cref="ExchangeMode"/>, <see cref="WirePrecision"/>, <see cref="OverlapBackward"/>, <see cref="BucketSizeMB"/>,
    /// <see cref="CompressPerBucket"/>,
    /// <see cref="Transport"/>, <see cref="Workers"/>,
    /// <see cref="WorkersPerRank"/>, <see cref="HierarchicalExchange"/>, <see cref="Kernels"/> |
    /// | Optimisation | <see cref="Epochs"/>, <see cref="BatchSize"/>, <see cref="Optimizer"/>, <see cref="LearningRate"/>,
    /// <see cref="Momentum"/>, <see cref="Nesterov"/>, <see cref="WeightDecay"/>, <see cref="Schedule"/>,
    /// <see cref="LearningRateWarmupSteps"/>, <see cref="GradientClipNorm"/>, <see cref="Seed"/> |
    /// | Robustness | <see cref="CheckpointDirectory"/>, <see cref="CheckpointInterval"/>, <see cref="StopAfterSteps"/>,
    /// <see cref="ReplicaCheckInterval"/> |
    /// </remarks>
    public sealed class Options
    {
        /// <summary>Label column: a key (classification) or Single (regression). Default "Label".</summary>
        public string LabelColumnName = Defaults.LabelColumnName;

        /// <summary>Feature column: a known-size vector of Single. Default "Features".</summary>
        public string FeatureColumnName = Defaults.FeatureColumnName;

        /// <summary>Optional validation data (same schema), scored after every epoch. Default null.</summary>
        public IDataView? ValidationData;

        /// <summary>The architecture. Default: <c>SIDCoModels.Mlp(128)</c>. Use <c>SIDCoModels.ConvNet()</c> for images,
        /// <c>SIDCoModels.Lstm(...)</c> for sequences, or <c>ModelDefinition.Custom</c>.</summary>
        public ModelDefinition? Model;

        /// <summary>Multiclass classification (a key label), binary classification (a Boolean label) or regression (a Single label).
        /// Default multiclass classification.</summary>
        public TrainingTask Task = Defaults.Task;

        /// <summary>Gradient compressor. Default <see cref="CompressorKind.SidcoExponential"/>.</summary>
        public CompressorKind Compressor = Defaults.Compressor;

        /// <summary>
        /// Target density delta = k / n in (0, 1]: the fraction of the gradient each worker sends per step. Default null
        /// (automatic): 0.001, raised so that each worker sends at least 1,024 entries per step; where that is half the
        /// gradient or more (models under about 2,000 parameters), the exchange is dense, since a sparse entry costs an index and a value.
        /// Set it to fix the density whatever the model's size.
        /// </summary>
        public double? Density;

        /// <summary>Adapt SIDCo's number of estimation stages to keep achieved/target near 1. Default true.</summary>
        public bool AdaptiveStages = true;

        /// <summary>SIDCo's (initial) number of stages. Default 1.</summary>
        public int Stages = Defaults.Stages;

        /// <summary>Never send more than cap * k entries (0 = no cap). Default 0.</summary>
        public double SelectionCap;

        /// <summary>Keep residuals of what was not sent (strongly recommended at low densities). Default true.</summary>
        public bool ErrorFeedback = true;

        /// <summary>Policy for NaN/Inf gradients. Default <see cref="NonFinitePolicy.Throw"/>.</summary>
        public NonFinitePolicy NonFiniteGradients = NonFinitePolicy.Throw;

        /// <summary>
        /// DGC's momentum correction (SGD only): momentum is accumulated on each worker before compression
        /// and the sent entries are cleared, instead of applying momentum to the averaged sparse gradient;
        /// it keeps accuracy at very low densities. Default false.
        /// </summary>
        public bool MomentumCorrection;

        /// <summary>Uncompressed (dense) steps at the start, as in DGC's warm-up. Default 0.</summary>
        public int DenseWarmupSteps;

        /// <summary>Uncompressed epochs at the start (added to <see cref="DenseWarmupSteps"/>). Default 0.</summary>
        public int DenseWarmupEpochs;

        /// <summary>
        /// DGC's exponential sparsity warm-up: over this many steps after the dense warm-up the density
        /// falls geometrically from <see cref="DensityWarmupStart"/> to <see cref="Density"/>. At very low
        /// densities it recovers most of the accuracy lost early in training for a few percent more bytes
        /// (docs/benchmarks.md measures it). Default 0 (off).
        /// </summary>
        public int DensityWarmupSteps;

        /// <summary>The density the sparsity warm-up starts from, in (<see cref="Density"/>, 1]. Default 0.25 (DGC's first warm-up
        /// density).</summary>
        public double DensityWarmupStart = Defaults.DensityWarmupStart;

        /// <summary>Replaces the default compression hook: called once per worker. Default null (SIDCo compression hook built from these
        /// options).</summary>
        public Func<IGradientHook>? GradientHook;

        /// <summary>
        /// Sparse, dense, or automatic exchange. Default <see cref="Communication.ExchangeMode.Auto"/>: after 50 steps at the
        /// target density, six steps alternate compressing and exchanging the whole gradient densely, timed whole, and
        /// unless compressed steps were more than 5 % faster the run stops compressing (the dense exchange loses nothing;
        /// on fast links it costs no more than compressing); otherwise it compresses and chooses sparse or dense per step
        /// from a cost model probed by timing. <see cref="EpochMetrics.SparseFraction"/> and
        /// <see cref="EpochMetrics.AchievedDensity"/> show the outcome. Both choices depend on timings: a fixed mode makes
        /// runs with the same seed repeat exactly (and a resumed run end where an uninterrupted one does).
        /// </summary>
        public ExchangeMode ExchangeMode = ExchangeMode.Auto;

        /// <summary>
        /// How gradient values travel, dense and sparse: <see cref="Communication.WirePrecision.Float16"/> or
        /// <see cref="Communication.WirePrecision.BFloat16"/> halve the bytes and round each worker's contribution (a dense
        /// exchange pre-divides by the worker count and sums in single precision). Default
        /// <see cref="Communication.WirePrecision.Float32"/> (exact).
        /// </summary>
        public WirePrecision WirePrecision = Defaults.WirePrecision;

        /// <summary>Where workers run. Default <see cref="TransportKind.Auto"/> (MPI under mpirun, else in-process).</summary>
        public TransportKind Transport = TransportKind.Auto;

        /// <summary>In-process workers (threads); ignored under MPI, where each rank is one worker. Default 1.</summary>
        public int Workers = Defaults.Workers;

        /// <summary>Under MPI: in-process workers inside each rank (e.g. one per device of a machine); the job has ranks x this many
        /// workers. Default 1.</summary>
        public int WorkersPerRank = Defaults.WorkersPerRank;

        /// <summary>
        /// With <see cref="WorkersPerRank"/> &gt; 1 under MPI: the workers of a rank average densely over shared
        /// memory and only the rank's leader compresses and exchanges with the other ranks (one selection per
        /// machine on the network instead of one per worker). Default false (flat: every worker compresses).
        /// </summary>
        public bool HierarchicalExchange;

        /// <summary>
        /// TorchSharp compute threads of each process (each MPI rank, or the one process of in-process workers).
        /// Default null: the machine's cores divided by the workers on it (in-process workers times the ranks
        /// mpirun started on the machine), at least 1, unless <c>OMP_NUM_THREADS</c> is set, which then wins.
        /// </summary>
        public int? NumberOfThreads;

        /// <summary>
        /// Under MPI, each rank keeps only its shard of the training rows (every N-th row of the data view, N the ranks) and
        /// draws its batches from it, so data several times one machine's memory trains on several machines; otherwise every
        /// rank holds every row. Default null (automatic): shard when the features would take more than 256 MiB per rank, or
        /// when the data view cannot tell its row count. Not with <see cref="WorkersPerRank"/> above 1.
        /// </summary>
        public bool? ShardData;

        /// <summary>
        /// Where the replicas and their batches live: <c>cpu</c>, <c>cuda</c> (one GPU per worker of a machine: in-process
        /// worker w on <c>cuda:w</c>, under MPI the machine's local rank r on <c>cuda:r</c>) or <c>cuda:N</c>. Gradients come
        /// to host memory for the compression and the exchange either way. A CUDA device needs TorchSharp's CUDA build
        /// (TorchSharp-cuda-linux or -windows instead of TorchSharp-cpu) and an NVIDIA driver; without them training is
        /// refused before it starts. CUDA training is untested in this project (no CUDA build of libtorch was available).
        /// Default "cpu".
        /// </summary>
        public string Device = Defaults.Device;

        /// <summary>Backend of the compression kernels. Default <see cref="KernelBackend.Cpu"/>.</summary>
        public KernelBackend Kernels = KernelBackend.Cpu;

        /// <summary>
        /// Start a dense exchange during backward, bucket by bucket in reverse layer order, as PyTorch DDP does (hooks that
        /// implement <see cref="IBucketedGradientHook"/>: the dense baseline, <c>Compressor = None</c>). The model is bitwise
        /// the same either way. The exchange then runs on a thread of its own beside backward: it gains where that thread has
        /// a core to itself; where workers share a machine's cores, time both (docs/benchmarks.md). Default true.
        /// </summary>
        public bool OverlapBackward = Defaults.OverlapBackward;

        /// <summary>
        /// Size of an overlapped exchange's buckets in MiB (the first one is 1 MiB, and a parameter is never split), as
        /// DDP's bucket_cap_mb. Default 25.
        /// </summary>
        public double BucketSizeMB = Defaults.BucketSizeMB;

        /// <summary>
        /// Compress each bucket of <see cref="BucketSizeMB"/> on its own (its own fit, residual and exchange) as backward
        /// completes it, instead of the whole gradient after backward (the paper's way, the default). Lets compression and
        /// exchange overlap with backward; SIDCo then fits each bucket's magnitudes. Default false.
        /// </summary>
        public bool CompressPerBucket;

        /// <summary>
        /// Passes over the training data. Default null (automatic): enough epochs for 2,000 optimizer steps, at least 5 and
        /// at most 1,000 (a small data set takes many short epochs, a large one 5).
        /// </summary>
        public int? Epochs;

        /// <summary>
        /// Rows each worker takes per step. Default null (automatic): 64, or fewer so that an epoch has at least 16 steps
        /// when the data is small. A set value larger than the rows per worker is lowered to them.
        /// </summary>
        public int? BatchSize;

        /// <summary>Optimizer. Default SGD.</summary>
        public OptimizerKind Optimizer = Defaults.Optimizer;

        /// <summary>Peak learning rate. Default 0.01.</summary>
        public double LearningRate = Defaults.LearningRate;

        /// <summary>SGD momentum in [0, 1). Default 0.9.</summary>
        public double Momentum = Defaults.Momentum;

        /// <summary>Nesterov momentum. Default false.</summary>
        public bool Nesterov;

        /// <summary>L2 weight decay. Default 0.</summary>
        public double WeightDecay;

        /// <summary>Learning-rate schedule after warm-up. Default cosine decay to zero over the run, so the last steps refine instead of
        /// wandering.</summary>
        public LearningRateSchedule Schedule = Defaults.Schedule;

        /// <summary>Steps of linear learning-rate warm-up. Default 0.</summary>
        public int LearningRateWarmupSteps;

        /// <summary>Clip the averaged gradient's L2 norm (0 = off). Default 0.</summary>
        public double GradientClipNorm;

        /// <summary>Seed for initialisation and data order. Default 1.</summary>
        public int Seed = Defaults.Seed;

        /// <summary>Directory for checkpoints (null = none). A run resumes from the newest valid one there. Default null.</summary>
        public string? CheckpointDirectory;

        /// <summary>Steps between checkpoints. Default 500.</summary>
        public int CheckpointInterval = Defaults.CheckpointInterval;

        /// <summary>Steps between checks that all replicas hold bitwise-identical parameters (0 = only at epoch ends). Default 1 in Debug
        /// builds, 0 in Release.</summary>
        public int ReplicaCheckInterval =
#if DEBUG
            1;
#else
            0;
#endif

        /// <summary>
        /// Under MPI, the longest a worker waits in one collective (seconds; 0 = forever). A rank that stops (a stopped or
        /// swapped-out process, a hung device) would leave the others waiting for good: at half this time every waiting rank
        /// warns, and at the deadline each reports which ranks have not arrived at which collective and step and the job ends
        /// with a non-zero exit code; a rerun resumes from the newest checkpoint. The deadline grows to 20 times the longest
        /// step seen. Default 300.
        /// </summary>
        public double CollectiveTimeoutSeconds = Defaults.CollectiveTimeoutSeconds;

        /// <summary>Cap on steps per epoch (0 = whole epoch). Default 0.</summary>
        public int MaxStepsPerEpoch;

        /// <summary>
        /// Ends this <c>Fit</c> once the run has made this many steps in total, counting those restored from a checkpoint
        /// (0 = train all <see cref="Epochs"/>). The learning-rate schedule still spans all epochs, and with a
        /// <see cref="CheckpointDirectory"/> a checkpoint is written where the run stops, so a later <c>Fit</c> with the
        /// same options continues from there: a long run trained in slices (a job with a time limit) ends where one
        /// uninterrupted run would. Default 0.
        /// </summary>
        public long StopAfterSteps;

        /// <summary>
        /// Throws <see cref="ArgumentOutOfRangeException"/> (or <see cref="ArgumentException"/>) naming the first invalid option.
        /// The options this trainer owns are checked here; those it passes to the compression hook (density, stages, cap,
        /// warm-ups, exchange) are checked by <see cref="CompressionHookOptions.Validate"/>, which names them the same way.
        /// </summary>
        public void Validate()
        {
            if (string.IsNullOrWhiteSpace(LabelColumnName))
                throw new ArgumentException("LabelColumnName must be set.", nameof(LabelColumnName));
            if (string.IsNullOrWhiteSpace(FeatureColumnName))
                throw new ArgumentException("FeatureColumnName must be set.", nameof(FeatureColumnName));
            if (!Enum.IsDefined(Task)) throw new ArgumentOutOfRangeException(nameof(Task), Task, "Unknown task.");
            if (Density is { } density && !(density > 0 && density <= 1))
                throw new ArgumentOutOfRangeException(nameof(Density), Density, "Density must be null (automatic) or in (0, 1].");
            if (!Enum.IsDefined(NonFiniteGradients))
                throw new ArgumentOutOfRangeException(nameof(NonFiniteGradients), NonFiniteGradients, "Unknown NonFinitePolicy.");
            if (DenseWarmupEpochs < 0)
                throw new ArgumentOutOfRangeException(nameof(DenseWarmupEpochs), DenseWarmupEpochs,
                    "DenseWarmupEpochs must not be negative.");
            if (!Enum.IsDefined(WirePrecision))
                throw new ArgumentOutOfRangeException(nameof(WirePrecision), WirePrecision, "Unknown wire precision.");
            if (!Enum.IsDefined(Transport)) throw new ArgumentOutOfRangeException(nameof(Transport), Transport, "Unknown transport.");
            if (Workers is < 1 or > MaximumWorkers)
                throw new ArgumentOutOfRangeException(nameof(Workers), Workers, $"Workers must be in [1, {MaximumWorkers}].");
            if (WorkersPerRank is < 1 or > MaximumWorkersPerRank)
                throw new ArgumentOutOfRangeException(nameof(WorkersPerRank), WorkersPerRank,
                    $"WorkersPerRank must be in [1, {MaximumWorkersPerRank}].");
            if (MomentumCorrection && Optimizer != OptimizerKind.Sgd)
                throw new ArgumentException("MomentumCorrection applies to SGD with momentum.", nameof(MomentumCorrection));
            if (MomentumCorrection && GradientHook is not null)
            {
                throw new ArgumentException(
                    "MomentumCorrection configures the built-in hook; it cannot be combined with a custom GradientHook.",
                        nameof(MomentumCorrection));
            }
            if (ShardData == true && WorkersPerRank > 1)
            {
                throw new ArgumentException(
                    "ShardData shards the rows over the MPI ranks; it cannot be combined with several workers per rank.",
                        nameof(ShardData));
            }
            if (CompressPerBucket && (HierarchicalExchange || GradientHook is not null))
                throw new ArgumentException("CompressPerBucket configures the built-in flat hook; it cannot be combined with "
                    + "HierarchicalExchange or a custom GradientHook.", nameof(CompressPerBucket));
            if (HierarchicalExchange && GradientHook is not null)
            {
                throw new ArgumentException(
                    "HierarchicalExchange configures the built-in hook; it cannot be combined with a custom GradientHook.",
                        nameof(HierarchicalExchange));
            }
            if (!(BucketSizeMB > 0 && BucketSizeMB <= MaxBucketSizeMB))
                throw new ArgumentOutOfRangeException(nameof(BucketSizeMB), BucketSizeMB,
                    $"BucketSizeMB must be in (0, {MaxBucketSizeMB}].");
            if (!IsDevice(Device))
            {
                throw new ArgumentOutOfRangeException(nameof(Device), Device,
                    "Device must be \"cpu\", \"cuda\" (one GPU per worker of a machine) or \"cuda:N\".");
            }
            if (NumberOfThreads is < 1 or > MaximumThreads)
            {
                throw new ArgumentOutOfRangeException(nameof(NumberOfThreads), NumberOfThreads,
                    $"NumberOfThreads must be null (automatic) or in [1, {MaximumThreads}].");
            }
            if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "Epochs must be null (automatic) or at least 1.");
            if (BatchSize < 1)
                throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be null (automatic) or at least 1.");
            if (!Enum.IsDefined(Optimizer)) throw new ArgumentOutOfRangeException(nameof(Optimizer), Optimizer, "Unknown optimizer.");
            // The update runs in single precision: a larger rate would be infinite there.
            if (!(LearningRate > 0 && LearningRate <= float.MaxValue))
            {
                throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate,
                    "LearningRate must be positive and finite in single precision (at most 3.4e38).");
            }
            if (!(Momentum >= 0 && Momentum < 1))
                throw new ArgumentOutOfRangeException(nameof(Momentum), Momentum, "Momentum must be in [0, 1).");
            if (!(WeightDecay >= 0) || double.IsInfinity(WeightDecay))
                throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "WeightDecay must be non-negative and finite.");
            if (!Enum.IsDefined(Schedule)) throw new ArgumentOutOfRangeException(nameof(Schedule), Schedule, "Unknown schedule.");
            if (LearningRateWarmupSteps < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(LearningRateWarmupSteps), LearningRateWarmupSteps,
                    "LearningRateWarmupSteps must not be negative.");
            }
            if (!(GradientClipNorm >= 0) || double.IsInfinity(GradientClipNorm))
                throw new ArgumentOutOfRangeException(nameof(GradientClipNorm), GradientClipNorm,
                    "GradientClipNorm must be non-negative (0 = off).");
            if (CheckpointInterval < 1)
                throw new ArgumentOutOfRangeException(nameof(CheckpointInterval), CheckpointInterval,
                    "CheckpointInterval must be at least 1.");
            if (ReplicaCheckInterval < 0)
                throw new ArgumentOutOfRangeException(nameof(ReplicaCheckInterval), ReplicaCheckInterval,
                    "ReplicaCheckInterval must not be negative.");
            if (MaxStepsPerEpoch < 0)
                throw new ArgumentOutOfRangeException(nameof(MaxStepsPerEpoch), MaxStepsPerEpoch, "MaxStepsPerEpoch must not be negative.");
            if (!(CollectiveTimeoutSeconds >= 0) || double.IsInfinity(CollectiveTimeoutSeconds))
            {
                throw new ArgumentOutOfRangeException(nameof(CollectiveTimeoutSeconds), CollectiveTimeoutSeconds,
                    "CollectiveTimeoutSeconds must be finite and not negative (0 = no deadline).");
            }
            if (StopAfterSteps < 0)
                throw new ArgumentOutOfRangeException(nameof(StopAfterSteps), StopAfterSteps,
                    "StopAfterSteps must not be negative (0 = train all epochs).");
            if (Transport == TransportKind.MpiNet && !MpiNetCommunicator.IsLaunchedByMpiexec)
            {
                throw new ArgumentException("Transport is MpiNet but this process was not started by an MPICH-family mpiexec. "
                    + "Start it with 'mpiexec -n N dotnet app.dll' (Microsoft MPI, or MPICH's mpiexec.mpich) or use TransportKind.Auto.",
                    nameof(Transport));
            }
            if (Transport == TransportKind.Mpi && !MpiCommunicator.IsLaunchedByMpirun)
            {
                throw new ArgumentException("Transport is Mpi but this process was not started by mpirun. "
                    + "Start it with 'mpirun -np N dotnet app.dll' or use TransportKind.Auto.", nameof(Transport));
            }
            ToHookOptions(stepsPerEpoch: 0).Validate();
        }

        // cpu, cuda, or cuda:N with N a device index.
        private static bool IsDevice(string? device) => device is "cpu" or "cuda"
            || device is not null && device.StartsWith("cuda:", StringComparison.Ordinal)
                && int.TryParse(device.AsSpan(5), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture,
                    out _);

        // Bounds that catch a mistyped count before it starts hundreds of threads.
        private const int MaximumWorkers = 256;
        private const int MaximumWorkersPerRank = 64;
        private const int MaximumThreads = 4096;

        /// <summary>Options each rank may set for itself: they decide where the work runs, not what it computes.</summary>
        internal static readonly IReadOnlySet<string> RankLocalOptions =
            new HashSet<string> { nameof(NumberOfThreads), nameof(Kernels), nameof(Device) };

        /// <summary>
        /// Every other option, as text, for the start-up check that all ranks agree (a difference would hang a collective or
        /// train different models) and, where it changes the model, for the check that a resumed run keeps it.
        /// </summary>
        internal IReadOnlyList<AgreedOption> ToAgreedOptions() =>
        [
            Agreed(nameof(LabelColumnName), LabelColumnName, kept: true),
            Agreed(nameof(FeatureColumnName), FeatureColumnName, kept: true),
            Agreed(nameof(ValidationData), ValidationData is null ? "none" : "set", kept: false),
            Agreed(nameof(Model), Model?.Descriptor ?? "default", kept: true),
            Agreed(nameof(Task), Task, kept: true),
            Agreed(nameof(Compressor), Compressor, kept: true),
            Agreed(nameof(Density), Density, kept: true),
            Agreed(nameof(AdaptiveStages), AdaptiveStages, kept: true),
            Agreed(nameof(Stages), Stages, kept: true),
            Agreed(nameof(SelectionCap), SelectionCap, kept: true),
            Agreed(nameof(ErrorFeedback), ErrorFeedback, kept: true),
            Agreed(nameof(NonFiniteGradients), NonFiniteGradients, kept: false),
            Agreed(nameof(MomentumCorrection), MomentumCorrection, kept: true),
            Agreed(nameof(DenseWarmupSteps), DenseWarmupSteps, kept: true),
            Agreed(nameof(DenseWarmupEpochs), DenseWarmupEpochs, kept: true),
            Agreed(nameof(DensityWarmupSteps), DensityWarmupSteps, kept: true),
            Agreed(nameof(DensityWarmupStart), DensityWarmupStart, kept: true),
            Agreed(nameof(GradientHook), GradientHook is null ? "built-in" : "custom", kept: true),
            Agreed(nameof(ExchangeMode), ExchangeMode, kept: false),
            Agreed(nameof(WirePrecision), WirePrecision, kept: true),
            Agreed(nameof(OverlapBackward), OverlapBackward, kept: false),
            Agreed(nameof(BucketSizeMB), BucketSizeMB, kept: false),
            Agreed(nameof(CompressPerBucket), CompressPerBucket, kept: true),
            Agreed(nameof(Transport), Transport, kept: false),
            Agreed(nameof(Workers), Workers, kept: false),
            Agreed(nameof(WorkersPerRank), WorkersPerRank, kept: false),
            Agreed(nameof(HierarchicalExchange), HierarchicalExchange, kept: false),
            Agreed(nameof(ShardData), ShardData, kept: false),
            Agreed(nameof(Epochs), Epochs, kept: true),
            Agreed(nameof(BatchSize), BatchSize, kept: true),
            Agreed(nameof(Optimizer), Optimizer, kept: true),
            Agreed(nameof(LearningRate), LearningRate, kept: true),
            Agreed(nameof(Momentum), Momentum, kept: true),
            Agreed(nameof(Nesterov), Nesterov, kept: true),
            Agreed(nameof(WeightDecay), WeightDecay, kept: true),
            Agreed(nameof(Schedule), Schedule, kept: true),
            Agreed(nameof(LearningRateWarmupSteps), LearningRateWarmupSteps, kept: true),
            Agreed(nameof(GradientClipNorm), GradientClipNorm, kept: true),
            Agreed(nameof(Seed), Seed, kept: true),
            Agreed(nameof(CheckpointDirectory), CheckpointDirectory ?? "none", kept: false),
            Agreed(nameof(CheckpointInterval), CheckpointInterval, kept: false),
            Agreed(nameof(ReplicaCheckInterval), ReplicaCheckInterval, kept: false),
            Agreed(nameof(MaxStepsPerEpoch), MaxStepsPerEpoch, kept: true),
            Agreed(nameof(StopAfterSteps), StopAfterSteps, kept: false),
            Agreed(nameof(CollectiveTimeoutSeconds), CollectiveTimeoutSeconds, kept: false),
        ];

        private static AgreedOption Agreed(string name, object? value, bool kept) => new($"Options.{name}", value switch
        {
            null => "auto",
            double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
            _ => value.ToString() ?? "",
        }, kept);

        /// <summary>The density the compressor targets: <see cref="Density"/>, or the automatic one's starting value.</summary>
        internal double TargetDensity => Density ?? Defaults.Density;

        /// <summary>
        /// Momentum correction is in effect: asked for, with the built-in hook and a momentum to carry. The hook then keeps the
        /// momentum and the optimizer steps without.
        /// </summary>
        // A dense exchange averages linearly: momentum on the average is DGC's correction already, so `none` keeps the
        // optimizer's momentum and runs the dense hook.
        internal bool UsesMomentumCorrection =>
            MomentumCorrection && GradientHook is null && Momentum > 0 && Compressor != CompressorKind.None;

        private const double MaxBucketSizeMB = 1 << 16;

        /// <summary><see cref="BucketSizeMB"/> in bytes.</summary>
        internal long BucketBytes => (long)(BucketSizeMB * (1 << 20));

        /// <summary>The compressor's settings these options give.</summary>
        internal CompressorOptions ToCompressorOptions() => new()
        {
            Density = TargetDensity,
            AdaptiveStages = AdaptiveStages,
            Stages = Stages,
            SelectionCap = SelectionCap,
            NonFinite = NonFiniteGradients,
            Seed = Seed,
        };

        /// <summary>The built-in compression hook's settings, for epochs of <paramref name="stepsPerEpoch"/> steps (kernels:
        /// CPU).</summary>
        internal CompressionHookOptions ToHookOptions(int stepsPerEpoch) => new()
        {
            Compressor = Compressor,
            Compression = ToCompressorOptions(),
            ErrorFeedback = ErrorFeedback,
            Exchange = ExchangeMode,
            Wire = WirePrecision,
            DenseWarmupSteps = DenseWarmupSteps + (long)DenseWarmupEpochs * stepsPerEpoch,
            DensityWarmupSteps = DensityWarmupSteps,
            DensityWarmupStart = DensityWarmupStart,
            MomentumCorrection = UsesMomentumCorrection ? Momentum : 0,
            MinimumSelected = Density is null ? Defaults.MinimumSelected : 0,
        };

        /// <summary>
        /// The training loop's settings these options give, with what only the data decides (outputs, epochs, batch, loss
        /// scale) and the run's callbacks.
        /// </summary>
        internal TrainingSettings ToTrainingSettings(
            ModelDefinition model, int outputs, int epochs, int batchSize, double lossScale,
            Func<IGradientHook> hookFactory, Action<TrainingProgress> progress, Action<string> log, Func<bool> stopRequested) => new()
            {
                Model = model,
                Task = Task,
                Outputs = outputs,
                Epochs = epochs,
                BatchSize = batchSize,
                Optimizer = Optimizer,
                LearningRate = LearningRate,
                Momentum = UsesMomentumCorrection ? 0 : Momentum,
                Nesterov = Nesterov,
                WeightDecay = WeightDecay,
                Schedule = Schedule,
                LearningRateWarmupSteps = LearningRateWarmupSteps,
                GradientClipNorm = GradientClipNorm,
                NonFiniteGradients = NonFiniteGradients,
                AgreedOptions = ToAgreedOptions(),
                Device = Device,
                OverlapBackward = OverlapBackward,
                BucketBytes = BucketBytes,
                LocalRank =
                    MpiNetCommunicator.IsLaunchedByMpiexec ? MpiNetCommunicator.LaunchedLocalRank : MpiCommunicator.LaunchedLocalRank,
                Seed = Seed,
                CheckpointDirectory = CheckpointDirectory,
                CheckpointInterval = CheckpointInterval,
                ReplicaCheckInterval = ReplicaCheckInterval,
                MaxStepsPerEpoch = MaxStepsPerEpoch,
                StopAfterSteps = StopAfterSteps,
                NumberOfThreads = NumberOfThreads,
                ProcessesOnMachine = MpiNetCommunicator.IsLaunchedByMpiexec ? MpiNetCommunicator.LaunchedLocalSize
                    : MpiCommunicator.LaunchedLocalSize,
                LossScale = lossScale,
                HookFactory = hookFactory,
                Progress = progress,
                Log = log,
                StopRequested = stopRequested,
            };
    }
}
