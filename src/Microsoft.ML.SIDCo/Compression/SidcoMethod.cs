using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// One of SIDCo's sparsity-inducing distributions (docs/method.md, "Single-stage fits"): the statistics its fits need, the
/// first stage's fit to all magnitudes a, and a later stage's fit to the excesses y = w - t of the exceedances w.
/// </summary>
internal abstract class SidcoFamily
{
    /// <summary>The family of a SIDCo compressor.</summary>
    public static SidcoFamily For(CompressorKind kind, GammaQuantileMethod gammaQuantile) => kind switch
    {
        CompressorKind.SidcoExponential => new Exponential(),
        CompressorKind.SidcoGammaPareto => new GammaPareto(gammaQuantile),
        CompressorKind.SidcoPareto => new GeneralizedPareto(),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a SIDCo variant."),
    };

    /// <summary>What the first stage needs from the measuring pass besides the mean of a.</summary>
    public abstract StatisticsKinds FirstStageStatistics { get; }

    /// <summary>What a later stage needs of the exceedances besides their count, sum and minimum.</summary>
    public abstract StatisticsKinds PeaksStatistics { get; }

    /// <summary>
    /// True when the first stage's fit has a shape: its quantile is the mean times a function of the shape, so a call may
    /// rescale the last fit instead of measuring the shape's statistic (<see cref="SidcoShapeReuse"/>).
    /// </summary>
    public abstract bool HasShape { get; }

    /// <summary>eta with P(a &gt; eta) = <paramref name="tail"/> under the fit to all magnitudes.</summary>
    public abstract double FirstStage(in GradientStatistics a, double tail);

    /// <summary>eta_y with P(y &gt; eta_y) = <paramref name="tail"/> under the fit to excesses of this mean and variance.</summary>
    public abstract double LaterStage(double meanY, double varianceY, double tail);

    /// <summary>SIDCo-E: exponential at every stage (scale = mean).</summary>
    private sealed class Exponential : SidcoFamily
    {
        public override StatisticsKinds FirstStageStatistics => StatisticsKinds.Basic;
        public override StatisticsKinds PeaksStatistics => StatisticsKinds.Basic;
        public override bool HasShape => false;
        public override double FirstStage(in GradientStatistics a, double tail) =>
            ThresholdEstimators.ExponentialThreshold(a.MeanAbs, tail);
        public override double LaterStage(double meanY, double varianceY, double tail) =>
            ThresholdEstimators.ExponentialThreshold(meanY, tail);
    }

    /// <summary>SIDCo-GP: gamma first stage (from the mean log), generalized Pareto on the peaks.</summary>
    private sealed class GammaPareto(GammaQuantileMethod quantile) : SidcoFamily
    {
        public override StatisticsKinds FirstStageStatistics => StatisticsKinds.LogMagnitudes;
        public override StatisticsKinds PeaksStatistics => StatisticsKinds.TailSquares;
        public override bool HasShape => true;

        public override double FirstStage(in GradientStatistics a, double tail)
        {
            // Constant data has no gamma fit: the exponential is its limit.
            return ThresholdEstimators.FitGamma(a.MeanAbs, a.MeanLogAbs) is { } gamma
                ? ThresholdEstimators.GammaThreshold(gamma, tail, quantile)
                : ThresholdEstimators.ExponentialThreshold(a.MeanAbs, tail);
        }

        public override double LaterStage(double meanY, double varianceY, double tail) => ParetoTail(meanY, varianceY, tail);
    }

    /// <summary>SIDCo-P: generalized Pareto (by moments) at every stage.</summary>
    private sealed class GeneralizedPareto : SidcoFamily
    {
        public override StatisticsKinds FirstStageStatistics => StatisticsKinds.Squares;
        public override StatisticsKinds PeaksStatistics => StatisticsKinds.TailSquares;
        public override bool HasShape => true;
        public override double FirstStage(in GradientStatistics a, double tail) => ParetoTail(a.MeanAbs, a.VarianceAbs, tail);
        public override double LaterStage(double meanY, double varianceY, double tail) => ParetoTail(meanY, varianceY, tail);
    }

    private static double ParetoTail(double mean, double variance, double tail)
        => ThresholdEstimators.ParetoThreshold(ThresholdEstimators.FitGeneralizedPareto(mean, variance), tail);
}

