namespace Microsoft.ML.SIDCo.Kernels;

/// <summary>Which optional statistics a measuring pass should compute besides the sum of magnitudes.</summary>
[Flags]
internal enum StatisticsKinds
{
    /// <summary>Only count, sum of |x| and max |x|.</summary>
    Basic = 0,
    /// <summary>Also the sum of ln(|x| + eps) (needed by the gamma fit).</summary>
    LogMagnitudes = 1,
    /// <summary>Also the sum of x^2 (needed by the generalized-Pareto fit and the Gaussian baseline).</summary>
    Squares = 2,
    /// <summary>
    /// With a tail bound, also the sum of the exceedances' squares (<see cref="ExceedanceStatistics.SumSquares"/>
    /// of <see cref="GradientStatistics.Tail"/>, needed by a generalized-Pareto fit of the tail). Without it
    /// that sum is 0: an exponential fit needs only the count, sum and minimum, and on a cache-resident
    /// buffer the squares are a sixth of the pass's cost.
    /// </summary>
    TailSquares = 4,
}

/// <summary>Summary statistics of the magnitudes of a buffer, produced in one fused pass.</summary>
/// <param name="Count">Number of entries measured.</param>
/// <param name="SumAbs">Sum of |x|.</param>
/// <param name="SumLogAbs">Sum of ln(|x| + <see cref="GradientStatistics.LogEpsilon"/>), when requested.</param>
/// <param name="SumSquares">Sum of x^2, when requested.</param>
/// <param name="MaxAbs">Largest |x|.</param>
/// <param name="FirstNonFinite">Index of the first NaN or infinite entry, or -1 when all are finite.</param>
internal readonly record struct GradientStatistics(long Count, double SumAbs, double SumLogAbs, double SumSquares, float MaxAbs,
    long FirstNonFinite)
{
    /// <summary>Guard added before taking logarithms so that exact zeros stay finite.</summary>
    public const float LogEpsilon = 2.2e-16f;

    /// <summary>Mean of |x| (0 for an empty buffer).</summary>
    public double MeanAbs => Count == 0 ? 0 : SumAbs / Count;

    /// <summary>Mean of ln(|x| + eps) (0 for an empty buffer).</summary>
    public double MeanLogAbs => Count == 0 ? 0 : SumLogAbs / Count;

    /// <summary>Unbiased variance of |x| (0 for fewer than two entries).</summary>
    public double VarianceAbs => Count < 2 ? 0 : Math.Max(0, (SumSquares - SumAbs * SumAbs / Count) / (Count - 1));

    /// <summary>True when every entry was finite.</summary>
    public bool AllFinite => FirstNonFinite < 0;

    /// <summary>
    /// The exceedances of the tail bound passed to the measuring pass, collected in that same pass;
    /// null when no bound was given.
    /// </summary>
    public ExceedanceStatistics? Tail { get; init; }
}

/// <summary>Statistics of the entries whose magnitude exceeds a threshold (the "peaks over threshold").</summary>
/// <param name="Count">Number of entries with |x| &gt; threshold.</param>
/// <param name="Sum">Sum of their magnitudes.</param>
/// <param name="SumSquares">Sum of their squared magnitudes (0 from a measuring pass not asked for
/// <see cref="StatisticsKinds.TailSquares"/>).</param>
/// <param name="Min">Smallest magnitude among them (+inf when there are none).</param>
internal readonly record struct ExceedanceStatistics(long Count, double Sum, double SumSquares, float Min)
{
    /// <summary>No exceedances.</summary>
    public static ExceedanceStatistics Empty => new(0, 0, 0, float.PositiveInfinity);

    /// <summary>Mean of the exceedance magnitudes.</summary>
    public double Mean => Count == 0 ? 0 : Sum / Count;

    /// <summary>Unbiased variance of the exceedance magnitudes.</summary>
    public double Variance => Count < 2 ? 0 : Math.Max(0, (SumSquares - Sum * Sum / Count) / (Count - 1));
}
