using System.Numerics.Tensors;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>What to do when a gradient holds NaN or infinite values.</summary>
public enum NonFinitePolicy
{
    /// <summary>Throw <see cref="NonFiniteGradientException"/> naming the buffer and the first bad index. Nothing is modified.</summary>
    Throw,
    /// <summary>Select nothing, leave the error-feedback residual untouched, and report the step as skipped.</summary>
    SkipStep,
}

/// <summary>How the gamma fit's threshold is computed.</summary>
public enum GammaQuantileMethod
{
    /// <summary>The exact quantile: inverse of the regularized upper incomplete gamma function.</summary>
    Exact,
    /// <summary>The closed form eta ~ -beta (ln delta + ln Gamma(alpha)): cheaper, less accurate for shapes far from 1.</summary>
    Approximate,
}

/// <summary>Settings shared by all compressors. Defaults follow the SIDCo paper.</summary>
public sealed class CompressorOptions
{
    /// <summary>The paper's density for its headline results; the trainer's default too.</summary>
    internal const double DefaultDensity = 0.001;

    /// <summary>One stage: the single-fit estimator, which the adaptive controller deepens when it undershoots.</summary>
    internal const int DefaultStages = 1;

    /// <summary>Target density delta = k / n, in (0, 1]. Default 0.001.</summary>
    public double Density { get; set; } = DefaultDensity;

    /// <summary>Let SIDCo adapt its number of stages to keep achieved/target near 1. Default true.</summary>
    public bool AdaptiveStages { get; set; } = true;

    /// <summary>Number of estimation stages SIDCo starts with (or keeps, when not adaptive). Default 1.</summary>
    public int Stages { get; set; } = DefaultStages;

    /// <summary>Upper bound on the number of stages; 0 means ceil(log2(1 / density)). Default 0.</summary>
    public int MaxStages { get; set; }

    /// <summary>Compress calls averaged before the adaptive controller moves the stage count or, until it is in band, the calibration
    /// (afterwards it tracks every call). Default 5.</summary>
    public int AdaptationInterval { get; set; } = 5;

    /// <summary>The controller acts when the mean achieved/target leaves [1 - t, 1 + t]. Default 0.2.</summary>
    public double AdaptationTolerance { get; set; } = 0.2;

    /// <summary>How the gamma first stage of SIDCo-GP computes its quantile. Default <see cref="GammaQuantileMethod.Exact"/>.</summary>
    public GammaQuantileMethod GammaQuantile { get; set; } = GammaQuantileMethod.Exact;

    /// <summary>Hard cap: never send more than <c>cap * k</c> entries (exact selection among the candidates when over); 0 disables it.
    /// Default 0.</summary>
    public double SelectionCap { get; set; }

    /// <summary>Policy for NaN/Inf gradients. Default <see cref="NonFinitePolicy.Throw"/>.</summary>
    public NonFinitePolicy NonFinite { get; set; } = NonFinitePolicy.Throw;

    /// <summary>Fraction of entries DGC samples to estimate its threshold. Default 0.01.</summary>
    public double DgcSampleFraction { get; set; } = 0.01;

