using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace Microsoft.ML.SIDCo.Kernels;

/// <summary>
/// ILGPU backend of <see cref="IGradientKernels"/>: the same operations as small static kernels,
/// compiled once per accelerator and cached. Runs on CUDA or OpenCL devices, and on ILGPU's CPU
/// accelerator (which the tests use on machines without a GPU).
/// </summary>
/// <remarks>
/// Work is split into fixed segments of <see cref="SegmentSize"/> elements, one kernel thread each.
/// Reductions write one partial per segment that the host adds in segment order; compaction counts
/// per segment, takes an exclusive prefix sum, then each segment writes its selections at its
/// offset. Both make results deterministic and the selection order ascending, identical to the CPU backend.
/// </remarks>
public sealed class IlgpuGradientKernels : IGradientKernels, IDisposable
{
    /// <summary>Elements handled by one kernel thread.</summary>
    public const int SegmentSize = 1024;

    private const int FlagLogs = 1, FlagSquares = 2, FlagResidual = 4;

    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly bool _ownsContext;

    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<double>, ArrayView<float>, ArrayView<long>, int, int> _measure;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<double>, ArrayView<float>, ArrayView<long>, int, float> _exceed;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<int>, int, float> _count;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, float> _compact;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>> _scatterAdd;

    // Device buffers are grown on demand and reused, so steady-state calls allocate nothing on the device.
    private MemoryBuffer1D<float, Stride1D.Dense>? _x, _r, _outValues, _segFloat;
    private MemoryBuffer1D<int, Stride1D.Dense>? _segInt, _outIndices, _offsets;
    private MemoryBuffer1D<double, Stride1D.Dense>? _segDouble;
    private MemoryBuffer1D<long, Stride1D.Dense>? _segLong;

    private IlgpuGradientKernels(Context context, Accelerator accelerator, bool ownsContext)
    {
        _context = context;
        _accelerator = accelerator;
        _ownsContext = ownsContext;
        _measure = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<double>, ArrayView<float>, ArrayView<long>, int, int>(MeasureKernel);
        _exceed = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<double>, ArrayView<float>, ArrayView<long>, int, float>(ExceedKernel);
        _count = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, int, float>(CountKernel);
        _compact = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, float>(CompactKernel);
        _scatterAdd = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>>(ScatterAddKernel);
    }

