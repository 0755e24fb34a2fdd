using System.Runtime.CompilerServices;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// SIDCo: fits a sparsity-inducing distribution to the gradient magnitudes with closed-form
/// statistics and keeps the entries above the fitted tail quantile. Multi-stage: the first stage
/// targets a 25% tail on all magnitudes, later stages refit on the exceedances (peaks over threshold),
/// so the far tail is modelled by data from the tail itself.
/// </summary>
internal sealed class SidcoCompressor : GradientCompressor
{
    /// <summary>Tail probability targeted by the first of several stages.</summary>
    public const double FirstStageTail = 0.25;

    private readonly CompressorKind _kind;

    /// <summary>
    /// From this many entries on, a pass over the buffer (about 0.4 ns an entry) costs more than the
    /// call's fixed work (the fits, 5-10 microseconds), so the stage controller weighs added stages.
    /// </summary>
    public const int CostlyPassLength = 1 << 16;

    /// <summary>
    /// The previous call's first-stage threshold (its fitted 25 % tail quantile), or NaN before the first
    /// multi-stage call. The next call's measuring pass collects the exceedances of this bound, and the
    /// second stage fits them instead of reading the buffer again for the exceedances of its own
    /// first-stage threshold.
    /// </summary>
    private float _peaksBound = float.NaN;

    /// <summary>
    /// The second stage takes the exceedances of the previous call's bound only while that bound still
    /// cuts a tail of about the first stage's size: between half and twice <see cref="FirstStageTail"/>.
    /// Outside (the first call, a jump in the gradient's scale) it measures those of this call's bound.
    /// </summary>
    private const double PeaksTailSlack = 2;

    /// <summary>
    /// On calls whose second stage fits the peaks, the first stage of SIDCo-GP and SIDCo-P only sets the
    /// next call's bound, which needs to cut only about <see cref="FirstStageTail"/> (the share it cuts is
    /// counted). There the first stage's shape is refitted on one call in this many: the gamma shape, from
    /// the mean log, or the generalized-Pareto shape, from the variance; those are the statistics the
    /// measuring pass would add for the first stage alone. In between, the bound is the last fit's quantile
    /// rescaled by this call's mean: for a fixed shape, a gamma or generalized-Pareto quantile is
    /// proportional to the scale, and the scale to the mean. Calls whose threshold the first stage sets
    /// refit every time.
    /// </summary>
    public const int ShapeRefitInterval = 4;

    // The last first-stage fit's quantile divided by the mean it was fitted with: a function of the shape alone.
    private double _boundPerMean = double.NaN;

    // Calls since the first stage's shape was last fitted.
    private int _shapeAge;

    /// <summary>Creates a SIDCo compressor of the given family.</summary>
    public SidcoCompressor(CompressorKind kind, CompressorOptions options, IGradientKernels? kernels = null) : base(options, kernels)
    {
        if (!kind.IsSidco()) throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a SIDCo variant.");
        _kind = kind;
        Controller = options.AdaptiveStages
            ? new AdaptiveStageController(options.Stages, Options.EffectiveMaxStages, options.AdaptationInterval, options.AdaptationTolerance)
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loops: full optimisation from the first call, not after 30 calls at tier 0
    private static ExceedanceStatistics MeasureExceedances(ReadOnlySpan<float> values, float threshold)
    {
        long count = 0; double sum = 0, sumSq = 0; float min = float.PositiveInfinity;
        foreach (float v in values)
        {
            float a = MathF.Abs(v);
            if (a > threshold) { count++; sum += a; sumSq += (double)a * a; if (a < min) min = a; }
        }
        return new ExceedanceStatistics(count, sum, sumSq, min);
    }

    // A call that estimates in several stages below the first stage's tail: its second stage can fit the peaks.
    private bool MultiStageCall => Options.Density < 1 && CurrentStages > 1 && EffectiveTail < FirstStageTail;

    /// <inheritdoc />
    private protected override float TailBound => MultiStageCall && float.IsFinite(_peaksBound) ? _peaksBound : float.PositiveInfinity;

    // This call rescales the last first-stage fit instead of refitting it (SIDCo-GP and SIDCo-P; SIDCo-E's
    // exponential has no shape, and its fit needs only the mean, which every pass measures).
    private bool ReusesShape => _kind != CompressorKind.SidcoExponential && MultiStageCall && float.IsFinite(_peaksBound)
        && double.IsFinite(_boundPerMean) && _shapeAge + 1 < ShapeRefitInterval;

    // The tail the estimator aims at: the target density corrected by the controller's calibration.
    private double EffectiveTail => Math.Min(0.5, Options.Density * (Controller?.Calibration ?? 1));

    // What the first stage's fit needs besides the mean: the gamma fit the mean log, the generalized-Pareto fit the variance.
    private StatisticsKinds FirstStageStatistics => _kind switch
    {
        CompressorKind.SidcoGammaPareto => StatisticsKinds.LogMagnitudes,
        CompressorKind.SidcoPareto => StatisticsKinds.Squares,
        _ => StatisticsKinds.Basic,
    };

    // The later stages' fit of the peaks measured in the pass: SIDCo-E's exponential needs their count, sum
    // and minimum; the generalized Pareto of SIDCo-GP and SIDCo-P also their squares.
    private StatisticsKinds PeaksStatistics => _kind == CompressorKind.SidcoExponential ? StatisticsKinds.Basic : StatisticsKinds.TailSquares;

    /// <inheritdoc />
    private protected override StatisticsKinds RequiredStatistics => (ReusesShape ? StatisticsKinds.Basic : FirstStageStatistics) | PeaksStatistics;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k, SparseGradient output)
    {
        var e = Estimate(acc, stats, ReusesShape);
        _peaksBound = e.NextBound;
        if (e.ShapeFitted)
        {
            _boundPerMean = float.IsFinite(e.NextBound) && stats.MeanAbs > 0 ? e.NextBound / stats.MeanAbs : double.NaN;
            _shapeAge = 0;
        }
        else _shapeAge++;
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
        var e = Estimate(acc, stats, reuseShape: false);
        return (e.Threshold, e.Stages);
    }

