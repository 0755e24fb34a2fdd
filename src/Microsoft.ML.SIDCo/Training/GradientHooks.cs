using System.Diagnostics;
using System.Numerics.Tensors;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>What a gradient hook is told once, before the first step.</summary>
/// <param name="Communicator">This worker's view of the group.</param>
/// <param name="Length">Length of the flat gradient bucket.</param>
/// <param name="Parameters">The bucket's layout.</param>
public sealed record GradientHookContext(ICommunicator Communicator, int Length, IReadOnlyList<ParameterSlice> Parameters);

/// <summary>What a hook did in one step (all fields are this worker's view).</summary>
/// <param name="CompressMs">Time spent compressing.</param>
/// <param name="CommunicateMs">Time spent exchanging.</param>
/// <param name="Selected">Entries this worker sent (the bucket length when dense).</param>
/// <param name="BytesSent">Bytes this worker sent, per the cost model.</param>
/// <param name="AchievedOverTarget">Compression estimation quality (1 when not compressing).</param>
/// <param name="Mode">Exchange used.</param>
/// <param name="Stages">Estimation stages used (1 when not applicable).</param>
/// <param name="Skipped">True when this worker's contribution was dropped (non-finite values, SkipStep policy).</param>
/// <param name="PredictedCommunicateMs">The cost model's prediction for the exchange used.</param>
/// <param name="WaitMs">The part of <paramref name="CommunicateMs"/> spent waiting for the slowest worker to reach the exchange
/// (<see cref="ExchangeStats.WaitMs"/>); 0 where not measured.</param>
public readonly record struct GradientHookStats(double CompressMs, double CommunicateMs, long Selected, double BytesSent,
    double AchievedOverTarget, ExchangeMode Mode, int Stages, bool Skipped, double PredictedCommunicateMs, double WaitMs = 0);

/// <summary>
/// The pluggable step between backward and the optimizer: receives this worker's flat gradient and
/// must leave in the same buffer the gradient every worker applies (identical on all workers).
/// One instance per worker; every worker's hook must make the same collective calls.
/// </summary>
public interface IGradientHook : IDisposable
{
    /// <summary>Called once per training run, before the first step (collective).</summary>
    void Initialize(GradientHookContext context);

    /// <summary>Replaces <paramref name="gradient"/> (this worker's) with the averaged gradient (collective).</summary>
    GradientHookStats Reduce(Span<float> gradient, long step);

    /// <summary>Writes the hook's state (e.g. error-feedback residuals) for a checkpoint.</summary>
    void SaveState(Stream stream);

    /// <summary>Restores state written by <see cref="SaveState"/>; throws without changing anything on a mismatch.</summary>
    void LoadState(Stream stream);
}

/// <summary>A hook that has something to tell the user once in a while (a decision it made); the trainer logs it.</summary>
internal interface IGradientHookNotes
{
    /// <summary>The note made since the last call, or null.</summary>
    string? TakeNote();
}

/// <summary>
/// A hook whose per-worker state can be spread over another number of workers, so that a run resumes from a checkpoint
/// with more or fewer workers (an elastic resume).
/// </summary>
internal interface IElasticHook
{
    /// <summary>
    /// Loads this worker's share of the states saved by <c>states.Count</c> workers, as worker <paramref name="rank"/> of
    /// <paramref name="size"/>: additive state (residuals, velocities) of saved worker r goes to worker r mod
    /// <paramref name="size"/>, so that its sum over the workers is kept; the rest comes from saved worker
    /// <paramref name="rank"/> mod <c>states.Count</c>. Throws without changing anything on a mismatch.
    /// </summary>
    void LoadRedistributed(IReadOnlyList<Stream> states, int rank, int size);
}

/// <summary>
/// The no-compression baseline: the dense average of the gradient, whole or bucket by bucket as backward produces it
/// (<see cref="IBucketedGradientHook"/>), with sums in rank order so that both give bitwise the same model.
/// </summary>
public sealed class DenseAllReduceHook(WirePrecision wire = WirePrecision.Float32) : IBucketedGradientHook, IElasticHook
{
    private GradientExchange? _exchange;
    private double _stepMs, _stepBytes, _stepPredictedMs;
    private long _stepEntries;

    /// <summary>How the gradient travels.</summary>
    public WirePrecision Wire { get; } = wire;

