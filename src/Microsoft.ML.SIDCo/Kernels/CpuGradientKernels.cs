using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Microsoft.ML.SIDCo.Kernels;

/// <summary>
/// CPU backend: Vector256 loops with a scalar tail, split into fixed-size chunks that run in
/// parallel on large buffers. Chunk boundaries do not depend on the thread count, and partial
/// results are combined in chunk order, so results are bitwise reproducible.
/// </summary>
internal sealed class CpuGradientKernels : IGradientKernels
{
    /// <summary>Elements per parallel chunk (256K floats = 1 MiB: large enough to amortise scheduling).</summary>
    public const int ChunkSize = 1 << 18;

    /// <summary>
    /// Below this many elements a buffer is processed on the calling thread: a one-thread pass over a
    /// few MiB takes well under a millisecond, less than waking workers costs when several training
    /// processes share the cores.
    /// </summary>
    public const int ParallelThreshold = 1 << 22;

    // Partial sums stay in float only within a block this long, then move to double, which keeps
    // the statistics accurate on 25M-entry buffers without paying for double lanes in the loop.
    private const int BlockSize = 4096;

    /// <summary>The shared instance (the backend holds no state).</summary>
    public static CpuGradientKernels Instance { get; } = new();

    private readonly int _maxThreads;

    /// <summary>Creates a CPU backend using at most <paramref name="maxThreads"/> threads (0 = all cores).</summary>
    public CpuGradientKernels(int maxThreads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxThreads);
        _maxThreads = maxThreads == 0 ? Environment.ProcessorCount : maxThreads;
    }

    /// <inheritdoc />
    public string Name => "cpu-simd";

    /// <inheritdoc />
    public int PartitionLength => ChunkSize;

    /// <inheritdoc />
    public unsafe GradientStatistics AccumulateAndMeasure(ReadOnlySpan<float> gradient, Span<float> residual, StatisticsKinds kinds,
        float candidateBound = float.PositiveInfinity, SparseBuffer? candidates = null, float tailBound = float.PositiveInfinity)
    {
        if (residual.Length != gradient.Length)
            throw new ArgumentException($"Residual length {residual.Length} differs from gradient length {gradient.Length}.",
            nameof(residual));
        fixed (float* g = gradient)
        fixed (float* r = residual)
            return RunChunks<MeasureChunk, GradientStatistics>(gradient.Length, candidates,
                new MeasureChunk(g, r, kinds, candidateBound, tailBound));
    }

    /// <inheritdoc />
    public unsafe GradientStatistics Measure(ReadOnlySpan<float> values, StatisticsKinds kinds,
        float candidateBound = float.PositiveInfinity, SparseBuffer? candidates = null, float tailBound = float.PositiveInfinity)
    {
        fixed (float* v = values)
            return RunChunks<MeasureChunk, GradientStatistics>(values.Length, candidates,
                new MeasureChunk(v, null, kinds, candidateBound, tailBound));
    }

    /// <inheritdoc />
    public unsafe ExceedanceStatistics MeasureExceedances(ReadOnlySpan<float> values, float threshold)
    {
        fixed (float* v = values)
            return RunChunks<ExceedChunk, ExceedanceStatistics>(values.Length, null, new ExceedChunk(v, threshold));
    }

    /// <inheritdoc />
    public unsafe long CountAbove(ReadOnlySpan<float> values, float threshold)
    {
        fixed (float* v = values)
            return RunChunks<CountChunk, long>(values.Length, null, new CountChunk(v, threshold));
    }

    /// <inheritdoc />
    public unsafe int SelectAbove(ReadOnlySpan<float> values, float threshold, SparseBuffer output)
    {
        ArgumentNullException.ThrowIfNull(output);
        int before = output.Count;
        fixed (float* v = values)
            RunChunks<SelectChunk, int>(values.Length, output, new SelectChunk(v, threshold));
        return output.Count - before;
    }

    /// <inheritdoc />
    public void ScatterAdd(ReadOnlySpan<int> indices, ReadOnlySpan<float> values, Span<float> dense)
    {
        if (indices.Length != values.Length) throw new ArgumentException("Index and value spans differ in length.", nameof(values));
        ref float d = ref MemoryMarshal.GetReference(dense);
        int n = dense.Length;
        for (int j = 0; j < indices.Length; j++)
        {
            int i = indices[j];
            if ((uint)i >= (uint)n)
                throw new IndexOutOfRangeException($"Sparse index {i} at position {j} is outside the dense buffer of length {n}.");
            Unsafe.Add(ref d, i) += values[j];
        }
    }

    private static int ChunkCount(int n) => n <= ChunkSize ? 1 : (n + ChunkSize - 1) / ChunkSize;

    // One kernel's work on one chunk [start, start + length), appending any entries it collects to output
    // (with indices counted from the buffer's start), and how two chunks' results combine in order.
    private interface IChunkWork<TResult>
    {
        TResult Run(int start, int length, SparseBuffer? output);
        static abstract TResult Combine(TResult first, TResult next);
    }

    // Runs the work over the buffer's fixed chunks and combines the results in chunk order, so the result does
    // not depend on the thread count. Below ParallelThreshold (or with one thread) the chunks run in order on
    // this thread and append straight to output: nothing is allocated, which keeps a training step's compress
    // call allocation-free. Above, they run in parallel, each into a pooled buffer, appended in chunk order.
    private TResult RunChunks<TWork, TResult>(int n, SparseBuffer? output, TWork work) where TWork : struct, IChunkWork<TResult>
    {
        int chunks = ChunkCount(n);
        if (chunks == 1 || _maxThreads == 1 || n < ParallelThreshold)
        {
            TResult total = work.Run(0, Math.Min(n, ChunkSize), output);
            for (int c = 1; c < chunks; c++)
                total = TWork.Combine(total, work.Run(c * ChunkSize, Math.Min(ChunkSize, n - c * ChunkSize), output));
            return total;
        }
        return RunChunksInParallel<TWork, TResult>(n, chunks, output, work);
    }

    // A method of its own: the lambda's captures are allocated on entry to the method that declares them.
    private TResult RunChunksInParallel<TWork, TResult>(int n, int chunks, SparseBuffer? output, TWork work)
        where TWork : struct, IChunkWork<TResult>
    {
        var parts = ArrayPool<TResult>.Shared.Rent(chunks);
        var locals = output is null ? null : ArrayPool<SparseBuffer?>.Shared.Rent(chunks);
        try
        {
            Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = _maxThreads }, c =>
            {
                SparseBuffer? local = null;
                if (locals is not null) { local = locals[c] ??= LocalBuffers.Rent(); local.Clear(); }
                parts[c] = work.Run(c * ChunkSize, Math.Min(ChunkSize, n - c * ChunkSize), local);
            });
            TResult total = parts[0];
            for (int c = 1; c < chunks; c++) total = TWork.Combine(total, parts[c]);
            if (locals is not null)
            {
                int count = 0;
                for (int c = 0; c < chunks; c++) count += locals[c]!.Count;
                output!.Reserve(count);
                for (int c = 0; c < chunks; c++) output.AddRange(locals[c]!.Indices, locals[c]!.Values);
            }
            return total;
        }
        finally
        {
            ArrayPool<TResult>.Shared.Return(parts);
            if (locals is not null)
            {
                for (int c = 0; c < chunks; c++) { if (locals[c] is { } l) LocalBuffers.Return(l); locals[c] = null; }
                ArrayPool<SparseBuffer?>.Shared.Return(locals);
            }
        }
    }

    // The measuring pass (with a residual: accumulate, then measure) on a chunk, collecting candidates into output.
    private readonly unsafe struct MeasureChunk(float* x, float* residual, StatisticsKinds kinds, float candidateBound, float tailBound)
        : IChunkWork<GradientStatistics>
    {
        public GradientStatistics Run(int start, int length, SparseBuffer? output) =>
            MeasureRange(x + start, residual == null ? null : residual + start, length, start, kinds, candidateBound, output, tailBound);

        // The first non-finite entry is the earliest chunk's.
        public static GradientStatistics Combine(GradientStatistics first, GradientStatistics next)
        {
            var tail = (first.Tail, next.Tail) switch
            {
                ({ } t, { } q) => ExceedChunk.Combine(t, q),
                (_, var q) => q,
            };
            return new GradientStatistics(first.Count + next.Count, first.SumAbs + next.SumAbs, first.SumLogAbs + next.SumLogAbs,
                first.SumSquares + next.SumSquares, Math.Max(first.MaxAbs, next.MaxAbs),
                    first.FirstNonFinite >= 0 ? first.FirstNonFinite : next.FirstNonFinite)
            { Tail = tail };
        }
    }

    private readonly unsafe struct ExceedChunk(float* x, float threshold) : IChunkWork<ExceedanceStatistics>
    {
        public ExceedanceStatistics Run(int start, int length, SparseBuffer? output) => ExceedRange(x + start, length, threshold);

        public static ExceedanceStatistics Combine(ExceedanceStatistics first, ExceedanceStatistics next) =>
            new(first.Count + next.Count, first.Sum + next.Sum, first.SumSquares + next.SumSquares, Math.Min(first.Min, next.Min));
    }

    private readonly unsafe struct CountChunk(float* x, float threshold) : IChunkWork<long>
    {
        public long Run(int start, int length, SparseBuffer? output) => CountRange(x + start, length, threshold);
        public static long Combine(long first, long next) => first + next;
    }

    // Appends the chunk's entries above the threshold to output; the result is how many.
    private readonly unsafe struct SelectChunk(float* x, float threshold) : IChunkWork<int>
    {
        public int Run(int start, int length, SparseBuffer? output)
        {
            int before = output!.Count;
            SelectRange(x + start, length, start, threshold, output);
            return output.Count - before;
        }

        public static int Combine(int first, int next) => first + next;
    }

    // Compile-time switches for the measuring pass. The JIT specialises a generic method per struct
    // type argument and folds TFlag.Value to a constant, so each combination gets its own loop with
    // only the vectors it needs live: one loop with run-time flags spilled registers and ran 3-5x
    // slower than memory bandwidth.
    private interface IFlag { static abstract bool Value { get; } }
    private readonly struct Yes : IFlag { public static bool Value => true; }
    private readonly struct No : IFlag { public static bool Value => false; }

    private static unsafe GradientStatistics MeasureRange(float* x, float* residual, int length, long offset, StatisticsKinds kinds,
        float bound, SparseBuffer? candidates, float tailBound)
    {
        var flags =
            new MeasureFlags((kinds & StatisticsKinds.LogMagnitudes) != 0, (kinds & StatisticsKinds.Squares) != 0, candidates is not null,
            float.IsFinite(tailBound), (kinds & StatisticsKinds.TailSquares) != 0);
        return residual != null
            ? MeasureWithLogs<Yes>(x, residual, length, offset, flags, bound, candidates, tailBound)
            : MeasureWithLogs<No>(x, residual, length, offset, flags, bound, candidates, tailBound);
    }

    private readonly record struct MeasureFlags(bool Logs, bool Squares, bool Compact, bool Tail, bool TailSquares);

    private static unsafe GradientStatistics MeasureWithLogs<TResidual>(float* x, float* residual, int length, long offset,
        MeasureFlags flags, float bound, SparseBuffer? candidates, float tailBound)
        where TResidual : struct, IFlag
        => flags.Logs
            ? MeasureWithSquares<TResidual, Yes>(x, residual, length, offset, flags, bound, candidates, tailBound)
            : MeasureWithSquares<TResidual, No>(x, residual, length, offset, flags, bound, candidates, tailBound);

    private static unsafe GradientStatistics MeasureWithSquares<TResidual, TLogs>(float* x, float* residual, int length, long offset,
        MeasureFlags flags, float bound, SparseBuffer? candidates, float tailBound)
        where TResidual : struct, IFlag where TLogs : struct, IFlag
        => flags.Squares
            ? MeasureWithCandidates<TResidual, TLogs, Yes>(x, residual, length, offset, flags, bound, candidates, tailBound)
            : MeasureWithCandidates<TResidual, TLogs, No>(x, residual, length, offset, flags, bound, candidates, tailBound);

    private static unsafe GradientStatistics MeasureWithCandidates<TResidual, TLogs, TSquares>(float* x, float* residual, int length,
        long offset, MeasureFlags flags, float bound, SparseBuffer? candidates, float tailBound)
        where TResidual : struct, IFlag where TLogs : struct, IFlag where TSquares : struct, IFlag
        => flags.Compact
            ? MeasureWithTail<TResidual, TLogs, TSquares, Yes>(x, residual, length, offset, flags, bound, candidates, tailBound)
            : MeasureWithTail<TResidual, TLogs, TSquares, No>(x, residual, length, offset, flags, bound, candidates, tailBound);

    private static unsafe GradientStatistics MeasureWithTail<TResidual, TLogs, TSquares, TCompact>(float* x, float* residual, int length,
        long offset, MeasureFlags flags, float bound, SparseBuffer? candidates, float tailBound)
        where TResidual : struct, IFlag where TLogs : struct, IFlag where TSquares : struct, IFlag where TCompact : struct, IFlag
        => !flags.Tail
            ? MeasureCore<TResidual, TLogs, TSquares, TCompact, NoTail>(x, residual, length, offset, bound, candidates, tailBound)
            : flags.TailSquares
                ? MeasureCore<TResidual, TLogs, TSquares, TCompact, TailWithSquares>(x, residual, length, offset, bound, candidates,
                tailBound)
            : MeasureCore<TResidual, TLogs, TSquares, TCompact, TailFirstMoments>(x, residual, length, offset, bound, candidates,
                tailBound);

    // What the pass gathers about the exceedances of the tail bound.
    private interface ITailMode
    {
        static abstract bool Enabled { get; }
        static abstract bool Squares { get; }
    }

    private readonly struct NoTail : ITailMode { public static bool Enabled => false; public static bool Squares => false; }
    private readonly struct TailFirstMoments : ITailMode { public static bool Enabled => true; public static bool Squares => false; }
    private readonly struct TailWithSquares : ITailMode { public static bool Enabled => true; public static bool Squares => true; }

    // One pass over a range: optionally residual += x in place (finite lanes only), then |acc| statistics
    // and, when asked, compaction of the entries above a candidate bound and the statistics of the
    // exceedances of a tail bound (accumulated exactly as ExceedRange does, so they equal a separate pass;
    // their squares only when asked).
    // Every vector accumulator lives within one block and is reduced to scalars before the block's
    // candidates are appended: no vector register survives a call on x64 Unix, so a vector live across
    // the append call would make the JIT keep all of them in memory.
    // Compiled fully optimised on first use: tier-0 SIMD code would slow the first training steps.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    private static unsafe GradientStatistics MeasureCore<TResidual, TLogs, TSquares, TCompact, TTail>(float* x, float* residual,
        int length, long offset, float bound, SparseBuffer? candidates, float tailBound)
        where TResidual : struct, IFlag where TLogs : struct, IFlag where TSquares : struct, IFlag where TCompact : struct, IFlag
            where TTail : struct, ITailMode
    {
        double sumAbs = 0, sumLog = 0, sumSq = 0;
        long tailCount = 0; double tailSum = 0, tailSq = 0; float tailMin = float.PositiveInfinity;
        float max = 0;
        bool bad = false;
        int i = 0;
        int pending = 0;
        // At most one entry per vector step of a block.
        int* pendingAt = stackalloc int[BlockSize / 8];
        // Sum of logs without a log per element: ln(y) = e ln 2 + ln(m) for y = m 2^e, m in [1, 2).
        // The two vectors of a step are multiplied first (each value is at least LogEpsilon, so the
        // product is at least 4.8e-32, still a normal float, and it stays finite while the block's largest
        // magnitude is below 2^63), then the product's biased exponent is summed as an integer and its
        // mantissa multiplied into a per-lane product: one exponent and one mantissa per two values. The
        // product is renormalised every 64 steps (64 mantissas stay below 2^64; its exponent moves to the
        // integer sum), the biases are subtracted once per block, and the lanes' logarithms taken once per block.
        while (i < length)
        {
            int blockStart = i;
            int end = Math.Min(length, i + BlockSize);
            var vSum = Vector256<float>.Zero; var vSq = Vector256<float>.Zero;
            var vMax = Vector256<float>.Zero;
            var vBad = Vector256<float>.Zero; // any lane becomes non-zero once a non-finite value appears
            var vProd = Vector256.Create(1f); var vExp = Vector256<int>.Zero;
            int biasedExponents = 0; // per lane: each carries the exponent bias 127
            var vTailSum = Vector256<float>.Zero; var vTailSq = Vector256<float>.Zero; var vTailCount = Vector256<int>.Zero;
            var vTailMin = Vector256.Create(float.PositiveInfinity);
            int sinceNormalise = 0;
            // Two vectors per iteration: each accumulator then carries one dependent add (or multiply)
            // per 16 entries instead of per 8, which halves the latency-bound cost on cache-resident buffers.
            for (; i + 2 * Vector256<float>.Count <= end; i += 2 * Vector256<float>.Count)
            {
                var a0 = FiniteMagnitudes<TResidual>(x, residual, i, ref vBad);
                var a1 = FiniteMagnitudes<TResidual>(x, residual, i + Vector256<float>.Count, ref vBad);
                vSum += a0 + a1;
                var pairMax = Vector256.MaxNative(a0, a1); // finite and non-negative: no IEEE special cases
                vMax = Vector256.MaxNative(vMax, pairMax);
                if (TLogs.Value)
                {
                    var eps = Vector256.Create(GradientStatistics.LogEpsilon);
                    var pair = ((a0 + eps) * (a1 + eps)).AsInt32();
                    vExp += Vector256.ShiftRightLogical(pair, 23);
                    vProd *= Mantissas(pair);
                    if (++sinceNormalise == 64)
                    {
                        var pb = vProd.AsInt32();
                        vExp += Vector256.ShiftRightLogical(pb, 23);
                        vProd = Mantissas(pb);
                        sinceNormalise = 0;
                        biasedExponents++;
                    }
                    biasedExponents++;
                }
                if (TSquares.Value) vSq += a0 * a0 + a1 * a1;
                if (TTail.Enabled)
                {
                    var vT = Vector256.Create(tailBound);
                    var m0 = Vector256.GreaterThan(a0, vT);
                    var m1 = Vector256.GreaterThan(a1, vT);
                    var t0 = a0 & m0;
                    var t1 = a1 & m1;
                    vTailSum += t0 + t1;
                    if (TTail.Squares) vTailSq += t0 * t0 + t1 * t1;
                    vTailCount -= m0.AsInt32() + m1.AsInt32(); // mask lanes are -1
                    vTailMin = Vector256.MinNative(vTailMin, Vector256.MinNative(
                        Vector256.ConditionalSelect(m0, a0, Vector256.Create(float.PositiveInfinity)),
                        Vector256.ConditionalSelect(m1, a1, Vector256.Create(float.PositiveInfinity))));
                }
                if (TCompact.Value)
                {
                    // Only note which steps hold a candidate, from the pair's lane-wise maximum already taken
                    // for the statistics; after the block, those steps' lanes are read back and compared.
                    uint any = Vector256.GreaterThan(pairMax, Vector256.Create(bound)).ExtractMostSignificantBits();
                    pendingAt[pending] = i; pending += any != 0 ? 1 : 0; // branch-free: candidates are too irregular to predict
                }
            }
            for (; i + Vector256<float>.Count <= end; i += Vector256<float>.Count) // at most once, at the end of the buffer
            {
                var a = FiniteMagnitudes<TResidual>(x, residual, i, ref vBad);
                vSum += a;
                vMax = Vector256.MaxNative(vMax, a);
                if (TLogs.Value)
                {
                    var b = (a + Vector256.Create(GradientStatistics.LogEpsilon)).AsInt32();
                    vExp += Vector256.ShiftRightLogical(b, 23);
                    vProd *= Mantissas(b);
                    biasedExponents++;
                }
                if (TSquares.Value) vSq += a * a;
                if (TTail.Enabled)
                {
                    var m = Vector256.GreaterThan(a, Vector256.Create(tailBound));
                    var t = a & m;
                    vTailSum += t;
                    if (TTail.Squares) vTailSq += t * t;
                    vTailCount -= m.AsInt32();
                    vTailMin = Vector256.MinNative(vTailMin, Vector256.ConditionalSelect(m, a, Vector256.Create(float.PositiveInfinity)));
                }
                if (TCompact.Value)
                {
                    uint any = Vector256.GreaterThan(a, Vector256.Create(bound)).ExtractMostSignificantBits();
                    pendingAt[pending] = i; pending += any != 0 ? 1 : 0;
                }
            }
            // Reduce before the Math.Log calls below, so that no accumulator is live across a call.
            float blockMax = MaxLanes(vMax);
            max = MathF.Max(max, blockMax);
            int vectorEnd = i;
            bad |= vBad != Vector256<float>.Zero;
            double blockSum = Vector256.Sum(vSum), blockSq = TSquares.Value ? Vector256.Sum(vSq) : 0;
            if (TTail.Enabled)
            {
                tailCount += Vector256.Sum(vTailCount); tailSum += Vector256.Sum(vTailSum);
                if (TTail.Squares) tailSq += Vector256.Sum(vTailSq);
                tailMin = MathF.Min(tailMin, MinLanes(vTailMin));
            }
            double blockLog = 0;
            if (TLogs.Value)
            {
                if (blockMax < PairProductLimit)
                {
                    blockLog = (Vector256.Sum(vExp) - (long)Vector256<float>.Count * 127 * biasedExponents) * Math.Log(2);
                    double mantissaLogs = 0;
                    for (int k = 0; k < Vector256<float>.Count; k++) mantissaLogs += Math.Log(vProd.GetElement(k));
                    blockLog += mantissaLogs;
                }
                // a pair's product may have overflowed: take this block's logs one by one
                else blockLog = LogRange(TResidual.Value ? residual : x, blockStart, vectorEnd);
            }
            if (TCompact.Value)
            {
                // The stored value (the new residual, or the input) is the one measured wherever it is finite;
                // where it is not, the pass reports a non-finite entry and the candidates go unused.
                // A noted step covers two vectors, except the single-vector step at a buffer's end.
                float* stored = TResidual.Value ? residual : x;
                var vBound = Vector256.Create(bound);
                for (int p = 0; p < pending; p++)
                {
                    int at = pendingAt[p];
                    uint bits = Vector256.GreaterThan(Vector256.Abs(Vector256.Load(stored + at)), vBound).ExtractMostSignificantBits();
                    if (at + 2 * Vector256<float>.Count <= vectorEnd)
                        bits |= Vector256.GreaterThan(Vector256.Abs(Vector256.Load(stored + at + Vector256<float>.Count)),
                            vBound).ExtractMostSignificantBits() << Vector256<float>.Count;
                    AppendLanes(bits, stored, at, offset, candidates!);
                }
                pending = 0;
            }
            for (; i < end; i++)
            {
                float v = x[i];
                if (TResidual.Value)
                {
                    float sum = v + residual[i];
                    if (float.IsFinite(sum)) residual[i] = sum; else { bad = true; continue; }
                    v = sum;
                }
                else if (!float.IsFinite(v)) { bad = true; continue; }
                float a = MathF.Abs(v);
                blockSum += a;
                if (a > max) max = a;
                if (TLogs.Value) blockLog += MathF.Log(a + GradientStatistics.LogEpsilon);
                if (TSquares.Value) blockSq += (double)a * a;
                if (TTail.Enabled && a > tailBound)
                {
                    tailCount++;
                    tailSum += a;
                    if (TTail.Squares) tailSq += (double)a * a;
                    if (a < tailMin) tailMin = a;
                }
                if (TCompact.Value && a > bound) candidates!.Add((int)(offset + i), v);
            }
            sumAbs += blockSum; sumLog += blockLog; sumSq += blockSq;
        }
        long firstBad = -1;
        if (bad)
        {
            // Rare path: locate the first offending entry exactly (the sum was not stored there).
            for (int j = 0; j < length; j++)
            {
                float v = TResidual.Value ? x[j] + residual[j] : x[j];
                if (!float.IsFinite(v)) { firstBad = offset + j; break; }
            }
        }
        var stats = new GradientStatistics(length, sumAbs, sumLog, sumSq, max, firstBad);
        return TTail.Enabled ? stats with { Tail = new ExceedanceStatistics(tailCount, tailSum, tailSq, tailMin) } : stats;
    }

    // |x| (or |x + residual|, storing the sum into the residual) with non-finite lanes zeroed and flagged
    // in bad. A lane whose sum is not finite keeps its old residual: a rejected step loses nothing.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> FiniteMagnitudes<TResidual>(float* x, float* residual, int i, ref Vector256<float> bad)
        where TResidual : struct, IFlag
    {
        var v = Vector256.Load(x + i);
        if (TResidual.Value)
        {
            var old = Vector256.Load(residual + i);
            v += old;
            var a = Vector256.Abs(v);
            var finite = Vector256.LessThan(a, Vector256.Create(float.PositiveInfinity));
            Vector256.ConditionalSelect(finite, v, old).Store(residual + i);
            bad |= ~finite;
            return a & finite;
        }
        else
        {
            var a = Vector256.Abs(v);
            var finite = Vector256.LessThan(a, Vector256.Create(float.PositiveInfinity));
            bad |= ~finite;
            return a & finite;
        }
    }

    /// <summary>Below this magnitude the product of two (plus LogEpsilon) is a finite float.</summary>
    private const float PairProductLimit = 9.2233720E18f; // 2^63

    // Sum of ln(|v| + LogEpsilon) over the finite entries of [from, to): the exact path for blocks with huge values.
    private static unsafe double LogRange(float* values, int from, int to)
    {
        double sum = 0;
        for (int j = from; j < to; j++)
        {
            float a = MathF.Abs(values[j]);
            sum += Math.Log(float.IsFinite(a) ? a + GradientStatistics.LogEpsilon : GradientStatistics.LogEpsilon);
        }
        return sum;
    }

    // The mantissas of positive floats as values in [1, 2).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Mantissas(Vector256<int> bits) =>
        ((bits & Vector256.Create(0x007FFFFF)) | Vector256.Create(0x3F800000)).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MinLanes(Vector256<float> v)
    {
        float m = float.PositiveInfinity;
        for (int k = 0; k < Vector256<float>.Count; k++) m = MathF.Min(m, v.GetElement(k));
        return m;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxLanes(Vector256<float> v)
    {
        float m = 0;
        for (int k = 0; k < Vector256<float>.Count; k++) m = MathF.Max(m, v.GetElement(k));
        return m;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe ExceedanceStatistics ExceedRange(float* x, int length, float threshold)
    {
        long count = 0; double sum = 0, sumSq = 0; float min = float.PositiveInfinity;
        var vT = Vector256.Create(threshold);
        var vMin = Vector256.Create(float.PositiveInfinity);
        int i = 0;
        while (i < length)
        {
            int end = Math.Min(length, i + BlockSize);
            var vSum = Vector256<float>.Zero; var vSq = Vector256<float>.Zero; var vCnt = Vector256<int>.Zero;
            for (; i + 2 * Vector256<float>.Count <= end; i += 2 * Vector256<float>.Count) // two vectors: half the dependent adds
            {
                var a0 = Vector256.Abs(Vector256.Load(x + i));
                var a1 = Vector256.Abs(Vector256.Load(x + i + Vector256<float>.Count));
                var mask0 = Vector256.GreaterThan(a0, vT);
                var mask1 = Vector256.GreaterThan(a1, vT);
                var sel0 = a0 & mask0;
                var sel1 = a1 & mask1;
                vSum += sel0 + sel1;
                vSq += sel0 * sel0 + sel1 * sel1;
                vCnt -= mask0.AsInt32() + mask1.AsInt32(); // mask lanes are -1
                vMin = Vector256.MinNative(vMin, Vector256.MinNative(
                    Vector256.ConditionalSelect(mask0, a0, Vector256.Create(float.PositiveInfinity)),
                    Vector256.ConditionalSelect(mask1, a1, Vector256.Create(float.PositiveInfinity))));
            }
            for (; i + Vector256<float>.Count <= end; i += Vector256<float>.Count)
            {
                var a = Vector256.Abs(Vector256.Load(x + i));
                var mask = Vector256.GreaterThan(a, vT);
                var sel = a & mask;
                vSum += sel;
                vSq += sel * sel;
                vCnt -= mask.AsInt32();
                vMin = Vector256.MinNative(vMin, Vector256.ConditionalSelect(mask, a, Vector256.Create(float.PositiveInfinity)));
            }
            count += Vector256.Sum(vCnt); sum += Vector256.Sum(vSum); sumSq += Vector256.Sum(vSq);
            for (; i < end; i++)
            {
                float a = MathF.Abs(x[i]);
                if (a > threshold) { count++; sum += a; sumSq += (double)a * a; if (a < min) min = a; }
            }
        }
        for (int k = 0; k < Vector256<float>.Count; k++) min = MathF.Min(min, vMin.GetElement(k));
        return new ExceedanceStatistics(count, sum, sumSq, min);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe long CountRange(float* x, int length, float threshold)
    {
        long count = 0;
        var vT = Vector256.Create(threshold);
        int i = 0;
        while (i < length)
        {
            int end = Math.Min(length, i + BlockSize);
            var vCnt = Vector256<int>.Zero;
            for (; i + Vector256<float>.Count <= end; i += Vector256<float>.Count)
                vCnt -= Vector256.GreaterThan(Vector256.Abs(Vector256.Load(x + i)), vT).AsInt32();
            count += Vector256.Sum(vCnt);
            for (; i < end; i++) if (MathF.Abs(x[i]) > threshold) count++;
        }
        return count;
    }

    // Compaction, packed without a branch per lane: a table maps a vector's compare mask to the permutation
    // that moves its selected lanes to the front; values and indices are permuted and stored whole, and the
    // write position advances by the mask's population count. Where few vectors hold a selected entry
    // (the usual 0.1-1 %), skipping the empty ones after the compare is cheaper than storing them; where
    // many do (a density warm-up's 10-25 %), that skip mispredicts and every vector is stored instead.
    // Each block picks by how much the one before it selected.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void SelectRange(float* x, int length, int offset, float threshold, SparseBuffer output)
    {
        var vT = Vector256.Create(threshold);
        int i = 0;
        if (Avx2.IsSupported)
        {
            var lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
            int vectorEnd = length - Vector256<float>.Count; // last start of a whole vector
            bool dense = false;
            while (i <= vectorEnd)
            {
                int blockEnd = Math.Min(vectorEnd, i + SelectBlock - Vector256<float>.Count);
                // A block writes at most SelectBlock entries, and the last store may spill a vector past them.
                output.GetWritableTail(SelectBlock + Vector256<float>.Count, out var tailIndices, out var tailValues);
                int written = 0;
                fixed (int* oi = tailIndices)
                fixed (float* ov = tailValues)
                fixed (int* table = s_packTable)
                {
                    for (; i <= blockEnd; i += Vector256<float>.Count)
                    {
                        var v = Vector256.Load(x + i);
                        uint bits = Vector256.GreaterThan(Vector256.Abs(v), vT).ExtractMostSignificantBits();
                        if (!dense && bits == 0) continue;
                        var permutation = Vector256.Load(table + bits * Vector256<int>.Count);
                        Avx2.PermuteVar8x32(v, permutation).Store(ov + written);
                        Avx2.PermuteVar8x32(Vector256.Create(offset + i) + lanes, permutation).Store(oi + written);
                        written += System.Numerics.BitOperations.PopCount(bits);
                    }
                }
                output.SetCount(output.Count + written);
                dense = written > SelectBlock / DenseSelectionDivisor;
            }
        }
        else
        {
            for (; i + Vector256<float>.Count <= length; i += Vector256<float>.Count)
                AppendLanes(Vector256.GreaterThan(Vector256.Abs(Vector256.Load(x + i)), vT).ExtractMostSignificantBits(), x, i, offset,
                    output);
        }
        for (; i < length; i++) if (MathF.Abs(x[i]) > threshold) output.Add(offset + i, x[i]);
    }

    // Appends, for each bit set in bits (lane order), entry at + lane of values with index offset + at + lane.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void AppendLanes(uint bits, float* values, int at, long offset, SparseBuffer output)
    {
        while (bits != 0)
        {
            int lane = System.Numerics.BitOperations.TrailingZeroCount(bits);
            output.Add((int)(offset + at + lane), values[at + lane]);
            bits &= bits - 1;
        }
    }

    // Entries scanned per reservation of the output in SelectRange.
    private const int SelectBlock = 2048;

    // SelectRange stores every vector of a block when the previous block selected more than 1 in this many
    // entries (a vector then holds a selected lane often enough that skipping empty ones mispredicts).
    private const int DenseSelectionDivisor = 32;

    // For each 8-bit compare mask, the lanes whose bit is set, in ascending order, then the rest (their
    // stores are overwritten by the next vector or lie past the count).
    private static readonly int[] s_packTable = BuildPackTable();

    private static int[] BuildPackTable()
    {
        var table = new int[256 * 8];
        for (int mask = 0; mask < 256; mask++)
        {
            int w = 0;
            for (int lane = 0; lane < 8; lane++) if ((mask & (1 << lane)) != 0) table[mask * 8 + w++] = lane;
            for (int lane = 0; lane < 8; lane++) if ((mask & (1 << lane)) == 0) table[mask * 8 + w++] = lane;
        }
        return table;
    }

    // A small pool of per-chunk selection buffers, so parallel selection allocates nothing in steady state.
    private static class LocalBuffers
    {
        private static readonly System.Collections.Concurrent.ConcurrentBag<SparseBuffer> s_pool = new();
        public static SparseBuffer Rent() => s_pool.TryTake(out var b) ? b : new SparseBuffer(1024);
        public static void Return(SparseBuffer b) { b.Clear(); s_pool.Add(b); }
    }
}
