using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// Exact top-k by magnitude as a radix select. The IEEE bits of a finite |x| order like the magnitudes, so one pass counts the
/// entries per bucket of their high bits and finds the bucket that holds the k-th largest; everything above it is in, and a
/// quickselect among that bucket's few entries fixes the k-th value. Two passes over the buffer plus work on about k entries,
/// where a quickselect over the whole buffer moves every entry several times. Buffers are reused: no allocation once warm.
/// Not thread-safe; inputs must be finite (the compressors check that first).
/// </summary>
internal sealed class MagnitudeSelection
{
    // Exponent and two mantissa bits: a bucket spans a quarter octave, so the k-th largest's bucket holds O(k) entries on
    // gradient-like data, and 1024 counters fit the L1 cache four times over.
    private const int BucketBits = 10;
    private const int Shift = 31 - BucketBits;
    private const int Buckets = 1 << BucketBits;
    private const uint MagnitudeMask = 0x7FFF_FFFF;

    // Interleaved histograms: runs of entries in one bucket (typical of gradients) update four counters in turn instead of
    // waiting on one counter's store.
    private const int Lanes = 4;

    private readonly int[] _histogram = new int[Buckets * Lanes];
    private float[] _bucket = [];

    /// <summary>
    /// The k-th largest |x| (1-based, 1 &lt;= k &lt;= n). <paramref name="scratchHint"/>: the largest buffer later calls will
    /// pass (sizes the reused scratch once), or 0 for this one's length.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public float KthLargest(ReadOnlySpan<float> values, int k, int scratchHint = 0)
    {
        var (bucket, above, inBucket) = FindBucket(values, k);
        var magnitudes = Scratch(inBucket, Math.Max(values.Length, scratchHint));
        int w = 0;
        foreach (float v in values)
        {
            if (Bucket(v) == bucket) magnitudes[w++] = MathF.Abs(v);
        }
        return QuickSelect.KthLargest(magnitudes[..w], k - above);
    }

    /// <summary>
    /// Replaces <paramref name="output"/>'s entries with the <paramref name="k"/> largest-magnitude entries of
    /// <paramref name="values"/> in ascending index order, ties broken by lower index; exact zeros are never sent (they would
    /// change nothing).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Select(ReadOnlySpan<float> values, int k, SparseBuffer output, IGradientKernels kernels)
    {
        output.Clear();
        if (k <= 0) return;
        var (bucket, above, inBucket) = FindBucket(values, k);
        // Every entry at or above the bucket's smallest magnitude, in order (a strict kernel comparison just below it).
        float edge = BitConverter.UInt32BitsToSingle((uint)bucket << Shift);
        kernels.SelectAbove(values, MathF.BitDecrement(edge), output);

        var selected = output.ValuesMutable;
        var magnitudes = Scratch(inBucket, values.Length);
        int w = 0;
        foreach (float v in selected)
        {
            if (Bucket(v) == bucket) magnitudes[w++] = MathF.Abs(v);
        }
        float kth = QuickSelect.KthLargest(magnitudes[..w], k - above);
        int aboveKth = above;
        foreach (float m in magnitudes[..w]) if (m > kth) aboveKth++;
        Compact(output, kth, kth > 0 ? k - aboveKth : 0);
    }

    /// <summary>Keeps the entries with |x| &gt; <paramref name="kth"/> and the first <paramref name="ties"/> equal to it, in
    /// order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Compact(SparseBuffer output, float kth, int ties)
    {
        var values = output.ValuesMutable;
        var indices = output.IndicesMutable;
        int w = 0;
        for (int j = 0; j < values.Length; j++)
        {
            float a = MathF.Abs(values[j]);
            if (a > kth || (a == kth && ties-- > 0)) { indices[w] = indices[j]; values[w] = values[j]; w++; }
        }
        output.Truncate(w);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Bucket(float v) => (int)((BitConverter.SingleToUInt32Bits(v) & MagnitudeMask) >> Shift);

    // The bucket holding the k-th largest magnitude, the entries in higher buckets (fewer than k) and the entries in it.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private (int Bucket, int Above, int InBucket) FindBucket(ReadOnlySpan<float> values, int k)
    {
        var histogram = _histogram.AsSpan();
        histogram.Clear();
        ref int h = ref MemoryMarshal.GetArrayDataReference(_histogram);
        ref uint bits = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(values));
        int n = values.Length, i = 0;
        for (; i + Lanes <= n; i += Lanes)
        {
            Unsafe.Add(ref h, (int)((Unsafe.Add(ref bits, i) & MagnitudeMask) >> Shift))++;
            Unsafe.Add(ref h, Buckets + (int)((Unsafe.Add(ref bits, i + 1) & MagnitudeMask) >> Shift))++;
            Unsafe.Add(ref h, 2 * Buckets + (int)((Unsafe.Add(ref bits, i + 2) & MagnitudeMask) >> Shift))++;
            Unsafe.Add(ref h, 3 * Buckets + (int)((Unsafe.Add(ref bits, i + 3) & MagnitudeMask) >> Shift))++;
        }
        for (; i < n; i++) Unsafe.Add(ref h, (int)((Unsafe.Add(ref bits, i) & MagnitudeMask) >> Shift))++;

        int above = 0;
        for (int b = Buckets - 1; b >= 0; b--)
        {
            int count = histogram[b] + histogram[Buckets + b] + histogram[2 * Buckets + b] + histogram[3 * Buckets + b];
            if (above + count >= k) return (b, above, count);
            above += count;
        }
        throw new ArgumentOutOfRangeException(nameof(k), k, $"k exceeds the {n} entries.");
    }

    // Room for the bucket's magnitudes, sized to the whole buffer when it grows: error feedback piles residuals up just below
    // the threshold, so the k-th largest's bucket fills over the first steps, and growing step by step would allocate in them.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private Span<float> Scratch(int length, int bufferLength)
    {
        if (_bucket.Length < length) _bucket = new float[Math.Max(length, bufferLength)];
        return _bucket.AsSpan(0, length);
    }
}