    /// <inheritdoc />
    public void Initialize(GradientHookContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        _exchange = new GradientExchange(context.Communicator, context.Length, ExchangeMode.Dense, Wire) { OrderedSum = true };
    }

    private GradientExchange Exchange => _exchange ?? throw new InvalidOperationException("Initialize must be called first.");

    /// <inheritdoc />
    public GradientHookStats Reduce(Span<float> gradient, long step)
    {
        var e = Exchange.AllReduceDense(gradient);
        return new GradientHookStats(0, e.ElapsedMs, gradient.Length, e.BytesPerRank, 1, ExchangeMode.Dense, 1, false, e.PredictedDenseMs);
    }

    /// <inheritdoc />
    public void ReduceBucket(Memory<float> values, int offset, long step)
    {
        var e = Exchange.AverageDense(values.Span);
        _stepMs += e.ElapsedMs;
        _stepBytes += e.BytesPerRank;
        _stepPredictedMs += e.PredictedDenseMs;
        _stepEntries += values.Length;
    }

    /// <inheritdoc />
    public GradientHookStats CompleteStep(long step)
    {
        var stats = new GradientHookStats(0, _stepMs, _stepEntries, _stepBytes, 1, ExchangeMode.Dense, 1, false, _stepPredictedMs);
        _stepMs = _stepBytes = _stepPredictedMs = 0;
        _stepEntries = 0;
        return stats;
    }

    /// <inheritdoc />
    public void SaveState(Stream stream) { }

    /// <inheritdoc />
    public void LoadState(Stream stream) { }

    void IElasticHook.LoadRedistributed(IReadOnlyList<Stream> states, int rank, int size) { }

    /// <inheritdoc />
    public void Dispose() { }
}

/// <summary>Settings of <see cref="CompressionHook"/>.</summary>
public sealed class CompressionHookOptions
{
    /// <summary>Compressor. Default SIDCo-E.</summary>
    public CompressorKind Compressor { get; set; } = CompressorKind.SidcoExponential;

    /// <summary>Compressor settings (density, stages, policies).</summary>
    public CompressorOptions Compression { get; set; } = new();

    /// <summary>Keep a residual of what was not sent. Default true.</summary>
    public bool ErrorFeedback { get; set; } = true;

    /// <summary>
    /// Sparse, dense or automatic exchange. Default Auto, which also times once per run whether compressing pays and,
    /// unless compressed steps are more than 5 % faster than dense ones, stops compressing.
    /// </summary>
    public ExchangeMode Exchange { get; set; } = ExchangeMode.Auto;

    /// <summary>How gradient values travel, dense and sparse. Default <see cref="WirePrecision.Float32"/>.</summary>
    public WirePrecision Wire { get; set; } = WirePrecision.Float32;

    /// <summary>
    /// DGC's momentum correction: each worker keeps a local velocity u = m u + g, compresses u (with
    /// error feedback) instead of g, and clears the sent entries of u; the optimizer must then step
    /// without momentum of its own. 0 disables it. Default 0.
    /// </summary>
    public double MomentumCorrection { get; set; }

    /// <summary>Steps at the start that use dense allreduce without compression (as DGC's warm-up). Default 0.</summary>
    public long DenseWarmupSteps { get; set; }

    /// <summary>
    /// DGC's exponential sparsity warm-up: over this many compressed steps after the dense warm-up, the
    /// density falls geometrically from <see cref="DensityWarmupStart"/> to the target, so the first
    /// steps, whose gradients change fastest, are not starved. 0 disables it. Default 0.
    /// </summary>
    public long DensityWarmupSteps { get; set; }

    /// <summary>DGC's first warm-up density.</summary>
    internal const double DefaultDensityWarmupStart = 0.25;

    /// <summary>The density the warm-up starts from (DGC uses 0.25). Must be in (target, 1]. Default 0.25.</summary>
    public double DensityWarmupStart { get; set; } = DefaultDensityWarmupStart;

    /// <summary>Kernel backend (CPU SIMD by default). Backends with device state are not thread-safe: give each worker's hook its
    /// own.</summary>
    internal IGradientKernels? Kernels { get; set; }

    /// <summary>Dispose <see cref="Kernels"/> with the hook (when the hook was given its own backend). Default false.</summary>
    internal bool OwnsKernels { get; set; }

    /// <summary>Steps at the target density before Auto times whether compressing pays (tests shorten it).</summary>
    internal int PayoffDelaySteps { get; set; } = CompressionPayoff.DefaultDelaySteps;

