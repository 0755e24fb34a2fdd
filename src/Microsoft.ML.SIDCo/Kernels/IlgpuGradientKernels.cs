using System.Diagnostics;
using System.Numerics;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using Doubles = ILGPU.ArrayView<double>;
using Floats = ILGPU.ArrayView<float>;
using Ints = ILGPU.ArrayView<int>;

namespace Microsoft.ML.SIDCo.Kernels;

/// <summary>
/// ILGPU backend of <see cref="IGradientKernels"/>: the same operations as small static kernels,
/// compiled once per accelerator and cached. Runs on CUDA or OpenCL devices, and on ILGPU's CPU
/// accelerator (which the tests use on machines without a GPU).
/// </summary>
/// <remarks>
/// <para>
/// Work is split into fixed segments of <see cref="SegmentSize"/> elements, one thread group each.
/// Inside a segment the group's threads read neighbouring elements (thread t reads t, t + G, t + 2G, ...),
/// so a warp's loads are coalesced on a GPU. Reductions combine the threads' partials in a fixed
/// tree in shared memory and write one partial per segment that the host adds in segment order;
/// compaction counts per segment, takes an exclusive prefix sum, then each group writes its
/// selections at its segment's offset in ascending order. Results are therefore deterministic for a
/// given device, and selections are identical to the CPU backend's.
/// </para>
/// <para>
/// The interface works on host spans, so every call copies its input to the device (and the residual
/// back): on a discrete GPU those copies, not the kernels, set the cost. <see cref="Timings"/> tells
/// the two apart.
/// </para>
/// </remarks>
internal sealed class IlgpuGradientKernels : IGradientKernels, IDisposable
{
    /// <summary>Elements handled by one thread group.</summary>
    public const int SegmentSize = 4096;

    // Shared-memory slots per group: the largest group size used (a power of two).
    private const int MaxGroupSize = 256;
    private const int FlagLogs = 1, FlagSquares = 2, FlagResidual = 1 << 8; // above every StatisticsKinds flag

    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly bool _ownsContext;
    private readonly int _groupSize;

    private readonly Action<KernelConfig, Floats, Floats, Doubles, Floats, Ints, int, int> _measure;
    private readonly Action<KernelConfig, Floats, Doubles, Floats, Ints, int, float> _exceed;
    private readonly Action<KernelConfig, Floats, Ints, int, float> _count;
    private readonly Action<KernelConfig, Floats, Ints, Ints, Floats, int, float> _compact;
    private readonly Action<Index1D, Ints, Floats, Floats> _scatterAdd;

    // Device buffers are grown on demand and reused, so steady-state calls allocate nothing on the device;
    // the host-side per-segment arrays likewise.
    private MemoryBuffer1D<float, Stride1D.Dense>? _x, _r, _outValues, _segFloat;
    private MemoryBuffer1D<int, Stride1D.Dense>? _segInt, _outIndices, _offsets;
    private MemoryBuffer1D<double, Stride1D.Dense>? _segDouble;
    private double[] _hostDoubles = [];
    private float[] _hostFloats = [];
    private int[] _hostInts = [], _hostOffsets = [];
    private long _transferTicks, _kernelTicks;

    private IlgpuGradientKernels(Context context, Accelerator accelerator, bool ownsContext, int? groupSize = null)
    {
        _context = context;
        _accelerator = accelerator;
        _ownsContext = ownsContext;
        // On ILGPU's CPU accelerator a group's threads are OS threads meeting at real barriers, far
        // costlier than a GPU's: there one thread walks its segment alone, as a CPU loop would. On a GPU, groups are the
        // largest power of two allowed.
        _groupSize = groupSize ?? (accelerator.AcceleratorType == AcceleratorType.CPU
            ? 1
            : 1 << BitOperations.Log2((uint)Math.Min(MaxGroupSize, accelerator.MaxNumThreadsPerGroup)));
        _measure = accelerator.LoadStreamKernel<Floats, Floats, Doubles, Floats, Ints, int, int>(MeasureKernel);
        _exceed = accelerator.LoadStreamKernel<Floats, Doubles, Floats, Ints, int, float>(ExceedKernel);
        _count = accelerator.LoadStreamKernel<Floats, Ints, int, float>(CountKernel);
        _compact = accelerator.LoadStreamKernel<Floats, Ints, Ints, Floats, int, float>(CompactKernel);
        _scatterAdd = accelerator.LoadAutoGroupedStreamKernel<Index1D, Ints, Floats, Floats>(ScatterAddKernel);
    }