    /// <summary>Creates the backend on ILGPU's multi-threaded CPU accelerator (for tests and machines without a GPU).</summary>
    public static IlgpuGradientKernels CreateCpu()
    {
        var context = Context.Create(b => b.CPU().EnableAlgorithms());
        return new IlgpuGradientKernels(context, context.CreateCPUAccelerator(0), ownsContext: true);
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

    /// <inheritdoc />
    public string Name => "ilgpu-" + _accelerator.AcceleratorType.ToString().ToLowerInvariant();

    /// <inheritdoc />
    public GradientStatistics AccumulateAndMeasure(ReadOnlySpan<float> gradient, Span<float> residual, StatisticsKinds kinds, float candidateBound = float.PositiveInfinity, SparseBuffer? candidates = null)
    {
        if (residual.Length != gradient.Length) throw new ArgumentException($"Residual length {residual.Length} differs from gradient length {gradient.Length}.", nameof(residual));
        var stats = MeasureCore(gradient, residual, kinds | (StatisticsKinds)FlagResidual);
        if (gradient.Length > 0) _r!.View.AsContiguous().SubView(0, gradient.Length).CopyToCPU(residual);
        if (candidates is not null) SelectAbove(residual, candidateBound, candidates);
        return stats;
    }

    /// <inheritdoc />
    public GradientStatistics Measure(ReadOnlySpan<float> values, StatisticsKinds kinds, float candidateBound = float.PositiveInfinity, SparseBuffer? candidates = null)
    {
        var stats = MeasureCore(values, default, kinds);
        if (candidates is not null) SelectAbove(values, candidateBound, candidates);
        return stats;
    }

    private GradientStatistics MeasureCore(ReadOnlySpan<float> x, ReadOnlySpan<float> residual, StatisticsKinds kinds)
    {
        int n = x.Length;
        if (n == 0) return new GradientStatistics(0, 0, 0, 0, 0, -1);
        int segments = Segments(n);
        bool hasResidual = ((int)kinds & FlagResidual) != 0;
        Ensure(ref _x, n).View.AsContiguous().SubView(0, n).CopyFromCPU(x);
        Ensure(ref _r, hasResidual ? n : 1);
        if (hasResidual) _r!.View.AsContiguous().SubView(0, n).CopyFromCPU(residual);
        Ensure(ref _segDouble, segments * 3); Ensure(ref _segFloat, segments); Ensure(ref _segLong, segments);
        _measure(segments, _x!.View, _r!.View, _segDouble!.View, _segFloat!.View, _segLong!.View, n, (int)kinds);
        _accelerator.Synchronize();
        var sums = new double[segments * 3];
        var maxes = new float[segments];
        var bad = new long[segments];
        _segDouble.View.AsContiguous().SubView(0, segments * 3).CopyToCPU(sums);
        _segFloat.View.AsContiguous().SubView(0, segments).CopyToCPU(maxes);
        _segLong.View.AsContiguous().SubView(0, segments).CopyToCPU(bad);
        double sumAbs = 0, sumLog = 0, sumSq = 0; float max = 0; long first = -1;
        for (int s = 0; s < segments; s++)
        {
            sumAbs += sums[3 * s]; sumLog += sums[3 * s + 1]; sumSq += sums[3 * s + 2];
            if (maxes[s] > max) max = maxes[s];
            if (first < 0 && bad[s] >= 0) first = bad[s];
        }
        return new GradientStatistics(n, sumAbs, sumLog, sumSq, max, first);
    }

    /// <inheritdoc />
    public ExceedanceStatistics MeasureExceedances(ReadOnlySpan<float> values, float threshold)
    {
        int n = values.Length;
        if (n == 0) return new ExceedanceStatistics(0, 0, 0, float.PositiveInfinity);
        int segments = Segments(n);
        Ensure(ref _x, n).View.AsContiguous().SubView(0, n).CopyFromCPU(values);
        Ensure(ref _segDouble, segments * 3); Ensure(ref _segFloat, segments); Ensure(ref _segLong, segments);
        _exceed(segments, _x!.View, _segDouble!.View, _segFloat!.View, _segLong!.View, n, threshold);
        _accelerator.Synchronize();
        var sums = new double[segments * 3];
        var mins = new float[segments];
        var counts = new long[segments];
        _segDouble.View.AsContiguous().SubView(0, segments * 3).CopyToCPU(sums);
        _segFloat.View.AsContiguous().SubView(0, segments).CopyToCPU(mins);
        _segLong.View.AsContiguous().SubView(0, segments).CopyToCPU(counts);
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
        var counts = CountSegments(values, threshold, upload: true);
        long total = 0;
        foreach (int c in counts) total += c;
        return total;
    }

    /// <inheritdoc />
    public int SelectAbove(ReadOnlySpan<float> values, float threshold, SparseBuffer output)
    {
        ArgumentNullException.ThrowIfNull(output);
        int n = values.Length;
        if (n == 0) return 0;
        int segments = Segments(n);
        var counts = CountSegments(values, threshold, upload: true);
        var offsets = new int[segments];
        long total = 0;
        for (int s = 0; s < segments; s++) { offsets[s] = (int)total; total += counts[s]; }
        if (total == 0) return 0;
        Ensure(ref _offsets, segments).View.AsContiguous().SubView(0, segments).CopyFromCPU(offsets);
        Ensure(ref _outIndices, (int)total); Ensure(ref _outValues, (int)total);
        _compact(segments, _x!.View, _offsets!.View, _outIndices!.View, _outValues!.View, n, threshold);
        _accelerator.Synchronize();
        int start = output.Count;
        output.Reserve((int)total);
        output.GetWritableTail((int)total, out var idx, out var val);
        _outIndices.View.AsContiguous().SubView(0, (int)total).CopyToCPU(idx);
        _outValues.View.AsContiguous().SubView(0, (int)total).CopyToCPU(val);
        output.SetCount(start + (int)total);
        return (int)total;
    }

    /// <inheritdoc />
    public void ScatterAdd(ReadOnlySpan<int> indices, ReadOnlySpan<float> values, Span<float> dense)
    {
        if (indices.Length != values.Length) throw new ArgumentException("Index and value spans differ in length.", nameof(values));
        if (indices.Length == 0) return;
        foreach (int i in indices)
            if ((uint)i >= (uint)dense.Length) throw new IndexOutOfRangeException($"Sparse index {i} is outside the dense buffer of length {dense.Length}.");
        Ensure(ref _outIndices, indices.Length).View.AsContiguous().SubView(0, indices.Length).CopyFromCPU(indices);
        Ensure(ref _outValues, values.Length).View.AsContiguous().SubView(0, values.Length).CopyFromCPU(values);
        Ensure(ref _x, dense.Length).View.AsContiguous().SubView(0, dense.Length).CopyFromCPU(dense);
        _scatterAdd(indices.Length, _outIndices!.View.AsContiguous().SubView(0, indices.Length), _outValues!.View, _x!.View);
        _accelerator.Synchronize();
        _x.View.AsContiguous().SubView(0, dense.Length).CopyToCPU(dense);
    }

    private int[] CountSegments(ReadOnlySpan<float> values, float threshold, bool upload)
    {
        int n = values.Length, segments = Segments(n);
        if (upload) Ensure(ref _x, n).View.AsContiguous().SubView(0, n).CopyFromCPU(values);
        Ensure(ref _segInt, segments);
        _count(segments, _x!.View, _segInt!.View, n, threshold);
        _accelerator.Synchronize();
        var counts = new int[segments];
        _segInt.View.AsContiguous().SubView(0, segments).CopyToCPU(counts);
        return counts;
    }

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

    // ---- kernels: small static methods, one thread per segment ----

    private static void MeasureKernel(Index1D segment, ArrayView<float> x, ArrayView<float> r,
        ArrayView<double> sums, ArrayView<float> maxes, ArrayView<long> firstBad, int n, int flags)
    {
        int start = segment * SegmentSize;
        int end = Math.Min(n, start + SegmentSize);
        bool residual = (flags & FlagResidual) != 0, logs = (flags & FlagLogs) != 0, squares = (flags & FlagSquares) != 0;
        float sum = 0, sumLog = 0, sumSq = 0, max = 0;
        long bad = -1;
        for (int i = start; i < end; i++)
        {
            float v = x[i];
            if (residual) v += r[i];
            float a = v < 0 ? -v : v;
            if (!(a < float.PositiveInfinity))
            {
                if (bad < 0) bad = i; // non-finite: not stored, not measured
                continue;
            }
            if (residual) r[i] = v;
            sum += a;
            if (a > max) max = a;
            if (logs) sumLog += XMath.Log(a + GradientStatistics.LogEpsilon);
            if (squares) sumSq += a * a;
        }
        sums[3 * segment] = sum; sums[3 * segment + 1] = sumLog; sums[3 * segment + 2] = sumSq;
        maxes[segment] = max;
        firstBad[segment] = bad;
    }

    private static void ExceedKernel(Index1D segment, ArrayView<float> x, ArrayView<double> sums, ArrayView<float> mins, ArrayView<long> counts, int n, float threshold)
    {
        int start = segment * SegmentSize;
        int end = Math.Min(n, start + SegmentSize);
        long count = 0; double sum = 0, sumSq = 0; float min = float.PositiveInfinity;
        for (int i = start; i < end; i++)
        {
            float v = x[i];
            float a = v < 0 ? -v : v;
            if (a > threshold) { count++; sum += a; sumSq += (double)a * a; if (a < min) min = a; }
        }
        sums[3 * segment] = sum; sums[3 * segment + 1] = sumSq; sums[3 * segment + 2] = 0;
        mins[segment] = min; counts[segment] = count;
    }

    private static void CountKernel(Index1D segment, ArrayView<float> x, ArrayView<int> counts, int n, float threshold)
    {
        int start = segment * SegmentSize;
        int end = Math.Min(n, start + SegmentSize);
        int count = 0;
        for (int i = start; i < end; i++) { float v = x[i]; if ((v < 0 ? -v : v) > threshold) count++; }
        counts[segment] = count;
    }

    private static void CompactKernel(Index1D segment, ArrayView<float> x, ArrayView<int> offsets, ArrayView<int> outIndices, ArrayView<float> outValues, int n, float threshold)
    {
        int start = segment * SegmentSize;
        int end = Math.Min(n, start + SegmentSize);
        int o = offsets[segment];
        for (int i = start; i < end; i++)
        {
            float v = x[i];
            if ((v < 0 ? -v : v) > threshold) { outIndices[o] = i; outValues[o] = v; o++; }
        }
    }

    private static void ScatterAddKernel(Index1D j, ArrayView<int> indices, ArrayView<float> values, ArrayView<float> dense)
        => Atomic.Add(ref dense[indices[j]], values[j]);

    /// <summary>Releases the device buffers, the accelerator and the context.</summary>
    public void Dispose()
    {
        _x?.Dispose(); _r?.Dispose(); _outValues?.Dispose(); _segFloat?.Dispose();
        _segInt?.Dispose(); _outIndices?.Dispose(); _offsets?.Dispose(); _segDouble?.Dispose(); _segLong?.Dispose();
        _accelerator.Dispose();
        if (_ownsContext) _context.Dispose();
    }
}
