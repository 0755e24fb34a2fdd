using System.Runtime.CompilerServices;
using MathNet.Numerics.Distributions;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>No compression: every entry is sent (the dense baseline).</summary>
internal sealed class NoneCompressor(CompressorOptions options, IGradientKernels? kernels = null) : GradientCompressor(options, kernels)
{
    /// <inheritdoc />
    public override CompressorKind Kind => CompressorKind.None;

    /// <inheritdoc />
    public override bool Compresses => false;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loops: full optimisation from the first call, not after 30 calls at tier 0
    private protected override (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k,
        SparseGradient output)
    {
        output.Reserve(acc.Length);
        for (int i = 0; i < acc.Length; i++) output.Add(i, acc[i]);
        return (0f, 1);
    }
}

/// <summary>Exact top-k by magnitude (quickselect, O(n) expected; ties broken by lower index).</summary>
internal sealed class TopKCompressor(CompressorOptions options, IGradientKernels? kernels = null) : GradientCompressor(options, kernels)
{
    /// <inheritdoc />
    public override CompressorKind Kind => CompressorKind.TopK;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k,
        SparseGradient output)
    {
        SelectTopK(acc, k, output);
        return (output.Count > 0 ? MinMagnitude(output.Values) : 0f, 1);
    }

    private static float MinMagnitude(ReadOnlySpan<float> v)
    {
        float m = float.PositiveInfinity;
        foreach (float x in v) m = MathF.Min(m, MathF.Abs(x));
        return m;
    }
}

/// <summary>
/// Deep Gradient Compression's sampled threshold: the smallest of the top ceil(f n delta) magnitudes of
/// a random f-sample (f = 1% by default); when more than 4k/3 entries pass, exact top-k among them.
/// </summary>
internal sealed class DgcCompressor : GradientCompressor
{
    private float[] _sample = [];

    /// <summary>Creates the compressor.</summary>
    public DgcCompressor(CompressorOptions options, IGradientKernels? kernels = null) : base(options, kernels) { }

    /// <inheritdoc />
    public override CompressorKind Kind => CompressorKind.Dgc;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k,
        SparseGradient output)
    {
        int n = acc.Length;
        int sampleSize = (int)Math.Clamp(Math.Ceiling(n * Options.DgcSampleFraction), 1, n);
        if (_sample.Length < sampleSize) _sample = new float[sampleSize];
        var sample = _sample.AsSpan(0, sampleSize);
        var random = CallRandom();
        for (int j = 0; j < sampleSize; j++) sample[j] = MathF.Abs(acc[random.Next(n)]);
        int sampleK = (int)Math.Clamp(Math.Ceiling(sampleSize * Options.Density), 1, sampleSize);
        float threshold = QuickSelect.KthLargest(sample, sampleK);
        // The sample's k-th value itself should pass: select strictly above its next float down.
        threshold = threshold > 0 ? MathF.BitDecrement(threshold) : 0f;
        Kernels.SelectAbove(acc, threshold, output);
        if (output.Count > 4L * k / 3) KeepLargest(output, k);
        return (threshold, 1);
    }
}

/// <summary>
/// RedSync: binary search on r in [0, 1] for eta = mean + r (max - mean) until k &lt; selected &lt; 2k or the interval is
/// narrower than 0.2; as in the paper, the last probed threshold stands when the search stops without a hit (taking the
/// interval's low end instead sent up to 351x k on heavy tails, where it stays at the mean).
/// </summary>
internal sealed class RedSyncCompressor(CompressorOptions options, IGradientKernels? kernels = null) : GradientCompressor(options, kernels)
{
    /// <summary>The search stops once the interval of r is narrower than this.</summary>
    public const double MinInterval = 0.2;

    /// <inheritdoc />
    public override CompressorKind Kind => CompressorKind.RedSync;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k,
        SparseGradient output)
    {
        double mean = stats.MeanAbs, max = stats.MaxAbs;
        double lo = 0, hi = 1;
        float eta;
        int probes = 0;
        while (true)
        {
            double r = 0.5 * (lo + hi);
            eta = (float)(mean + r * (max - mean));
            long count = Kernels.CountAbove(acc, eta);
            probes++;
            if (count > k && count < 2L * k) break;
            if (count >= 2L * k) lo = r; else hi = r;
            if (hi - lo < MinInterval) break;
        }
        Kernels.SelectAbove(acc, eta, output);
        return (eta, probes);
    }
}