/// <summary>What the multi-stage loop reads beyond the measuring pass; the compressor answers from its caches and candidates.</summary>
internal interface ISidcoPasses
{
    /// <summary>
    /// The exceedances of the previous call's first-stage threshold eta1', summed by the measuring pass, when they cut a
    /// tail of about the first stage's size (else null); see <see cref="SidcoPeaksReuse"/>.
    /// </summary>
    ExceedanceStatistics? Peaks(in GradientStatistics stats, double delta);

    /// <summary>eta1' itself (the threshold the peaks exceed).</summary>
    float PeaksBound { get; }

    /// <summary>The first stage's threshold rescaled from the last fit by this call's mean.</summary>
    double RescaledFirstStage(double mean);

    /// <summary>A pass for the first stage's statistics, when they were skipped but the peaks cannot stand in.</summary>
    GradientStatistics MeasureFirstStage(ReadOnlySpan<float> acc);

    /// <summary>Count, sum, squares and minimum of the magnitudes above <paramref name="eta"/> (compared in single precision).</summary>
    ExceedanceStatistics Exceedances(ReadOnlySpan<float> acc, double eta);
}

/// <summary>The threshold, the stages used, the next call's peaks bound (NaN after one stage), and whether stage 1 was fitted.</summary>
internal readonly record struct SidcoEstimate(float Threshold, int Stages, float NextBound, bool ShapeFitted);

/// <summary>
/// SIDCo's multi-stage threshold estimation (docs/method.md, "Multi-stage estimation"), written once over a
/// <see cref="SidcoFamily"/>: stage 1 fits all magnitudes at the 25 % tail; each later stage fits the exceedances of the
/// previous threshold at the ratio (delta / 0.25)^(1 / (M - 1)), so the M stages' tails multiply to delta.
/// </summary>
internal static class SidcoMethod
{
    /// <summary>The tail of the first of several stages.</summary>
    public const double FirstStageTail = 0.25;

    /// <summary>
    /// The threshold on the magnitudes of <paramref name="acc"/> for tail <paramref name="delta"/> in at most
    /// <paramref name="stages"/> stages (M). <paramref name="shapeSkipped"/>: the pass that measured
    /// <paramref name="stats"/> left out the first stage's shape statistic (<see cref="SidcoShapeReuse"/>).
    /// </summary>
    public static SidcoEstimate Estimate(
        SidcoFamily family, double delta, int stages, ReadOnlySpan<float> acc, in GradientStatistics stats, bool shapeSkipped,
            ISidcoPasses passes)
    {
        if (stages == 1 || delta >= FirstStageTail) return new((float)family.FirstStage(stats, delta), 1, float.NaN, true);

        // Stage 1. When the pass summed the exceedances of the previous call's eta1', stage 2 fits those; their share p
        // of the buffer is counted, and the later stages split delta / p between them.
        var peaks = passes.Peaks(stats, delta);
        double ratio = Math.Pow(delta / (peaks is { } p ? (double)p.Count / stats.Count : FirstStageTail), 1.0 / (stages - 1));
        double eta, eta1;
        bool fitted = true;
        if (!shapeSkipped) eta = eta1 = family.FirstStage(stats, FirstStageTail);
        else if (peaks is not null)
        {
            eta = passes.PeaksBound;
            eta1 = passes.RescaledFirstStage(stats.MeanAbs);
            fitted = false;
        }
        else eta = eta1 = family.FirstStage(passes.MeasureFirstStage(acc), FirstStageTail);

        // Stages 2..M: with t = min(w) over the exceedances w of eta, fit y = w - t and set eta = t + eta_y.
        int used = 1;
        for (int s = 2; s <= stages; s++)
        {
            var w = s == 2 && peaks is { } measured ? measured : passes.Exceedances(acc, eta);
            if (w.Count < 2) break; // nothing left to fit: keep the last threshold
            double t = w.Min;
            double next = t + family.LaterStage(w.Mean - t, w.Variance, ratio);
            if (!double.IsFinite(next)) break;
            eta = next;
            used++;
        }
        return new((float)eta, used, double.IsFinite(eta1) && eta1 > 0 ? (float)eta1 : float.NaN, fitted);
    }
}
