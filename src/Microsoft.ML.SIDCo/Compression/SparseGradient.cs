using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// A compressed gradient: ascending int32 indices and their float32 values out of a dense vector of
/// <see cref="Length"/> entries. Reused across steps, so it allocates only when it must grow.
/// </summary>
public sealed class SparseGradient : SparseBuffer
{
    /// <summary>Creates an empty sparse gradient.</summary>
    public SparseGradient(int capacity = 0) : base(capacity) { }

    /// <summary>Length of the dense vector the entries index into.</summary>
    public int Length { get; private set; }

    /// <summary>Clears the entries and sets the dense length.</summary>
    public void Reset(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Clear();
        Length = length;
    }

    /// <summary>Writes the entries into <paramref name="dense"/> (zeroed first).</summary>
    public void ToDense(Span<float> dense)
    {
        if (dense.Length != Length)
            throw new ArgumentException($"Dense buffer length {dense.Length} differs from the gradient length {Length}.", nameof(dense));
        dense.Clear();
        var idx = Indices; var val = Values;
        for (int j = 0; j < idx.Length; j++) dense[idx[j]] = val[j];
    }
}

/// <summary>What one compress call did.</summary>
/// <param name="Length">Entries in the gradient (n).</param>
/// <param name="TargetCount">k = ceil(density * n).</param>
/// <param name="EstimatedCount">Entries above the estimated threshold, before any fallback or cap (the estimator's own result).</param>
/// <param name="Selected">Entries actually selected (sent).</param>
/// <param name="Threshold">The magnitude threshold used (0 when the compressor has none).</param>
/// <param name="Stages">Estimation stages used (SIDCo), else 1.</param>
/// <param name="Skipped">True when the step was skipped because of non-finite values.</param>
/// <param name="FirstNonFinite">Index of the first non-finite entry, or -1.</param>
public readonly record struct CompressionStats(int Length, int TargetCount, int EstimatedCount, int Selected, float Threshold, int Stages,
    bool Skipped, long FirstNonFinite)
{
    /// <summary>Selected / n.</summary>
    public double AchievedDensity => Length == 0 ? 0 : (double)Selected / Length;

    /// <summary>Estimation quality: estimated count / k (1.0 is ideal).</summary>
    public double AchievedOverTarget => TargetCount == 0 ? 1 : (double)EstimatedCount / TargetCount;
}