    // The threshold, its stage count, the next call's peaks bound (this call's first-stage threshold; NaN when
    // single-stage) and whether the first stage was fitted (else the bound is the last fit rescaled).
    private readonly record struct Estimation(float Threshold, int Stages, float NextBound, bool ShapeFitted);

    // With reuseShape, stats lacks the first stage's statistics: the peaks' bound stands in for the first
    // stage, and the next bound is the last fit rescaled by this call's mean.
    private Estimation Estimate(ReadOnlySpan<float> acc, in GradientStatistics stats, bool reuseShape)
    {
        if (Options.Density >= 1) return new(-1f, 1, float.NaN, true); // everything passes |x| > -1
        double delta = EffectiveTail;
        int m = CurrentStages;
        if (m == 1 || delta >= FirstStageTail) return new((float)FirstStage(stats, delta), 1, float.NaN, true);

        double ratio = Math.Pow(delta / FirstStageTail, 1.0 / (m - 1));
        ExceedanceStatistics? peaks = null;
        if (stats.Tail is { Count: >= 2 } tail && stats.Count > 0)
        {
            // The peaks over last call's bound, measured in the first pass. Their share of the buffer is
            // counted, not assumed, so the later stages split what is left of the target between them.
            double share = (double)tail.Count / stats.Count;
            if (share >= FirstStageTail / PeaksTailSlack && share <= FirstStageTail * PeaksTailSlack && share > delta)
            {
                peaks = tail;
                ratio = Math.Pow(delta / share, 1.0 / (m - 1));
            }
        }
        double eta, firstStage;
        bool fitted = true;
        if (!reuseShape) eta = firstStage = FirstStage(stats, FirstStageTail);
        else if (peaks is not null)
        {
            eta = _peaksBound; // only used should the second stage find nothing to fit
            firstStage = stats.MeanAbs * _boundPerMean;
            fitted = false;
        }
        else eta = firstStage = FirstStage(Kernels.Measure(acc, FirstStageStatistics), FirstStageTail); // the bound no longer cuts a usable tail: fit after all
        int used = 1;
        for (int s = 2; s <= m; s++)
        {
            // Later stages look only at the tail: when it lies above the candidate bound, the candidates hold all of it.
            var ex = s == 2 && peaks is { } p ? p
                : HasCandidates && eta >= CandidateBound ? MeasureExceedances(Candidates.Values, (float)eta) : Kernels.MeasureExceedances(acc, (float)eta);
            if (ex.Count < 2) break; // nothing left to fit: keep the last threshold
            double t = ex.Min;
            double meanY = ex.Mean - t;
            double next = t + LaterStage(meanY, ex.Variance, ratio);
            if (!double.IsFinite(next)) break;
            eta = next;
            used++;
        }
        return new((float)eta, used, double.IsFinite(firstStage) && firstStage > 0 ? (float)firstStage : float.NaN, fitted);
    }

    private double FirstStage(in GradientStatistics stats, double tail)
    {
        double mean = stats.MeanAbs;
        switch (_kind)
        {
            case CompressorKind.SidcoGammaPareto:
                var gamma = ThresholdEstimators.FitGamma(mean, stats.MeanLogAbs);
                // Degenerate (constant) data has no gamma fit: the exponential one is the sane limit.
                return gamma is { } g ? ThresholdEstimators.GammaThreshold(g, tail, Options.GammaQuantile) : ThresholdEstimators.ExponentialThreshold(mean, tail);
            case CompressorKind.SidcoPareto:
                return ThresholdEstimators.ParetoThreshold(ThresholdEstimators.FitGeneralizedPareto(mean, stats.VarianceAbs), tail);
            default:
                return ThresholdEstimators.ExponentialThreshold(mean, tail);
        }
    }

    private double LaterStage(double meanY, double varianceY, double tail) => _kind == CompressorKind.SidcoExponential
        ? ThresholdEstimators.ExponentialThreshold(meanY, tail)
        : ThresholdEstimators.ParetoThreshold(ThresholdEstimators.FitGeneralizedPareto(meanY, varianceY), tail);

    /// <inheritdoc />
    public override void SaveState(BinaryWriter writer)
    {
        base.SaveState(writer);
        writer.Write(_peaksBound); // the next call's second stage depends on it: a resumed run continues exactly
        writer.Write(_boundPerMean);
        writer.Write(_shapeAge);
        writer.Write(Controller is not null);
        Controller?.Save(writer);
    }

    /// <inheritdoc />
    public override void LoadState(BinaryReader reader)
    {
        base.LoadState(reader);
        _peaksBound = reader.ReadSingle();
        _boundPerMean = reader.ReadDouble();
        _shapeAge = reader.ReadInt32();
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