    /// <summary>Cost model to use instead of probing the communicator.</summary>
    public CostModel? CostModel { get; set; }

    /// <summary>
    /// The fewest entries a worker sends per step: the density is raised to this many entries of the gradient, and where
    /// that is half the gradient or more the exchange is dense without compression (a sparse entry carries an index and a
    /// value, twice a dense entry's bytes, so a selection of half the gradient saves nothing). 0: no floor. Default 0.
    /// </summary>
    public long MinimumSelected { get; set; }

    /// <summary>
    /// Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid option; the compressor's settings are checked
    /// by <see cref="CompressorOptions.Validate"/>. The hook calls it before its first step.
    /// </summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Compression);
        if (!Enum.IsDefined(Compressor)) throw new ArgumentOutOfRangeException(nameof(Compressor), Compressor, "Unknown compressor.");
        if (!Enum.IsDefined(Exchange)) throw new ArgumentOutOfRangeException(nameof(Exchange), Exchange, "Unknown exchange mode.");
        if (!Enum.IsDefined(Wire)) throw new ArgumentOutOfRangeException(nameof(Wire), Wire, "Unknown wire precision.");
        Compression.Validate();
        if (MomentumCorrection is < 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(MomentumCorrection), MomentumCorrection, "MomentumCorrection must be in [0, 1).");
        if (DenseWarmupSteps < 0)
            throw new ArgumentOutOfRangeException(nameof(DenseWarmupSteps), DenseWarmupSteps, "DenseWarmupSteps must not be negative.");
        if (DensityWarmupSteps < 0)
            throw new ArgumentOutOfRangeException(nameof(DensityWarmupSteps), DensityWarmupSteps,
                "DensityWarmupSteps must not be negative.");
        if (!(DensityWarmupStart > 0 && DensityWarmupStart <= 1) || (DensityWarmupSteps > 0 && DensityWarmupStart <= Compression.Density))
        {
            throw new ArgumentOutOfRangeException(nameof(DensityWarmupStart), DensityWarmupStart,
                $"DensityWarmupStart must be above the target density {Compression.Density} and at most 1.");
        }
        if (MinimumSelected < 0)
            throw new ArgumentOutOfRangeException(nameof(MinimumSelected), MinimumSelected, "MinimumSelected must not be negative.");
    }
}

/// <summary>
/// The default hook: error feedback + compressor + sparse/dense exchange.
/// acc = g + residual; select with the compressor; exchange the selections (sparse allreduce, or
/// dense when the cost model says so); residual = acc with the sent entries zeroed.
/// </summary>
public sealed class CompressionHook(CompressionHookOptions options) : IGradientHook, IElasticHook, IGradientHookNotes
{
    private readonly CompressionHookOptions _options = options ?? throw new ArgumentNullException(nameof(options));
    private GradientCompressor? _compressor;
    private ErrorFeedback? _feedback;
    private GradientExchange? _exchange;
    private readonly SparseGradient _sparse = new();
    private ErrorFeedback? _velocity; // the local velocity of momentum correction (ErrorFeedback gives it checksummed save/load)
    private CompressorKind _kind; // the compressor in effect: None where MinimumSelected makes the exchange dense
    private CompressorOptions _compression = new(); // the compressor's settings, with the density MinimumSelected raises
    private CompressionPayoff? _payoff; // Auto's calibration of whether compressing pays, when it applies
    private long _lastReduceEnd;        // when the previous step's exchange ended (0: none yet), to time a step whole
    private bool _payoffNoted;

    /// <summary>The compressor in use (after <see cref="Initialize"/>).</summary>
    public GradientCompressor Compressor => _compressor ?? throw new InvalidOperationException("Initialize must be called first.");

    /// <summary>The residual memory, or null without error feedback.</summary>
    public ErrorFeedback? Feedback => _feedback;

