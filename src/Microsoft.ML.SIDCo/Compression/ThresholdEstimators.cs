using MathNet.Numerics;
using MathNet.Numerics.Distributions;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>A fitted gamma distribution (shape alpha, scale beta).</summary>
internal readonly record struct GammaFit(double Shape, double Scale);

/// <summary>A fitted generalized Pareto distribution (shape xi, scale sigma), location 0.</summary>
internal readonly record struct ParetoFit(double Shape, double Scale);

/// <summary>
/// Closed-form fits of the sparsity-inducing distributions and their tail quantiles. Every function
/// is scale-equivariant and guarded against degenerate input (empty, constant, zero).
/// </summary>
internal static class ThresholdEstimators
{
    /// <summary>Below this |xi| the generalized Pareto threshold uses its exponential limit.</summary>
    public const double ParetoShapeEpsilon = 1e-7;

    /// <summary>Exponential fit (MLE scale = mean): the threshold whose tail probability is <paramref name="tail"/>.</summary>
    public static double ExponentialThreshold(double mean, double tail) => -mean * Math.Log(tail);

    /// <summary>
    /// Approximate MLE of the gamma shape from s = ln(mean) - mean(ln x): alpha = (3 - s + sqrt((s-3)^2 + 24 s)) / (12 s),
    /// beta = mean / alpha. Returns null when the input is degenerate (s not positive: constant or empty data).
    /// </summary>
    public static GammaFit? FitGamma(double mean, double meanLog)
    {
        if (!(mean > 0)) return null;
        double s = Math.Log(mean) - meanLog;
        if (!(s > 1e-12) || double.IsInfinity(s)) return null;
        double alpha = (3 - s + Math.Sqrt((s - 3) * (s - 3) + 24 * s)) / (12 * s);
        return new GammaFit(alpha, mean / alpha);
    }

    /// <summary>The gamma threshold with tail probability <paramref name="tail"/>, exact or by the closed-form approximation.</summary>
    public static double GammaThreshold(GammaFit fit, double tail, GammaQuantileMethod method) => method switch
    {
        GammaQuantileMethod.Exact => fit.Scale * GammaUpperQuantile(fit.Shape, tail),
        _ => Math.Max(0, -fit.Scale * (Math.Log(tail) + SpecialFunctions.GammaLn(fit.Shape))),
    };

    /// <summary>
    /// Solves Q(a, x) = p for x, with Q the regularized upper incomplete gamma function (so x is the
    /// standard gamma's (1 - p) quantile). Working on the upper tail in log space keeps full relative
    /// accuracy for the small p that sparsification uses, where 1 - p rounds badly.
    /// </summary>
    public static double GammaUpperQuantile(double a, double p)
    {
        if (!(a > 0)) throw new ArgumentOutOfRangeException(nameof(a), a, "The gamma shape must be positive.");
        if (!(p > 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "The tail probability must be in (0, 1).");
        double logP = Math.Log(p), lnGammaA = SpecialFunctions.GammaLn(a);
        double F(double x) => Math.Log(SpecialFunctions.GammaUpperRegularized(a, x)) - logP; // decreasing in x

        // Bracket: Q(lo) > p > Q(hi).
        double z = Normal.InvCDF(0, 1, 1 - p);
        double guess = a * Math.Pow(Math.Max(1e-3, 1 - 1 / (9 * a) + z * Math.Sqrt(1 / (9 * a))), 3);
        double lo = 0, hi = Math.Max(guess, 1e-300);
        while (F(hi) > 0) { lo = hi; hi *= 2; if (hi > 1e300) return hi; }
        double x = guess > lo && guess < hi ? guess : 0.5 * (lo + hi);
        for (int iter = 0; iter < 200; iter++)
        {
            double f = F(x);
            if (f > 0) lo = x; else hi = x;
            // d/dx ln Q = -pdf(x) / Q(x), pdf(x) = x^(a-1) e^-x / Gamma(a)
            double logPdf = (a - 1) * Math.Log(x) - x - lnGammaA;
            double logQ = f + logP;
            double step = f / -Math.Exp(logPdf - logQ);
            double next = x - step;
            if (!(next > lo && next < hi) || double.IsNaN(next)) next = lo > 0 ? Math.Sqrt(lo * hi) : 0.5 * hi;
            if (Math.Abs(next - x) <= 1e-14 * Math.Max(1, Math.Abs(x))) return next;
            x = next;
            if (hi - lo <= 1e-15 * hi) return x;
        }
        return x;
    }

    /// <summary>
    /// Method-of-moments fit of a generalized Pareto distribution to data y &gt;= 0 with mean <paramref name="mean"/>
    /// and unbiased variance <paramref name="variance"/>: r = m^2 / v, xi = (1 - r) / 2, sigma = m (r + 1) / 2.
    /// A zero variance (constant data) gives the exponential limit xi = 0, sigma = mean.
    /// </summary>
    public static ParetoFit FitGeneralizedPareto(double mean, double variance)
    {
        if (!(mean > 0)) return new ParetoFit(0, 0);
        if (!(variance > 0) || double.IsInfinity(variance)) return new ParetoFit(0, mean);
        double r = mean * mean / variance;
        return new ParetoFit(0.5 * (1 - r), 0.5 * mean * (r + 1));
    }

    /// <summary>The generalized Pareto threshold with tail probability <paramref name="tail"/>: (sigma / xi)(tail^-xi - 1), or -sigma
    /// ln(tail) as xi tends to 0.</summary>
    public static double ParetoThreshold(ParetoFit fit, double tail)
    {
        if (Math.Abs(fit.Shape) < ParetoShapeEpsilon) return -fit.Scale * Math.Log(tail);
        double eta = fit.Scale / fit.Shape * (Math.Pow(tail, -fit.Shape) - 1);
        // A negative shape has a finite upper end point sigma / |xi|; the quantile never exceeds it.
        return Math.Max(0, eta);
    }
}
