using System.Runtime.CompilerServices;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// Base of every compressor: handles error feedback, the non-finite policy, the empty-selection guard
/// and the optional hard cap, so each subclass only chooses which entries to keep.
/// </summary>
/// <remarks>A compressor keeps per-buffer state (adaptive stages, random state): use one instance per gradient buffer and worker. Not
/// thread-safe.</remarks>
public abstract class GradientCompressor
{
    private readonly MagnitudeSelection _selection = new();
    private readonly CandidatePrefilter _candidates = new();

    /// <summary>Creates the compressor with validated options.</summary>
    private protected GradientCompressor(CompressorOptions options, IGradientKernels? kernels)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options.Clone();
        Kernels = kernels ?? CpuGradientKernels.Instance;
    }

    /// <summary>Which compressor this is.</summary>
    public abstract CompressorKind Kind { get; }

    /// <summary>
    /// False for the compressor that passes the gradient through whole (<see cref="CompressorKind.None"/>): there is no
    /// residual to feed back, no empty selection to guard and no cap, and its exchange is dense.
    /// </summary>
    public virtual bool Compresses => true;

    /// <summary>The stable name (<c>sidco-e</c>, <c>topk</c>, ...).</summary>
    public string Name => Kind.ToName();

    /// <summary>The options in force (a private copy).</summary>
    public CompressorOptions Options { get; }

    /// <summary>The kernel backend.</summary>
    internal IGradientKernels Kernels { get; }

    /// <summary>Number of completed compress calls (randomised compressors derive their per-call seed from it, so a restored compressor
    /// continues exactly).</summary>
    public long Calls { get; private set; }

    /// <summary>Writes the compressor's adaptive state (call count, stage controller).</summary>
    public virtual void SaveState(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(Name);
        writer.Write(Calls);
    }

    /// <summary>Restores state written by <see cref="SaveState"/> of the same compressor kind.</summary>
    public virtual void LoadState(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        string name = reader.ReadString();
        if (name != Name) throw new InvalidDataException($"Compressor state is for '{name}', this compressor is '{Name}'.");
        Calls = reader.ReadInt64();
    }

    /// <summary>A random generator for the current call, reproducible from (seed, call).</summary>
    /// <remarks>HashCode.Combine is randomised per process, so the seed is mixed explicitly (splitmix64 finaliser).</remarks>
    private protected CallRandom CallRandom()
    {
        ulong z = unchecked((ulong)(uint)Options.Seed * 0x9E3779B97F4A7C15UL + (ulong)Calls + 1);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return new CallRandom(z ^ (z >> 31));
    }

    /// <summary>Statistics the subclass needs from the measuring pass.</summary>
    private protected virtual StatisticsKinds RequiredStatistics => StatisticsKinds.Basic;

    /// <summary>
    /// When finite, the measuring pass also collects the statistics of the magnitudes above this bound
    /// (<see cref="GradientStatistics.Tail"/>), so that a fit on them needs no pass of its own.
    /// </summary>
    private protected virtual float TailBound => float.PositiveInfinity;

    /// <summary>
    /// Changes the target density between calls (e.g. a warm-up schedule). The adaptive state is kept:
    /// its calibration is relative to the target, so it carries over (SIDCo's stage controller restarts its
    /// averaging window, which must not mix targets); the candidate prefilter stays
    /// exact because it is only used when the new threshold lies above its bound.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="density"/> is outside (0, 1].</exception>
    public void SetDensity(double density)
    {
        if (!(density > 0 && density <= 1)) throw new ArgumentOutOfRangeException(nameof(density), density, "Density must be in (0, 1].");
        if (density == Options.Density) return;
        Options.Density = density;
        OnDensityChanged();
    }

    /// <summary>Called after <see cref="SetDensity"/> changed the target density.</summary>
    private protected virtual void OnDensityChanged() { }

    /// <summary>k = ceil(density * n), at least 1 for a non-empty buffer.</summary>
    public int TargetCount(int length) => length == 0 ? 0 : (int)Math.Clamp(Math.Ceiling(Options.Density * length - 1e-9), 1, length);

    /// <summary>
    /// Compresses <paramref name="gradient"/> into <paramref name="output"/>. With <paramref name="feedback"/>,
    /// compresses gradient + residual and updates the residual; without, compresses the gradient as is.
    /// </summary>
    /// <exception cref="NonFiniteGradientException">A NaN or infinity was found and the policy is <see cref="NonFinitePolicy.Throw"/>;
    /// nothing was modified.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loops: full optimisation from the first call, not after 30 calls at tier 0
    public CompressionStats Compress(ReadOnlySpan<float> gradient, SparseGradient output, ErrorFeedback? feedback = null)
    {
        ArgumentNullException.ThrowIfNull(output);
        int n = gradient.Length;
        output.Reset(n);
        int k = TargetCount(n);
        GradientStatistics stats;
        ReadOnlySpan<float> acc;
        var collect = _candidates.Begin(UsesCandidates && Options.Density <= CandidatePrefilter.MaximumDensity);
        if (feedback is not null)
        {
            if (feedback.Length != n)
            {
                throw new ArgumentException(
                    $"Error feedback for buffer '{feedback.Name}' has {feedback.Length} entries; the gradient has {n}.", nameof(feedback));
            }
            stats = Kernels.AccumulateAndMeasure(gradient, feedback.Accumulator, RequiredStatistics, _candidates.Bound, collect, TailBound);
            acc = feedback.Accumulator;
        }
        else
        {
            stats = Kernels.Measure(gradient, RequiredStatistics, _candidates.Bound, collect, TailBound);
            acc = gradient;
        }

        if (!stats.AllFinite)
        {
            if (Options.NonFinite == NonFinitePolicy.Throw)
                throw new NonFiniteGradientException(feedback?.Name ?? "gradient", stats.FirstNonFinite,
                    gradient[(int)stats.FirstNonFinite]);
            return new CompressionStats(n, k, 0, 0, float.NaN, 0, Skipped: true, stats.FirstNonFinite);
        }
        if (n == 0) return new CompressionStats(0, 0, 0, 0, 0, 0, false, -1);

        var (threshold, stages) = SelectCore(acc, stats, k, output);
        _candidates.End(threshold, k);
        Calls++;
        int estimated = output.Count;
        OnEstimated(estimated, k, n);

        // Guard: an estimate above every magnitude (e.g. constant input) would send nothing and stall
        // training while the residual grows; fall back to the exact top-k for this step.
        if (estimated == 0 && stats.MaxAbs > 0 && Compresses)
        {
            // When the candidates hold at least k entries they hold the k largest (everything else lies
            // below their bound), so the exact top-k needs only them instead of the whole buffer.
            if (_candidates.Active && _candidates.Entries.Count >= k) SelectTopKOfCandidates(k, output);
            else SelectTopK(acc, k, output);
        }
        if (Options.SelectionCap > 0 && Compresses)
        {
            int cap = (int)Math.Min(n, Math.Floor(Options.SelectionCap * k));
            if (output.Count > cap) KeepLargest(output, cap);
        }
        if (feedback is not null)
        {
            var accumulator = feedback.Accumulator;
            foreach (int i in output.Indices) accumulator[i] = 0;
        }
        return new CompressionStats(n, k, estimated, output.Count, threshold, stages, false, -1);
    }

    /// <summary>True for compressors whose selection is a magnitude threshold that can use the candidate prefilter.</summary>
    private protected virtual bool UsesCandidates => false;

    /// <summary>The candidate prefilter of this call (<see cref="CandidatePrefilter.Active"/> when it collected).</summary>
    private protected CandidatePrefilter Candidates => _candidates;

    /// <summary>
    /// Appends every entry with |x| &gt; <paramref name="threshold"/> in ascending order: from the candidates
    /// when they cover the threshold, else with a full pass.
    /// </summary>
    private protected void SelectAboveThreshold(ReadOnlySpan<float> acc, float threshold, SparseGradient output)
    {
        if (_candidates.Covers(threshold)) _candidates.SelectAbove(threshold, output);
        else Kernels.SelectAbove(acc, threshold, output);
    }

    /// <summary>Chooses the entries to send, appending them to <paramref name="output"/> in ascending index order.</summary>
    /// <returns>The threshold used (0 if none) and the number of estimation stages.</returns>
    private protected abstract (float Threshold, int Stages) SelectCore(ReadOnlySpan<float> acc, in GradientStatistics stats, int k,
        SparseGradient output);

    /// <summary>Called with the estimator's own count, before fallbacks and the cap, and the buffer's length (the adaptive controller
    /// listens here).</summary>
    private protected virtual void OnEstimated(int estimatedCount, int k, int length) { }

    /// <summary>Exact top-k by magnitude, ties broken by lower index, written in ascending index order. Exact zeros are never sent (they
    /// would change nothing).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected void SelectTopK(ReadOnlySpan<float> values, int k, SparseGradient output)
    {
        output.Clear();
        if (k <= 0) return;
        if (k >= values.Length)
        {
            for (int i = 0; i < values.Length; i++) output.Add(i, values[i]);
            return;
        }
        _selection.Select(values, k, output, Kernels);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void SelectTopKOfCandidates(int k, SparseGradient output)
    {
        output.Clear();
        output.AddRange(_candidates.Entries.Indices, _candidates.Entries.Values);
        KeepLargest(output, k);
    }

    /// <summary>Keeps the <paramref name="count"/> largest-magnitude entries of <paramref name="output"/>, preserving order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected void KeepLargest(SparseGradient output, int count)
    {
        var values = output.ValuesMutable;
        float kth = _selection.KthLargest(values, count, scratchHint: output.Length);
        int above = 0;
        foreach (float v in values) if (MathF.Abs(v) > kth) above++;
        MagnitudeSelection.Compact(output, kth, kth > 0 ? count - above : 0);
    }
}

/// <summary>In-place selection of order statistics.</summary>
internal static class QuickSelect
{
    /// <summary>Returns the k-th largest element (1-based), partially reordering <paramref name="a"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float KthLargest(Span<float> a, int k)
    {
        int target = a.Length - k; // k-th largest = (n-k)-th smallest, 0-based
        int lo = 0, hi = a.Length - 1;
        while (hi > lo)
        {
            int mid = lo + ((hi - lo) >> 1);
            // median of three as pivot
            if (a[mid] < a[lo]) (a[mid], a[lo]) = (a[lo], a[mid]);
            if (a[hi] < a[lo]) (a[hi], a[lo]) = (a[lo], a[hi]);
            if (a[hi] < a[mid]) (a[hi], a[mid]) = (a[mid], a[hi]);
            float pivot = a[mid];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (a[i] < pivot) i++;
                while (a[j] > pivot) j--;
                if (i <= j) { (a[i], a[j]) = (a[j], a[i]); i++; j--; }
            }
            if (target <= j) hi = j;
            else if (target >= i) lo = i;
            else return a[target];
        }
        return a[target];
    }
}