    /// <inheritdoc />
    public void Initialize(GradientHookContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        _options.Validate();
        var comm = context.Communicator;
        (_kind, _compression) = Effective(_options, context.Length);
        _compressor = Compressors.Create(_kind, _compression, _options.Kernels);
        comm.VerifyAgreement("the compressor and density",
            CommunicatorExtensions.Fingerprint($"{_compressor.Name}/{_compression.Density:R}/{_options.ErrorFeedback}"));
        _feedback = _options.ErrorFeedback && _compressor.Compresses ? new ErrorFeedback(context.Length, "gradient bucket") : null;
        _velocity = _options.MomentumCorrection > 0 ? new ErrorFeedback(context.Length, "momentum velocity") : null;
        var mode = _compressor.Compresses ? _options.Exchange : ExchangeMode.Dense;
        _exchange = new GradientExchange(comm, context.Length, mode, _options.Wire, _options.CostModel, _options.Kernels);
        _lastReduceEnd = 0;
        _payoffNoted = false;
        // Auto also weighs not compressing, from the first step at the target density (after the warm-ups).
        _payoff = mode == ExchangeMode.Auto
            ? new CompressionPayoff(comm,
                _options.DenseWarmupSteps + (WarmsUp ? _options.DensityWarmupSteps : 0) + _options.PayoffDelaySteps)
            : null;
        Precompile(context.Length);
    }

    // The rehearsal's gradient runs this far into a second piece of the kernel backend, when the real gradient does.
    private const int RehearsalTail = 4096;

    // The compressor and settings in effect once MinimumSelected is applied to a gradient of this length.
    private static (CompressorKind Kind, CompressorOptions Compression) Effective(CompressionHookOptions options, int length)
    {
        long floor = Math.Min(options.MinimumSelected, length);
        if (floor <= 0 || options.Compressor == CompressorKind.None) return (options.Compressor, options.Compression);
        if (2 * floor >= length) return (CompressorKind.None, options.Compression);
        var raised = options.Compression.Clone();
        raised.Density = Math.Max(raised.Density, (double)floor / length);
        return (options.Compressor, raised);
    }

    // Start-up work that would otherwise land in the first steps' compress time (JIT compilation and first touches of the
    // buffers; docs/method.md has the sizes). Throwaway compressors with the same settings rehearse the run on a synthetic
    // gradient: the density warm-up's start, the target (from the second call on it takes the candidate path) and, for
    // SIDCo, fixed two- and three-stage estimation, so the code paths a run takes are compiled here.
    private const int FirstSelectionOvershoot = 2;

    private void Precompile(int length)
    {
        if (!Compressor.Compresses || length == 0) return;
        double target = _compression.Density;
        double first = WarmsUp ? _options.DensityWarmupStart : target;
        // Room for the largest selection the run is expected to make: estimators overshoot k by up to about 2x
        // at the warm-up's start, on a first gradient that matches no previous call.
        _sparse.Reserve((int)Math.Min(length, FirstSelectionOvershoot * Math.Ceiling(first * length)));
        // A fresh array's pages are mapped on first write: fault them in now, not inside the first compress call.
        _feedback?.Accumulator.Clear();
        _velocity?.Accumulator.Clear();

        // More than one of the backend's pieces when the real buffer has more: the combining code runs too.
        int n = Math.Min(length, Compressor.Kernels.PartitionLength + RehearsalTail);
        var rng = new Random(0);
        var gradient = new float[n];
        // a heavy-ish tail, like gradients
        for (int i = 0; i < n; i++) gradient[i] = (float)((rng.NextDouble() - 0.5) * Math.Exp(4 * rng.NextDouble()));
        var output = new SparseGradient();
        var feedback = _feedback is null ? null : new ErrorFeedback(n, "precompile"); // one throwaway residual for every rehearsal
        Rehearse(_compression, first > target ? [first, Math.Sqrt(first * target), target] : [target]);
        if (_kind.IsSidco() && target < SidcoCompressor.FirstStageTail)
        {
            for (int stages = 2; stages <= Math.Min(3, _compression.EffectiveMaxStages); stages++)
            {
                var fixedStages = _compression.Clone();
                fixedStages.AdaptiveStages = false;
                fixedStages.Stages = stages;
                Rehearse(fixedStages, [target]);
            }
        }

        void Rehearse(CompressorOptions options, double[] densities)
        {
            var compressor = Compressors.Create(_kind, options, _options.Kernels);
            foreach (double density in densities)
            {
                compressor.SetDensity(density);
                for (int call = 0; call < 3; call++) compressor.Compress(gradient, output, feedback);
            }
        }
    }

    /// <summary>
    /// <see cref="ExchangeMode.Auto"/>'s decision whether compressing pays on these links (null until the calibration
    /// steps are over, and for a fixed exchange mode).
    /// </summary>
    internal PayoffDecision? Payoff => _payoff?.Decision;