    /// <summary>Creates the backend on ILGPU's multi-threaded CPU accelerator (for tests and machines without a GPU).</summary>
    public static IlgpuGradientKernels CreateCpu()
    {
        var context = Context.Create(b => b.CPU().EnableAlgorithms());
        return new IlgpuGradientKernels(context, context.CreateCPUAccelerator(0), ownsContext: true);
    }

    /// <summary>
    /// The CPU accelerator with a chosen group size (a power of two up to the device's limit), so that
    /// tests run the GPU's cooperative path (shared-memory trees, ordered compaction) without a GPU.
    /// </summary>
    internal static IlgpuGradientKernels CreateCpu(int groupSize)
    {
        var context = Context.Create(b => b.CPU().EnableAlgorithms());
        var accelerator = context.CreateCPUAccelerator(0);
        if (groupSize < 1 || groupSize > Math.Min(MaxGroupSize, accelerator.MaxNumThreadsPerGroup) || (groupSize & (groupSize - 1)) != 0)
        {
            int limit = accelerator.MaxNumThreadsPerGroup;
            accelerator.Dispose(); context.Dispose();
            throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize,
                $"groupSize must be a power of two up to {Math.Min(MaxGroupSize, limit)}.");
        }
        return new IlgpuGradientKernels(context, accelerator, ownsContext: true, groupSize);
    }

    /// <summary>Creates the backend on the best device present (a GPU when ILGPU finds one, else the CPU accelerator).</summary>
    public static IlgpuGradientKernels CreatePreferred()
    {
        var context = Context.Create(b => b.Default().EnableAlgorithms());
        var device = context.GetPreferredDevice(preferCPU: false);
        return new IlgpuGradientKernels(context, device.CreateAccelerator(context), ownsContext: true);
    }

    /// <summary>The accelerator the kernels run on.</summary>
    public Accelerator Accelerator => _accelerator;

    /// <summary>Threads per group (and per segment): 256 on a GPU (or the device's limit if lower), 1 on the CPU accelerator.</summary>
    public int GroupSize => _groupSize;

    /// <inheritdoc />
    public string Name => "ilgpu-" + _accelerator.AcceleratorType.ToString().ToLowerInvariant();

    /// <inheritdoc />
    public int PartitionLength => SegmentSize;

    /// <summary>
    /// Wall-clock time spent since creation or <see cref="ResetTimings"/> copying between host and
    /// device, and in kernels (launch to synchronisation). Their sum is nearly all of a call's time.
    /// </summary>
    public IlgpuTimings Timings => new(Stopwatch.GetElapsedTime(0, _transferTicks), Stopwatch.GetElapsedTime(0, _kernelTicks));

    /// <summary>Sets <see cref="Timings"/> back to zero.</summary>
    public void ResetTimings() => _transferTicks = _kernelTicks = 0;

    /// <inheritdoc />
    public GradientStatistics AccumulateAndMeasure(ReadOnlySpan<float> gradient, Span<float> residual, StatisticsKinds kinds,
        float candidateBound = float.PositiveInfinity, SparseBuffer? candidates = null, float tailBound = float.PositiveInfinity)
    {
        if (residual.Length != gradient.Length)
            throw new ArgumentException($"Residual length {residual.Length} differs from gradient length {gradient.Length}.",
            nameof(residual));
        var stats = MeasureCore(gradient, residual, kinds | (StatisticsKinds)FlagResidual);
        if (gradient.Length == 0) return float.IsFinite(tailBound) ? stats with { Tail = ExceedanceStatistics.Empty } : stats;
        CopyToHost(_r!, residual);
        // The accumulator is already on the device: select from there instead of copying it back up.
        if (candidates is not null) SelectOnDevice(_r!, gradient.Length, candidateBound, candidates);
        // A second kernel over the device copy: on a GPU the pass is cheap next to the transfers.
        return float.IsFinite(tailBound) ? stats with { Tail = AsAsked(ExceedOnDevice(_r!, gradient.Length, tailBound), kinds) } : stats;
    }

    /// <inheritdoc />
    public GradientStatistics Measure(ReadOnlySpan<float> values, StatisticsKinds kinds, float candidateBound = float.PositiveInfinity,
        SparseBuffer? candidates = null, float tailBound = float.PositiveInfinity)
    {
        var stats = MeasureCore(values, default, kinds);
        if (candidates is not null && values.Length > 0) SelectOnDevice(_x!, values.Length, candidateBound, candidates);
        if (!float.IsFinite(tailBound)) return stats;
        var tail = values.Length == 0 ? ExceedanceStatistics.Empty : AsAsked(ExceedOnDevice(_x!, values.Length, tailBound), kinds);
        return stats with { Tail = tail };
    }

    // The exceedance kernel always sums the squares; the contract (as on the CPU) reports them only when asked.
    private static ExceedanceStatistics AsAsked(ExceedanceStatistics tail, StatisticsKinds kinds) =>
        (kinds & StatisticsKinds.TailSquares) != 0 ? tail : tail with { SumSquares = 0 };

    private GradientStatistics MeasureCore(ReadOnlySpan<float> x, ReadOnlySpan<float> residual, StatisticsKinds kinds)
    {
        int n = x.Length;
        if (n == 0) return new GradientStatistics(0, 0, 0, 0, 0, -1);
        int segments = Segments(n);
        bool hasResidual = ((int)kinds & FlagResidual) != 0;
        Upload(ref _x, x);
        if (hasResidual) Upload(ref _r, residual);
        else Ensure(ref _r, 1);
        Ensure(ref _segDouble, segments * 3); Ensure(ref _segFloat, segments); Ensure(ref _segInt, segments);
        long t = Stopwatch.GetTimestamp();
        _measure(Config(segments), _x!.View, _r!.View, _segDouble!.View, _segFloat!.View, _segInt!.View, n, (int)kinds);
        WaitForKernel(t);
        var sums = Download(_segDouble, ref _hostDoubles, segments * 3);
        var maxes = Download(_segFloat, ref _hostFloats, segments);
        var bad = Download(_segInt, ref _hostInts, segments);
        double sumAbs = 0, sumLog = 0, sumSq = 0; float max = 0; long first = -1;
        for (int s = 0; s < segments; s++)
        {
            sumAbs += sums[3 * s]; sumLog += sums[3 * s + 1]; sumSq += sums[3 * s + 2];
            if (maxes[s] > max) max = maxes[s];
            if (first < 0 && bad[s] != int.MaxValue) first = bad[s];
        }
        return new GradientStatistics(n, sumAbs, sumLog, sumSq, max, first);
    }

    /// <inheritdoc />
    public ExceedanceStatistics MeasureExceedances(ReadOnlySpan<float> values, float threshold)
    {
        int n = values.Length;
        if (n == 0) return ExceedanceStatistics.Empty;
        Upload(ref _x, values);
        return ExceedOnDevice(_x!, n, threshold);
    }

    private ExceedanceStatistics ExceedOnDevice(MemoryBuffer1D<float, Stride1D.Dense> source, int n, float threshold)
    {
        int segments = Segments(n);
        Ensure(ref _segDouble, segments * 3); Ensure(ref _segFloat, segments); Ensure(ref _segInt, segments);
        long t = Stopwatch.GetTimestamp();
        _exceed(Config(segments), source.View, _segDouble!.View, _segFloat!.View, _segInt!.View, n, threshold);
        WaitForKernel(t);
        var sums = Download(_segDouble, ref _hostDoubles, segments * 3);
        var mins = Download(_segFloat, ref _hostFloats, segments);
        var counts = Download(_segInt, ref _hostInts, segments);
        long count = 0; double sum = 0, sumSq = 0; float min = float.PositiveInfinity;
        for (int s = 0; s < segments; s++)
        {
            count += counts[s]; sum += sums[3 * s]; sumSq += sums[3 * s + 1];
            if (mins[s] < min) min = mins[s];
        }
        return new ExceedanceStatistics(count, sum, sumSq, min);
    }

    /// <inheritdoc />
    public long CountAbove(ReadOnlySpan<float> values, float threshold)
    {
        int n = values.Length;
        if (n == 0) return 0;
        Upload(ref _x, values);
        long total = 0;
        foreach (int c in CountSegments(_x!, n, threshold)) total += c;
        return total;
    }

    /// <inheritdoc />
    public int SelectAbove(ReadOnlySpan<float> values, float threshold, SparseBuffer output)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (values.Length == 0) return 0;
        Upload(ref _x, values);
        return SelectOnDevice(_x!, values.Length, threshold, output);
    }

    private int SelectOnDevice(MemoryBuffer1D<float, Stride1D.Dense> source, int n, float threshold, SparseBuffer output)
    {
        int segments = Segments(n);
        var counts = CountSegments(source, n, threshold);
        if (_hostOffsets.Length < segments) _hostOffsets = new int[segments];
        long total = 0;
        for (int s = 0; s < segments; s++) { _hostOffsets[s] = (int)total; total += counts[s]; }
        if (total == 0) return 0;
        Upload(ref _offsets, _hostOffsets.AsSpan(0, segments));
        Ensure(ref _outIndices, (int)total); Ensure(ref _outValues, (int)total);
        long t = Stopwatch.GetTimestamp();
        _compact(Config(segments), source.View, _offsets!.View, _outIndices!.View, _outValues!.View, n, threshold);
        WaitForKernel(t);
        int start = output.Count;
        output.Reserve((int)total);
        output.GetWritableTail((int)total, out var idx, out var val);
        CopyToHost(_outIndices, idx);
        CopyToHost(_outValues, val);
        output.SetCount(start + (int)total);
        return (int)total;
    }

    /// <inheritdoc />
    /// <remarks>
    /// Entries are added with device atomics, so an index repeated within one call is summed in no fixed
    /// order (the last bits may differ from run to run). The sparse exchange calls this once per rank, and
    /// a rank's selection holds each index once, so its sums are deterministic and in rank order.
    /// </remarks>
    public void ScatterAdd(ReadOnlySpan<int> indices, ReadOnlySpan<float> values, Span<float> dense)
    {
        if (indices.Length != values.Length) throw new ArgumentException("Index and value spans differ in length.", nameof(values));
        if (indices.Length == 0) return;
        foreach (int i in indices)
            if ((uint)i >= (uint)dense.Length)
                throw new IndexOutOfRangeException($"Sparse index {i} is outside the dense buffer of length {dense.Length}.");
        Upload(ref _outIndices, indices);
        Upload(ref _outValues, values);
        Upload(ref _x, dense);
        long t = Stopwatch.GetTimestamp();
        _scatterAdd(indices.Length, _outIndices!.View.AsContiguous().SubView(0, indices.Length), _outValues!.View, _x!.View);
        WaitForKernel(t);
        CopyToHost(_x, dense);
    }

    private ReadOnlySpan<int> CountSegments(MemoryBuffer1D<float, Stride1D.Dense> source, int n, float threshold)
    {
        int segments = Segments(n);
        Ensure(ref _segInt, segments);
        long t = Stopwatch.GetTimestamp();
        _count(Config(segments), source.View, _segInt!.View, n, threshold);
        WaitForKernel(t);
        return Download(_segInt, ref _hostInts, segments);
    }

    private KernelConfig Config(int segments) => new(segments, _groupSize);

    private static int Segments(int n) => (n + SegmentSize - 1) / SegmentSize;

    private MemoryBuffer1D<T, Stride1D.Dense> Ensure<T>(ref MemoryBuffer1D<T, Stride1D.Dense>? buffer, int length) where T : unmanaged
    {
        if (buffer is null || buffer.Length < length)
        {
            buffer?.Dispose();
            buffer = _accelerator.Allocate1D<T>(Math.Max(length, 1));
        }
        return buffer;
    }

    private void Upload<T>(ref MemoryBuffer1D<T, Stride1D.Dense>? buffer, ReadOnlySpan<T> source) where T : unmanaged
    {
        var target = Ensure(ref buffer, source.Length);
        long t = Stopwatch.GetTimestamp();
        target.View.AsContiguous().SubView(0, source.Length).CopyFromCPU(source);
        _transferTicks += Stopwatch.GetTimestamp() - t;
    }

    private ReadOnlySpan<T> Download<T>(MemoryBuffer1D<T, Stride1D.Dense> buffer, ref T[] host, int length) where T : unmanaged
    {
        if (host.Length < length) host = new T[length];
        CopyToHost(buffer, host.AsSpan(0, length));
        return host.AsSpan(0, length);
    }

    // The first target.Length elements of the buffer, counted as transfer time.
    private void CopyToHost<T>(MemoryBuffer1D<T, Stride1D.Dense> buffer, Span<T> target) where T : unmanaged
    {
        long t = Stopwatch.GetTimestamp();
        buffer.View.AsContiguous().SubView(0, target.Length).CopyToCPU(target);
        _transferTicks += Stopwatch.GetTimestamp() - t;
    }

    // Waits for the kernel launched at the given timestamp and counts launch to completion as kernel time.
    private void WaitForKernel(long launched)
    {
        _accelerator.Synchronize();
        _kernelTicks += Stopwatch.GetTimestamp() - launched;
    }

    // ---- kernels: small static methods, one thread group per segment ----
    // Thread t of a group of G handles elements start + t, start + t + G, ...: neighbouring threads read
    // neighbouring elements. Partials are combined in a fixed tree (halving strides), so sums do not
    // depend on scheduling.

    private static void MeasureKernel(ArrayView<float> x, ArrayView<float> r,
        ArrayView<double> sums, ArrayView<float> maxes, ArrayView<int> firstBad, int n, int flags)
    {
        int segment = Grid.IdxX, t = Group.IdxX, g = Group.DimX;
        int start = segment * SegmentSize;
        int end = Math.Min(n, start + SegmentSize);
        bool residual = (flags & FlagResidual) != 0, logs = (flags & FlagLogs) != 0, squares = (flags & FlagSquares) != 0;
        float sum = 0, sumLog = 0, sumSq = 0, max = 0;
        int bad = int.MaxValue;
        for (int i = start + t; i < end; i += g)
        {
            float v = x[i];
            if (residual) v += r[i];
            float a = v < 0 ? -v : v;
            if (!(a < float.PositiveInfinity))
            {
                if (i < bad) bad = i; // non-finite: not stored, not measured
                continue;
            }
            if (residual) r[i] = v;
            sum += a;
            if (a > max) max = a;
            if (logs) sumLog += XMath.Log(a + GradientStatistics.LogEpsilon);
            if (squares) sumSq += a * a;
        }
        var s0 = SharedMemory.Allocate<double>(MaxGroupSize);
        var s1 = SharedMemory.Allocate<double>(MaxGroupSize);
        var s2 = SharedMemory.Allocate<double>(MaxGroupSize);
        var sMax = SharedMemory.Allocate<float>(MaxGroupSize);
        var sBad = SharedMemory.Allocate<int>(MaxGroupSize);
        s0[t] = sum; s1[t] = sumLog; s2[t] = sumSq; sMax[t] = max; sBad[t] = bad;
        Group.Barrier();
        for (int stride = g / 2; stride > 0; stride >>= 1)
        {
            if (t < stride)
            {
                s0[t] += s0[t + stride]; s1[t] += s1[t + stride]; s2[t] += s2[t + stride];
                if (sMax[t + stride] > sMax[t]) sMax[t] = sMax[t + stride];
                if (sBad[t + stride] < sBad[t]) sBad[t] = sBad[t + stride];
            }
            Group.Barrier();
        }
        if (t == 0)
        {
            sums[3 * segment] = s0[0]; sums[3 * segment + 1] = s1[0]; sums[3 * segment + 2] = s2[0];
            maxes[segment] = sMax[0];
            firstBad[segment] = sBad[0];
        }
    }

    private static void ExceedKernel(ArrayView<float> x, ArrayView<double> sums, ArrayView<float> mins, ArrayView<int> counts, int n,
        float threshold)
    {
        int segment = Grid.IdxX, t = Group.IdxX, g = Group.DimX;
        int start = segment * SegmentSize;
        int end = Math.Min(n, start + SegmentSize);
        int count = 0; double sum = 0, sumSq = 0; float min = float.PositiveInfinity;
        for (int i = start + t; i < end; i += g)
        {
            float v = x[i];
            float a = v < 0 ? -v : v;
            if (a > threshold) { count++; sum += a; sumSq += (double)a * a; if (a < min) min = a; }
        }
        var s0 = SharedMemory.Allocate<double>(MaxGroupSize);
        var s1 = SharedMemory.Allocate<double>(MaxGroupSize);
        var sMin = SharedMemory.Allocate<float>(MaxGroupSize);
        var sCount = SharedMemory.Allocate<int>(MaxGroupSize);
        s0[t] = sum; s1[t] = sumSq; sMin[t] = min; sCount[t] = count;
        Group.Barrier();
        for (int stride = g / 2; stride > 0; stride >>= 1)
        {
            if (t < stride)
            {
                s0[t] += s0[t + stride]; s1[t] += s1[t + stride]; sCount[t] += sCount[t + stride];
                if (sMin[t + stride] < sMin[t]) sMin[t] = sMin[t + stride];
            }
            Group.Barrier();
        }
        if (t == 0)
        {
            sums[3 * segment] = s0[0]; sums[3 * segment + 1] = s1[0]; sums[3 * segment + 2] = 0;
            mins[segment] = sMin[0]; counts[segment] = sCount[0];
        }
    }

    private static void CountKernel(ArrayView<float> x, ArrayView<int> counts, int n, float threshold)
    {
        int segment = Grid.IdxX, t = Group.IdxX, g = Group.DimX;
        int start = segment * SegmentSize;
        int end = Math.Min(n, start + SegmentSize);
        int count = 0;
        for (int i = start + t; i < end; i += g) { float v = x[i]; if ((v < 0 ? -v : v) > threshold) count++; }
        var sCount = SharedMemory.Allocate<int>(MaxGroupSize);
        sCount[t] = count;
        Group.Barrier();
        for (int stride = g / 2; stride > 0; stride >>= 1)
        {
            if (t < stride) sCount[t] += sCount[t + stride];
            Group.Barrier();
        }
        if (t == 0) counts[segment] = sCount[0];
    }

    private static void CompactKernel(ArrayView<float> x, ArrayView<int> offsets, ArrayView<int> outIndices, ArrayView<float> outValues,
        int n, float threshold)
    {
        int segment = Grid.IdxX, t = Group.IdxX, g = Group.DimX;
        int start = segment * SegmentSize;
        int end = Math.Min(n, start + SegmentSize);
        int o = offsets[segment];
        if (g == 1)
        {
            // One thread per segment (the CPU accelerator): a plain ordered loop, no barriers.
            for (int i = start; i < end; i++)
            {
                float v = x[i];
                if ((v < 0 ? -v : v) > threshold) { outIndices[o] = i; outValues[o] = v; o++; }
            }
            return;
        }
        var scan = SharedMemory.Allocate<int>(MaxGroupSize);
        // One row of G neighbouring elements per round; a row's selections keep ascending order through
        // an inclusive prefix sum of the flags (Hillis-Steele). Rows without a selection, the common case
        // at low density, cost one counting barrier.
        for (int row = start; row < end; row += g)
        {
            int i = row + t;
            float v = i < end ? x[i] : 0f;
            bool take = i < end && (v < 0 ? -v : v) > threshold;
            int inRow = Group.BarrierPopCount(take);
            if (inRow == 0) continue;
            scan[t] = take ? 1 : 0;
            Group.Barrier();
            for (int stride = 1; stride < g; stride <<= 1)
            {
                int add = t >= stride ? scan[t - stride] : 0;
                Group.Barrier();
                scan[t] += add;
                Group.Barrier();
            }
            if (take)
            {
                int at = o + scan[t] - 1;
                outIndices[at] = i; outValues[at] = v;
            }
            o += inRow;
            Group.Barrier(); // scan is reused by the next row
        }
    }

    private static void ScatterAddKernel(Index1D j, ArrayView<int> indices, ArrayView<float> values, ArrayView<float> dense)
        => Atomic.Add(ref dense[indices[j]], values[j]);

    /// <summary>Releases the device buffers, the accelerator and the context.</summary>
    public void Dispose()
    {
        _x?.Dispose(); _r?.Dispose(); _outValues?.Dispose(); _segFloat?.Dispose();
        _segInt?.Dispose(); _outIndices?.Dispose(); _offsets?.Dispose(); _segDouble?.Dispose();
        _accelerator.Dispose();
        if (_ownsContext) _context.Dispose();
    }
}

/// <summary>Where an <see cref="IlgpuGradientKernels"/> spent its time: host-device copies and kernels.</summary>
/// <param name="Transfer">Copying inputs to the device and results back.</param>
/// <param name="Kernel">Running kernels, from launch to synchronisation.</param>
internal readonly record struct IlgpuTimings(TimeSpan Transfer, TimeSpan Kernel);
