using MathNet.Numerics;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Compression;

[Trait(Category.Name, Category.Unit)]
public class ThresholdEstimatorTests
{
    [Theory]
    [InlineData(0.1)]
    [InlineData(0.01)]
    [InlineData(0.001)]
    public void SingleStageExponentialHitsTargetOnLaplace(double density)
    {
        var g = SyntheticGradients.Laplace(1_000_000, seed: 11);
        var c = Compressors.Create(CompressorKind.SidcoExponential,
            new CompressorOptions { Density = density, AdaptiveStages = false, Stages = 1 });
        var stats = c.Compress(g, new SparseGradient());
        Assert.InRange(stats.AchievedOverTarget, 0.95, 1.05);
        Assert.Equal(1, stats.Stages);
    }

    [Theory]
    [InlineData(0.3, 2.0)]
    [InlineData(0.7, 0.5)]
    [InlineData(1.5, 3.0)]
    public void GammaFitRecoversShapeAndScale(double shape, double scale)
    {
        var x = SyntheticGradients.Gamma(1_000_000, shape, scale, seed: 5);
        double mean = x.Average(v => (double)v);
        double meanLog = x.Average(v => Math.Log(v + 2.2e-16));
        var fit = ThresholdEstimators.FitGamma(mean, meanLog)!.Value;
        Assert.InRange(fit.Shape / shape, 0.95, 1.05);
        Assert.InRange(fit.Scale / scale, 0.95, 1.05);
    }

    [Theory]
    [InlineData(-0.2, 1.0)]
    [InlineData(0.1, 2.0)]
    [InlineData(0.2, 0.5)]
    public void ParetoMomentFitRecoversShapeAndScale(double xi, double sigma)
    {
        var y = SyntheticGradients.GeneralizedPareto(1_000_000, xi, sigma, seed: 9);
        double m = y.Average();
        double v = y.Sum(t => (t - m) * (t - m)) / (y.Length - 1);
        var fit = ThresholdEstimators.FitGeneralizedPareto(m, v);
        Assert.InRange(fit.Shape / xi, 0.95, 1.05);
        Assert.InRange(fit.Scale / sigma, 0.95, 1.05);
    }

    [Theory]
    [InlineData(0.3, 0.25)]
    [InlineData(0.7, 0.1)]
    [InlineData(1.5, 0.01)]
    [InlineData(4.0, 0.001)]
    [InlineData(0.5, 0.001)]
    public void ExactGammaQuantileMatchesMathNetInverse(double shape, double tail)
    {
        double ours = ThresholdEstimators.GammaUpperQuantile(shape, tail);
        double reference = SpecialFunctions.GammaLowerRegularizedInv(shape, 1 - tail);
        Assert.True(Math.Abs(ours - reference) <= 1e-6 * reference, $"ours {ours:R} vs MathNet {reference:R}");
    }

    [Fact]
    public void ApproximateGammaQuantileIsExactForShapeOne()
    {
        // For alpha = 1 the gamma is exponential and ln Gamma(1) = 0, so both forms reduce to -beta ln(delta).
        var fit = new GammaFit(1.0, 2.5);
        double exact = ThresholdEstimators.GammaThreshold(fit, 0.01, GammaQuantileMethod.Exact);
        double approx = ThresholdEstimators.GammaThreshold(fit, 0.01, GammaQuantileMethod.Approximate);
        Assert.Equal(-2.5 * Math.Log(0.01), exact, 1e-9);
        Assert.Equal(exact, approx, 1e-9);
    }

    [Fact]
    public void ParetoThresholdTendsToExponentialAsShapeVanishes()
    {
        double limit = ThresholdEstimators.ParetoThreshold(new ParetoFit(0, 3), 0.001);
        double tiny = ThresholdEstimators.ParetoThreshold(new ParetoFit(1e-5, 3), 0.001);
        Assert.Equal(-3 * Math.Log(0.001), limit, 1e-12);
        Assert.Equal(limit, tiny, 1e-3);
        // Exactly exponential moments (v = m^2) give xi = 0.
        Assert.Equal(0, ThresholdEstimators.FitGeneralizedPareto(2, 4).Shape, 12);
    }

    [Fact]
    public void DegenerateInputsHaveNoGammaFit()
    {
        Assert.Null(ThresholdEstimators.FitGamma(0, 0));
        Assert.Null(ThresholdEstimators.FitGamma(2, Math.Log(2))); // constant data: s = 0
        Assert.Equal(new ParetoFit(0, 2), ThresholdEstimators.FitGeneralizedPareto(2, 0));
    }
}
