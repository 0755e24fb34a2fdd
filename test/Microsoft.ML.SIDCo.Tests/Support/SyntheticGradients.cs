using MathNet.Numerics.Distributions;

namespace Microsoft.ML.SIDCo.Tests.Support;

/// <summary>Seeded synthetic gradients from the distributions the method is specified against.</summary>
public static class SyntheticGradients
{
    public static float[] Laplace(int n, int seed, double scale = 1)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u = rng.NextDouble() - 0.5;
            x[i] = (float)(-scale * Math.Sign(u) * Math.Log(1 - 2 * Math.Abs(u)));
        }
        return x;
    }

    public static float[] Gamma(int n, double shape, double scale, int seed)
    {
        var dist = new Gamma(shape, 1 / scale, new Random(seed));
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)dist.Sample();
        return x;
    }

    /// <summary>Generalized Pareto draws by inversion: y = sigma / xi (U^-xi - 1).</summary>
    public static double[] GeneralizedPareto(int n, double xi, double sigma, int seed)
    {
        var rng = new Random(seed);
        var y = new double[n];
        for (int i = 0; i < n; i++)
        {
            double u = 1 - rng.NextDouble();
            y[i] = Math.Abs(xi) < 1e-12 ? -sigma * Math.Log(u) : sigma / xi * (Math.Pow(u, -xi) - 1);
        }
        return y;
    }

    /// <summary>|Student-t(3)| with random signs: a heavy-tailed gradient.</summary>
    public static float[] StudentT3(int n, int seed)
    {
        var dist = new StudentT(0, 1, 3, new Random(seed));
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)dist.Sample();
        return x;
    }

    /// <summary>Normal draws: their magnitudes are half-normal, a light tail.</summary>
    public static float[] Normal(int n, int seed)
    {
        var dist = new Normal(0, 1, new Random(seed));
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)dist.Sample();
        return x;
    }
}
