using System.Runtime.CompilerServices;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// A speed-up that changes no result: the measuring pass also collects the entries above a fraction of the previous call's
/// threshold, and when the new threshold is at least that bound (gradients change slowly) the selection and the later
/// stages read those candidates instead of the whole buffer. The fraction only decides the cost, and it adapts: lower after
/// a threshold below the bound, higher when the candidates outnumber <see cref="MaximumMultiple"/> times k (heavy tails, or
/// an error-feedback residual that piles entries just below the threshold).
/// </summary>
internal sealed class CandidatePrefilter
{
    /// <summary>Above this density the candidates would be a large part of the buffer and cost more than they save.</summary>
    public const double MaximumDensity = 0.005;

    /// <summary>More candidates than this many times k cost more to collect than a second pass.</summary>
    public const int MaximumMultiple = 8;

    private const float InitialFraction = 0.7f, MinimumFraction = 0.3f, MaximumFraction = 0.95f;

    // After a miss the fraction shrinks by this factor; after too many candidates it moves this share of the way to 1.
    private const float ShrinkFactor = 0.8f, GrowShare = 0.5f;

    private readonly SparseBuffer _entries = new();
    private float _fraction = InitialFraction;
    private float _lastThreshold = float.NaN;

    /// <summary>True when this call's measuring pass collected candidates.</summary>
    public bool Active { get; private set; }

    /// <summary>The bound above which <see cref="Entries"/> holds every entry (in ascending index order).</summary>
    public float Bound { get; private set; } = float.PositiveInfinity;

    /// <summary>The candidates of this call.</summary>
    public SparseBuffer Entries => _entries;

    /// <summary>Starts a call: returns the buffer the measuring pass should collect into, or null when it should not.</summary>
    public SparseBuffer? Begin(bool enabled)
    {
        _entries.Clear();
        Active = enabled && float.IsFinite(_lastThreshold) && _lastThreshold > 0;
        Bound = Active ? _lastThreshold * _fraction : float.PositiveInfinity;
        return Active ? _entries : null;
    }

    /// <summary>True when every magnitude above <paramref name="threshold"/> is among the candidates.</summary>
    public bool Covers(double threshold) => Active && threshold >= Bound;

    /// <summary>Ends a call that selected with <paramref name="threshold"/> for a target of <paramref name="k"/> entries.</summary>
    public void End(float threshold, int k)
    {
        if (Active)
        {
            if (!(threshold >= Bound)) _fraction = Math.Max(MinimumFraction, _fraction * ShrinkFactor);
            else if (_entries.Count > (long)MaximumMultiple * k)
                _fraction = Math.Min(MaximumFraction, _fraction + GrowShare * (1 - _fraction));
        }
        _lastThreshold = threshold;
    }

    /// <summary>Appends the candidates above <paramref name="threshold"/>, which <see cref="Covers"/>, in ascending order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: full optimisation from the first call
    public void SelectAbove(float threshold, SparseGradient output)
    {
        var idx = _entries.Indices;
        var val = _entries.Values;
        for (int j = 0; j < idx.Length; j++) if (MathF.Abs(val[j]) > threshold) output.Add(idx[j], val[j]);
    }

    /// <summary>The exceedance statistics of the candidates above <paramref name="threshold"/>, which <see cref="Covers"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public ExceedanceStatistics Exceedances(float threshold)
    {
        long count = 0;
        double sum = 0, sumSq = 0;
        float min = float.PositiveInfinity;
        foreach (float v in _entries.Values)
        {
            float a = MathF.Abs(v);
            if (a > threshold) { count++; sum += a; sumSq += (double)a * a; if (a < min) min = a; }
        }
        return new ExceedanceStatistics(count, sum, sumSq, min);
    }
}