    /// <summary>Seed for the randomised compressors (DGC's sample, Random-k). Default 0.</summary>
    public int Seed { get; set; }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        if (!(Density > 0 && Density <= 1)) throw new ArgumentOutOfRangeException(nameof(Density), Density, "Density must be in (0, 1].");
        if (Stages < 1) throw new ArgumentOutOfRangeException(nameof(Stages), Stages, "Stages must be at least 1.");
        if (MaxStages < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxStages), MaxStages, "MaxStages must be 0 (automatic) or positive.");
        if (MaxStages > 0 && Stages > MaxStages)
            throw new ArgumentOutOfRangeException(nameof(Stages), Stages, $"Stages must not exceed MaxStages ({MaxStages}).");
        if (AdaptationInterval < 1)
            throw new ArgumentOutOfRangeException(nameof(AdaptationInterval), AdaptationInterval, "AdaptationInterval must be at least 1.");
        if (!(AdaptationTolerance > 0 && AdaptationTolerance < 1))
            throw new ArgumentOutOfRangeException(nameof(AdaptationTolerance), AdaptationTolerance,
            "AdaptationTolerance must be in (0, 1).");
        if (!(SelectionCap == 0 || SelectionCap >= 1) || double.IsNaN(SelectionCap) || double.IsInfinity(SelectionCap))
            throw new ArgumentOutOfRangeException(nameof(SelectionCap), SelectionCap, "SelectionCap must be 0 (off) or at least 1.");
        if (!(DgcSampleFraction > 0 && DgcSampleFraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(DgcSampleFraction), DgcSampleFraction, "DgcSampleFraction must be in (0, 1].");
        if (!Enum.IsDefined(NonFinite)) throw new ArgumentOutOfRangeException(nameof(NonFinite), NonFinite, "Unknown NonFinitePolicy.");
        if (!Enum.IsDefined(GammaQuantile))
            throw new ArgumentOutOfRangeException(nameof(GammaQuantile), GammaQuantile, "Unknown GammaQuantileMethod.");
    }

    /// <summary>The effective stage limit: <see cref="MaxStages"/>, or ceil(log2(1 / density)) when 0.</summary>
    public int EffectiveMaxStages => MaxStages > 0 ? MaxStages : Math.Max(1, (int)Math.Ceiling(Math.Log2(1 / Density) - 1e-9));

    /// <summary>A copy of these options.</summary>
    public CompressorOptions Clone() => (CompressorOptions)MemberwiseClone();
}

/// <summary>Finds non-finite values in a buffer.</summary>
internal static class NonFinite
{
    /// <summary>The index of the first NaN or infinity in <paramref name="values"/>, or -1 when all are finite (one vectorised
    /// pass).</summary>
    public static int FirstIndex(ReadOnlySpan<float> values)
    {
        if (TensorPrimitives.IsFiniteAll(values)) return -1;
        for (int i = 0; i < values.Length; i++) if (!float.IsFinite(values[i])) return i;
        return -1;
    }
}

/// <summary>Thrown when a gradient holds a NaN or infinite value and the policy is <see cref="NonFinitePolicy.Throw"/>.</summary>
public sealed class NonFiniteGradientException : Exception
{
    /// <summary>Creates the exception.</summary>
    public NonFiniteGradientException(string bufferName, long index, float value)
        : base($"Gradient buffer '{bufferName}' holds a non-finite value ({value}) at index {index} (after adding the error-feedback " +
            $"residual). Nothing was sent and the residual was left unchanged. Lower the learning rate " +
            $"(SIDCoTrainer.Options.LearningRate) or clip the gradient (Options.GradientClipNorm), or skip such steps with " +
            $"Options.NonFiniteGradients = NonFinitePolicy.SkipStep (CompressorOptions.NonFinite for a compressor used alone).")
    {
        BufferName = bufferName; Index = index; Value = value;
    }

    private NonFiniteGradientException(string bufferName, long index, float value, string message) : base(message)
    {
        BufferName = bufferName; Index = index; Value = value;
    }

    /// <summary>
    /// The averaged gradient of a step holds a non-finite value: a worker's gradient reached it on a path that does not
    /// compress (dense exchange, a dense warm-up, no compressor, a custom hook). The parameters were not updated.
    /// </summary>
    internal static NonFiniteGradientException InAveragedGradient(long step, long index, float value) => new(
        "averaged gradient", index, value,
            $"The averaged gradient of step {step} holds a non-finite value ({value}) at index {index}: a worker's gradient was non-finite "
        + "on a path that does not compress it (dense exchange, Options.DenseWarmupSteps, Compressor = None, or a custom GradientHook). "
        + "The parameters were not updated. Lower the learning rate (SIDCoTrainer.Options.LearningRate) or clip the gradient "
        + "(Options.GradientClipNorm), or skip such steps with Options.NonFiniteGradients = NonFinitePolicy.SkipStep.");

    /// <summary>Name of the buffer that held the value.</summary>
    public string BufferName { get; }

    /// <summary>Index of the first non-finite entry.</summary>
    public long Index { get; }

    /// <summary>The offending value.</summary>
    public float Value { get; }
}