    string? IGradientHookNotes.TakeNote()
    {
        if (_payoffNoted || Payoff is not { } d) return null;
        _payoffNoted = true;
        long first = d.Step - 2 * CompressionPayoff.Rounds + 1;
        return $"SIDCo: ExchangeMode.Auto timed steps {first}-{d.Step}: compressed {d.CompressedMs:F1} ms, dense {d.DenseMs:F1} ms a step "
            + "(the slowest worker's medians); "
            + (d.SkipsCompression
                ? $"compressing did not pay by more than {CompressionPayoff.TieMargin:P0}, so the whole gradient is exchanged densely " +
                    $"from now on."
                : "compressing goes on.");
    }

    /// <inheritdoc />
    public GradientHookStats Reduce(Span<float> gradient, long step)
    {
        if (_exchange is null || _compressor is null) throw new InvalidOperationException("Initialize must be called first.");
        var route = step < _options.DenseWarmupSteps || _payoff is null ? PayoffRoute.Compress : _payoff.RouteAt(step);
        bool dense = step < _options.DenseWarmupSteps || !_compressor.Compresses || route is PayoffRoute.ProbeDense or PayoffRoute.Dense;
        var stats = ReduceStep(_exchange, _compressor, gradient, step, dense);
        if (_payoff is null) return stats;
        long end = Stopwatch.GetTimestamp();
        double stepMs = _lastReduceEnd == 0 ? double.NaN : Stopwatch.GetElapsedTime(_lastReduceEnd, end).TotalMilliseconds;
        _lastReduceEnd = end;
        _payoff.Observe(step, route, stats.Skipped, stepMs);
        // Where the run has just decided to go dense, what error feedback held back is dropped, as at the end of any run with it:
        // sent in one step, the updates of tens of steps would land at once (docs/distributed.md).
        if (route != PayoffRoute.Dense && _payoff.Decision is { SkipsCompression: true }) _feedback?.Reset();
        return stats;
    }

    // One step: the dense exchange of the whole gradient where `dense`, else compression and the exchange of the selection.
    private GradientHookStats ReduceStep(GradientExchange exchange, GradientCompressor compressor, Span<float> gradient, long step,
        bool dense)
    {
        // The compressor checks its own input in its measuring pass; a dense step, and the velocity of momentum correction
        // (which would keep a NaN for good), are checked here first, under the same policy.
        if ((dense || _velocity is not null) && NonFinite.FirstIndex(gradient) is var bad and >= 0)
        {
            if (_compression.NonFinite == NonFinitePolicy.Throw)
                throw new NonFiniteGradientException("gradient bucket", bad, gradient[bad]);
            // This worker contributes nothing; it still joins the exchange its peers make, so that none of them waits.
            if (dense)
            {
                gradient.Clear();
                var none = exchange.AllReduceDense(gradient);
                return new GradientHookStats(0, none.ElapsedMs, 0, none.BytesPerRank, 1, ExchangeMode.Dense, 1, true,
                    none.PredictedDenseMs);
            }
            _sparse.Reset(gradient.Length);
            var empty = exchange.AllReduce(_sparse, gradient);
            return new GradientHookStats(0, empty.ElapsedMs, 0, empty.BytesPerRank, 0, empty.Mode, 0, true, empty.PredictedMs,
                empty.WaitMs);
        }
        if (dense)
        {
            // Dense steps still carry the momentum the optimizer does not apply.
            if (_velocity is not null) AccumulateVelocity(gradient).CopyTo(gradient);
            var d = exchange.AllReduceDense(gradient);
            return new GradientHookStats(0, d.ElapsedMs, gradient.Length, d.BytesPerRank, 1, ExchangeMode.Dense, 1, false,
                d.PredictedDenseMs);
        }
        long start = Stopwatch.GetTimestamp();
        ReadOnlySpan<float> toCompress = _velocity is not null ? AccumulateVelocity(gradient) : gradient;
        if (WarmsUp) compressor.SetDensity(DensityAt(step));
        var c = compressor.Compress(toCompress, _sparse, _feedback);
        if (_velocity is not null)
        {
            var u = _velocity.Accumulator;
            foreach (int i in _sparse.Indices) u[i] = 0; // momentum factor masking: what was sent stops accumulating
        }
        double compressMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        var e = exchange.AllReduce(_sparse, gradient);
        return new GradientHookStats(compressMs, e.ElapsedMs, c.Selected, e.BytesPerRank, c.AchievedOverTarget, e.Mode, c.Stages,
            c.Skipped, e.PredictedMs, e.WaitMs);
    }