/// <summary>
/// GaussianKSGD: the gradient modelled as N(0, sigma^2) with sigma^2 the mean of x^2, so eta = z(1 - delta/2) sigma leaves
/// delta of it in the two tails; counted up to three times with a correction between counts (x0.5 when fewer than 2k/3 pass,
/// x1.5 when more than 4k/3 pass). The selection uses the last counted threshold, as the authors' code does, never a
/// correction it did not check.
/// </summary>
internal sealed class GaussianKCompressor(CompressorOptions options, IGradientKernels? kernels = null)
    : GradientCompressor(options, kernels)
{
    // GaussianKSGD's loop: at most three counts; between them the threshold is halved or raised by half outside [2k/3, 4k/3].
    private const int MaxCounts = 3;
    private const float LowerFactor = 0.5f, RaiseFactor = 1.5f;

    /// <inheritdoc />
    public override CompressorKind Kind => CompressorKind.GaussianK;

    /// <inheritdoc />
    private protected override StatisticsKinds RequiredStatistics => StatisticsKinds.Squares;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k,
        SparseGradient output)
    {
        double z = Normal.InvCDF(0, 1, 1 - Options.Density / 2);
        float eta = (float)(z * Math.Sqrt(stats.SumSquares / Math.Max(1, stats.Count)));
        int counts = 1;
        for (; ; counts++)
        {
            long count = Kernels.CountAbove(acc, eta);
            bool few = count < 2L * k / 3, many = count > 4L * k / 3;
            if (!(few || many) || counts == MaxCounts) break;
            eta *= few ? LowerFactor : RaiseFactor;
        }
        Kernels.SelectAbove(acc, eta, output);
        return (eta, counts);
    }
}

/// <summary>k entries chosen uniformly at random without replacement (Floyd's algorithm), sent in ascending order.</summary>
internal sealed class RandomKCompressor : GradientCompressor
{
    private readonly HashSet<int> _chosen = [];
    private int[] _order = [];

    /// <summary>Creates the compressor.</summary>
    public RandomKCompressor(CompressorOptions options, IGradientKernels? kernels = null) : base(options, kernels) { }

    /// <inheritdoc />
    public override CompressorKind Kind => CompressorKind.RandomK;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k,
        SparseGradient output)
    {
        int n = acc.Length;
        var random = CallRandom();
        _chosen.Clear();
        for (int j = n - k; j < n; j++)
        {
            int t = random.Next(j + 1);
            if (!_chosen.Add(t)) _chosen.Add(j);
        }
        if (_order.Length < k) _order = new int[k];
        _chosen.CopyTo(_order);
        Array.Sort(_order, 0, k);
        output.Reserve(k);
        for (int j = 0; j < k; j++) output.Add(_order[j], acc[_order[j]]);
        return (0f, 1);
    }
}

/// <summary>Creates compressors by kind or stable name.</summary>
public static class Compressors
{
    /// <summary>Creates the compressor of <paramref name="kind"/> with <paramref name="options"/>.</summary>
    public static GradientCompressor Create(CompressorKind kind, CompressorOptions options) => Create(kind, options, kernels: null);

    /// <summary>Creates a compressor of the given kind on a kernel backend (the CPU's when null).</summary>
    internal static GradientCompressor Create(CompressorKind kind, CompressorOptions options, IGradientKernels? kernels) => kind switch
    {
        CompressorKind.None => new NoneCompressor(options, kernels),
        CompressorKind.SidcoExponential or CompressorKind.SidcoGammaPareto or CompressorKind.SidcoPareto =>
            new SidcoCompressor(kind, options, kernels),
        CompressorKind.TopK => new TopKCompressor(options, kernels),
        CompressorKind.Dgc => new DgcCompressor(options, kernels),
        CompressorKind.RedSync => new RedSyncCompressor(options, kernels),
        CompressorKind.GaussianK => new GaussianKCompressor(options, kernels),
        CompressorKind.RandomK => new RandomKCompressor(options, kernels),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown compressor kind."),
    };

    /// <summary>Creates a compressor from its stable name (<c>sidco-e</c>, <c>topk</c>, ...).</summary>
    public static GradientCompressor Create(string name, CompressorOptions options) => Create(CompressorNames.Parse(name), options);

    /// <summary>Creates a compressor from its stable name on a kernel backend (the CPU's when null).</summary>
    internal static GradientCompressor Create(string name, CompressorOptions options, IGradientKernels? kernels)
        => Create(CompressorNames.Parse(name), options, kernels);
}
