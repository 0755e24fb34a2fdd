using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// Saves stage 2 its pass: gradients change little from step to step, so the measuring pass also sums the exceedances of
/// the previous call's first-stage threshold eta1', and stage 2 fits those while they still cut a tail of about the first
/// stage's size (docs/method.md). The estimate is as good either way; only which threshold near the 25 % tail differs.
/// </summary>
internal sealed class SidcoPeaksReuse
{
    /// <summary>The peaks stand in while their share lies within this factor of <see cref="SidcoMethod.FirstStageTail"/>.</summary>
    private const double TailSlack = 2;

    /// <summary>eta1': the previous multi-stage call's first-stage threshold, or NaN before one (or after one stage).</summary>
    public float Bound { get; private set; } = float.NaN;

    /// <summary>True when there is a bound for the measuring pass to sum the exceedances of.</summary>
    public bool HasBound => float.IsFinite(Bound);

    /// <summary>The pass's exceedances of <see cref="Bound"/> when their share p is usable: within the slack of 25 % and above
    /// delta.</summary>
    public static ExceedanceStatistics? Usable(in GradientStatistics stats, double delta)
    {
        if (stats.Tail is not { Count: >= 2 } tail || stats.Count == 0) return null;
        double share = (double)tail.Count / stats.Count;
        const double Lowest = SidcoMethod.FirstStageTail / TailSlack, Highest = SidcoMethod.FirstStageTail * TailSlack;
        return share >= Lowest && share <= Highest && share > delta ? tail : null;
    }

    /// <summary>Keeps this call's first-stage threshold for the next call.</summary>
    public void Set(float bound) => Bound = bound;

    /// <summary>Writes the bound: the next call's stage 2 depends on it, so a resumed run continues exactly.</summary>
    public void Save(BinaryWriter writer) => writer.Write(Bound);

    /// <summary>Reads what <see cref="Save"/> wrote.</summary>
    public void Load(BinaryReader reader) => Bound = reader.ReadSingle();
}

/// <summary>
/// Saves SIDCo-GP and SIDCo-P their shape statistic (the mean log, the squares) on most calls: for a fixed shape a gamma or
/// generalized-Pareto quantile is proportional to the mean, so between refits the first stage's threshold is the last
/// fit's quantile-to-mean ratio times this call's mean. Used only where the first stage sets no threshold of its own (its
/// peaks stand in for stage 2), so it moves only the next call's bound (docs/method.md).
/// </summary>
internal sealed class SidcoShapeReuse
{
    /// <summary>The shape is refitted on one call in this many.</summary>
    public const int RefitInterval = 4;

    private double _boundPerMean = double.NaN;
    private int _age; // calls since the shape was last fitted

    /// <summary>True when the next call may rescale instead of refitting.</summary>
    public bool CanReuse => double.IsFinite(_boundPerMean) && _age + 1 < RefitInterval;

    /// <summary>The first stage's threshold for a call of this mean.</summary>
    public double Rescale(double mean) => mean * _boundPerMean;

    /// <summary>Records a call: a fitted first stage (threshold <paramref name="bound"/> at this mean) restarts the count.</summary>
    public void Record(bool fitted, float bound, double mean)
    {
        if (!fitted) { _age++; return; }
        _boundPerMean = float.IsFinite(bound) && mean > 0 ? bound / mean : double.NaN;
        _age = 0;
    }

    /// <summary>Writes the ratio and the age, so a resumed run refits on the same calls.</summary>
    public void Save(BinaryWriter writer)
    {
        writer.Write(_boundPerMean);
        writer.Write(_age);
    }

    /// <summary>Reads what <see cref="Save"/> wrote.</summary>
    public void Load(BinaryReader reader)
    {
        _boundPerMean = reader.ReadDouble();
        _age = reader.ReadInt32();
    }
}