    // The sparsity warm-up runs only while its start is above the density in effect (MinimumSelected may raise that).
    private bool WarmsUp => _options.DensityWarmupSteps > 0 && _options.DensityWarmupStart > _compression.Density;

    // Momentum correction: u = m u + g on this worker; returns u.
    private Span<float> AccumulateVelocity(ReadOnlySpan<float> gradient)
    {
        var u = _velocity!.Accumulator;
        TensorPrimitives.MultiplyAdd(u, (float)_options.MomentumCorrection, gradient, u);
        return u;
    }

    /// <summary>The density the compressor targets at <paramref name="step"/> (the target once the warm-ups are over).</summary>
    public double DensityAt(long step)
    {
        double target = _compression.Density;
        long t = step - _options.DenseWarmupSteps;
        if (t < 0) return 1;
        if (t >= _options.DensityWarmupSteps || !WarmsUp) return target;
        double start = _options.DensityWarmupStart;
        return start * Math.Pow(target / start, (double)t / _options.DensityWarmupSteps);
    }

    /// <inheritdoc />
    public void SaveState(Stream stream)
    {
        using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        Compressor.SaveState(w);
        w.Write(_feedback is not null);
        w.Write(_velocity is not null);
        w.Flush();
        _feedback?.Save(stream);
        _velocity?.Save(stream);
    }

    void IElasticHook.LoadRedistributed(IReadOnlyList<Stream> states, int rank, int size)
    {
        ArgumentNullException.ThrowIfNull(states);
        if (states.Count == 0) throw new InvalidDataException("No saved worker state to resume from.");
        // Each saved state is read whole into a throwaway compressor and residuals; only then is anything changed here.
        var compressor = Compressors.Create(_kind, _compression, _options.Kernels);
        var feedback = _feedback is null ? null : new ErrorFeedback(_feedback.Length, _feedback.Name);
        var velocity = _velocity is null ? null : new ErrorFeedback(_velocity.Length, _velocity.Name);
        for (int saved = 0; saved < states.Count; saved++)
        {
            bool additive = saved % size == rank, own = saved == rank % states.Count;
            if (!additive && !own) continue;
            var candidate = Compressors.Create(_kind, _compression, _options.Kernels);
            var savedFeedback = feedback is null ? null : new ErrorFeedback(feedback.Length, feedback.Name);
            var savedVelocity = velocity is null ? null : new ErrorFeedback(velocity.Length, velocity.Name);
            ReadState(states[saved], candidate, savedFeedback, savedVelocity);
            if (own) compressor = candidate;
            if (!additive) continue;
            if (feedback is not null) TensorPrimitives.Add(feedback.Residual, savedFeedback!.Residual, feedback.Accumulator);
            if (velocity is not null) TensorPrimitives.Add(velocity.Residual, savedVelocity!.Residual, velocity.Accumulator);
        }
        _compressor = compressor;
        if (feedback is not null) _feedback!.Restore(feedback.Residual);
        if (velocity is not null) _velocity!.Restore(velocity.Residual);
    }

    // Reads one saved state (as SaveState wrote it) into the given compressor and residuals.
    private void ReadState(Stream stream, GradientCompressor compressor, ErrorFeedback? feedback, ErrorFeedback? velocity)
    {
        using var r = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        compressor.LoadState(r);
        bool hasFeedback = r.ReadBoolean(), hasVelocity = r.ReadBoolean();
        if (hasFeedback != feedback is not null) throw new InvalidDataException("Checkpoint and options disagree on error feedback.");
        if (hasVelocity != velocity is not null) throw new InvalidDataException("Checkpoint and options disagree on momentum correction.");
        feedback?.Load(stream);
        velocity?.Load(stream);
    }

    /// <inheritdoc />
    public void LoadState(Stream stream)
    {
        using var r = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        Compressor.LoadState(r);
        bool hasFeedback = r.ReadBoolean(), hasVelocity = r.ReadBoolean();
        if (hasFeedback != _feedback is not null) throw new InvalidDataException("Checkpoint and options disagree on error feedback.");
        if (hasVelocity != _velocity is not null) throw new InvalidDataException("Checkpoint and options disagree on momentum correction.");
        _feedback?.Load(stream);
        _velocity?.Load(stream);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_options.OwnsKernels) (_options.Kernels as IDisposable)?.Dispose();
    }
}
