using System.Runtime.CompilerServices;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// SIDCo: fits a sparsity-inducing distribution to the gradient magnitudes with closed-form statistics and keeps the
/// entries above the fitted tail quantile. The method itself is <see cref="SidcoMethod"/> over a <see cref="SidcoFamily"/>;
/// this class runs it per call with the adaptive stage controller, the peaks and shape caches and the candidate prefilter.
/// </summary>
internal sealed class SidcoCompressor : GradientCompressor, ISidcoPasses
{
    /// <summary>Tail probability targeted by the first of several stages.</summary>
    public const double FirstStageTail = SidcoMethod.FirstStageTail;

    /// <summary>The first stage's shape is refitted on one call in this many (<see cref="SidcoShapeReuse"/>).</summary>
    public const int ShapeRefitInterval = SidcoShapeReuse.RefitInterval;

    /// <summary>
    /// From this many entries on, a pass over the buffer costs more than the call's fixed work (the fits), so the stage
    /// controller weighs added stages.
    /// </summary>
    public const int CostlyPassLength = 1 << 16;

    private readonly CompressorKind _kind;
    private readonly SidcoFamily _family;
    private readonly SidcoPeaksReuse _peaks = new();
    private readonly SidcoShapeReuse _shape = new();
    /// <summary>Creates a SIDCo compressor of the given family.</summary>
    public SidcoCompressor(CompressorKind kind, CompressorOptions options, IGradientKernels? kernels = null) : base(options, kernels)
    {
        if (!kind.IsSidco()) throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a SIDCo variant.");
        _kind = kind;
        _family = SidcoFamily.For(kind, Options.GammaQuantile);
        Controller = options.AdaptiveStages
            ? new AdaptiveStageController(options.Stages, Options.EffectiveMaxStages, options.AdaptationInterval,
                options.AdaptationTolerance)
            : null;
    }

    /// <inheritdoc />
    public override CompressorKind Kind => _kind;

    /// <summary>The adaptive stage controller, or null when the stage count is fixed.</summary>
    public AdaptiveStageController? Controller { get; }

    /// <summary>The stage count the next call will use.</summary>
    public int CurrentStages => Controller?.Stages ?? Options.Stages;

    /// <inheritdoc />
    private protected override bool UsesCandidates => true;

    // A call that estimates in several stages below the first stage's tail: its second stage can fit the peaks.
    private bool MultiStageCall => Options.Density < 1 && CurrentStages > 1 && EffectiveTail < FirstStageTail;

    /// <inheritdoc />
    private protected override float TailBound => MultiStageCall && _peaks.HasBound ? _peaks.Bound : float.PositiveInfinity;

    // This call rescales the last first-stage fit instead of measuring its shape statistic.
    private bool ReusesShape => _family.HasShape && MultiStageCall && _peaks.HasBound && _shape.CanReuse;

    // The tail the estimator aims at: the target density corrected by the controller's calibration.
    private double EffectiveTail => Math.Min(0.5, Options.Density * (Controller?.Calibration ?? 1));

    /// <inheritdoc />
    private protected override StatisticsKinds RequiredStatistics
        => (ReusesShape ? StatisticsKinds.Basic : _family.FirstStageStatistics) | _family.PeaksStatistics;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot path: full optimisation from the first call
    private protected override (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k,
        SparseGradient output)
    {
        var e = Estimate(acc, stats, ReusesShape);
        _peaks.Set(e.NextBound);
        _shape.Record(e.ShapeFitted, e.NextBound, stats.MeanAbs);
        SelectAboveThreshold(acc, e.Threshold, output);
        return (e.Threshold, e.Stages);
    }

    /// <summary>
    /// Estimates the threshold for the configured density (without selecting or changing state). When
    /// <paramref name="stats"/> carries a <see cref="GradientStatistics.Tail"/> of about the first stage's
    /// size, the second stage fits those exceedances instead of measuring its own.
    /// </summary>
    /// <param name="acc">The values to estimate on.</param>
    /// <param name="stats">Their statistics, with the mean log (SIDCo-GP) or the squares (SIDCo-P) measured.</param>
    public (float Threshold, int Stages) EstimateThreshold(ReadOnlySpan<float> acc, in GradientStatistics stats)
    {
        var e = Estimate(acc, stats, shapeSkipped: false);
        return (e.Threshold, e.Stages);
    }

    private SidcoEstimate Estimate(ReadOnlySpan<float> acc, in GradientStatistics stats, bool shapeSkipped)
    {
        if (Options.Density >= 1) return new(-1f, 1, float.NaN, true); // everything passes |x| > -1
        return SidcoMethod.Estimate(_family, EffectiveTail, CurrentStages, acc, stats, shapeSkipped, this);
    }

    ExceedanceStatistics? ISidcoPasses.Peaks(in GradientStatistics stats, double delta) => SidcoPeaksReuse.Usable(stats, delta);

    float ISidcoPasses.PeaksBound => _peaks.Bound;

    double ISidcoPasses.RescaledFirstStage(double mean) => _shape.Rescale(mean);

    GradientStatistics ISidcoPasses.MeasureFirstStage(ReadOnlySpan<float> acc) => Kernels.Measure(acc, _family.FirstStageStatistics);

    // Later stages look only at the tail: when it lies above the candidates' bound, the candidates hold all of it.
    ExceedanceStatistics ISidcoPasses.Exceedances(ReadOnlySpan<float> acc, double eta)
        => Candidates.Covers(eta) ? Candidates.Exceedances((float)eta) : Kernels.MeasureExceedances(acc, (float)eta);

    /// <inheritdoc />
    public override void SaveState(BinaryWriter writer)
    {
        base.SaveState(writer);
        _peaks.Save(writer);
        _shape.Save(writer);
        writer.Write(Controller is not null);
        Controller?.Save(writer);
    }

    /// <inheritdoc />
    public override void LoadState(BinaryReader reader)
    {
        base.LoadState(reader);
        _peaks.Load(reader);
        _shape.Load(reader);
        bool adaptive = reader.ReadBoolean();
        if (adaptive != Controller is not null) throw new InvalidDataException("Compressor state and options disagree on AdaptiveStages.");
        Controller?.Load(reader);
    }

    /// <inheritdoc />
    private protected override void OnDensityChanged() => Controller?.TargetMoved();

    /// <inheritdoc />
    private protected override void OnEstimated(int estimatedCount, int k, int length) =>
        Controller?.Observe((double)estimatedCount / Math.Max(1, k), passesCostly: length >= CostlyPassLength);
}
