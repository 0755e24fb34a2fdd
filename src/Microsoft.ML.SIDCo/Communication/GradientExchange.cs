using System.Diagnostics;
using System.Numerics.Tensors;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.Communication;

/// <summary>How compressed gradients travel between workers.</summary>
public enum ExchangeMode
{
    /// <summary>
    /// Per step, whichever of sparse and dense the cost model predicts to be faster, from the actual counts. The trainer's
    /// compression hook also times, once per run, whether compressing pays at all, and exchanges the whole gradient densely
    /// where it does not.
    /// </summary>
    Auto,
    /// <summary>Allgather of (index, value) pairs, then scatter-add.</summary>
    Sparse,
    /// <summary>Dense allreduce of the (densified) vector.</summary>
    Dense,
}

/// <summary>What one exchange did, including the cost model's inputs and decision.</summary>
/// <param name="Mode">The exchange actually used.</param>
/// <param name="LocalSelected">Entries this worker contributed.</param>
/// <param name="TotalSelected">Entries contributed by all workers together (K).</param>
/// <param name="PredictedDenseMs">The model's prediction for a dense allreduce.</param>
/// <param name="PredictedSparseMs">The model's prediction for the sparse allgather.</param>
/// <param name="BytesPerRank">Bytes each rank sends in the mode used, per the model.</param>
/// <param name="ElapsedMs">Measured wall time of the exchange.</param>
/// <param name="WaitMs">
/// The part of <paramref name="ElapsedMs"/> spent in the allgather of the counts that opens a sparse or automatic
/// exchange: no worker leaves it before the last one has arrived, so it is this worker's wait for the slowest one
/// (plus one small message's latency). The cost model describes the rest; 0 for a dense allreduce, whose wait stays inside.
/// </param>
public readonly record struct ExchangeStats(ExchangeMode Mode, int LocalSelected, long TotalSelected, double PredictedDenseMs,
    double PredictedSparseMs, double BytesPerRank, double ElapsedMs, double WaitMs = 0)
{
    /// <summary>The model's prediction for the mode used.</summary>
    public double PredictedMs => Mode == ExchangeMode.Dense ? PredictedDenseMs : PredictedSparseMs;
}

/// <summary>
/// Averages gradients over all workers: sparse allreduce (allgather the counts, allgatherv the int32
/// indices and the values, scatter-add in rank order into a zeroed buffer, divide by the worker count)
/// or dense allreduce, chosen per step by <see cref="CostModel"/> in <see cref="ExchangeMode.Auto"/>.
/// Every worker ends with bitwise the same result. Buffers are reused from step to step.
/// </summary>
public sealed class GradientExchange
{
    private readonly ICommunicator _comm;
    private readonly IScatterAddKernel _scatter;
    private readonly int[] _counts;
    private int[] _allIndices = [];
    private float[] _allValues = [];
    private ushort[] _wireMine = [], _wireAll = [];
    private float[] _wireSum = [], _wireTerm = [], _orderedMine = [], _orderedAll = [];

    /// <summary>Creates an exchange for gradients of <paramref name="length"/> entries.</summary>
    /// <param name="comm">The workers.</param>
    /// <param name="length">Dense gradient length; checked to agree across ranks (collective).</param>
    /// <param name="mode">Exchange mode.</param>
    /// <param name="wire">How gradient values travel (dense and sparse); 16-bit formats halve the bytes and round the values.</param>
    /// <param name="model">Cost model; probed on <paramref name="comm"/> (once per communicator) when null, so every exchange reports a
    /// prediction.</param>
    public GradientExchange(ICommunicator comm, int length, ExchangeMode mode = ExchangeMode.Auto,
        WirePrecision wire = WirePrecision.Float32, CostModel? model = null)
        : this(comm, length, mode, wire, model, kernels: null)
    {
    }

    /// <summary>The exchange, scatter-adding with <paramref name="kernels"/> (the CPU's when null).</summary>
    internal GradientExchange(ICommunicator comm, int length, ExchangeMode mode, WirePrecision wire, CostModel? model,
        IScatterAddKernel? kernels)
    {
        ArgumentNullException.ThrowIfNull(comm);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (!Enum.IsDefined(mode)) throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown ExchangeMode.");
        _comm = comm;
        Length = length;
        Mode = mode;
        if (!Enum.IsDefined(wire)) throw new ArgumentOutOfRangeException(nameof(wire), wire, "Unknown WirePrecision.");
        Wire = wire;
        _scatter = kernels ?? CpuGradientKernels.Instance;
        _counts = new int[comm.Size];
        comm.VerifyAgreement("the gradient length", length);
        comm.VerifyAgreement("the exchange mode and wire precision", (long)mode * 4 + (long)wire);
        Model = model ?? CostModel.Probe(comm);
    }

    /// <summary>Dense gradient length.</summary>
    public int Length { get; }

    /// <summary>The configured mode.</summary>
    public ExchangeMode Mode { get; }

    /// <summary>How gradient values travel.</summary>
    public WirePrecision Wire { get; }

    /// <summary>
    /// Dense single-precision sums in rank order, whatever the length (an all-to-all, local sums, an allgather), so that
    /// exchanging a vector in pieces gives bitwise what exchanging it whole gives; MPI_Allreduce's order depends on the
    /// length. Same bytes as a ring allreduce. Off by default.
    /// </summary>
    internal bool OrderedSum { get; init; }

    /// <summary>The cost model in use.</summary>
    public CostModel Model { get; }

    /// <summary>
    /// Averages the workers' sparse gradients into <paramref name="averaged"/> (length <see cref="Length"/>).
    /// Indices chosen by several workers accumulate. Collective.
    /// </summary>
    public ExchangeStats AllReduce(SparseBuffer local, Span<float> averaged)
    {
        ArgumentNullException.ThrowIfNull(local);
        if (averaged.Length != Length)
            throw new ArgumentException($"Output length {averaged.Length} differs from the exchange length {Length}.", nameof(averaged));
        long start = Stopwatch.GetTimestamp();
        int p = _comm.Size;
        _comm.AllGather<int>([local.Count], _counts);
        double waitMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        long total = 0;
        foreach (int c in _counts) total += c;
        int valueBytes = Wire.BytesPerValue();
        double denseMs = Model.DenseSeconds(DenseWireFloats) * 1e3, sparseMs = Model.SparseSeconds(total, valueBytes) * 1e3;
        var mode = Mode switch
        {
            ExchangeMode.Auto => Model.Choose(DenseWireFloats, total, valueBytes),
            _ => Mode,
        };
        // Every rank saw the same counts, so every rank takes the same branch.
        if (mode == ExchangeMode.Dense)
        {
            averaged.Clear();
            _scatter.ScatterAdd(local.Indices, local.Values, averaged);
            SumDense(averaged);
        }
        else
        {
            if (total > int.MaxValue)
                throw new InvalidOperationException($"{total} selected entries exceed one exchange; use ExchangeMode.Dense.");
            int t = (int)total;
            if (_allIndices.Length < t) { _allIndices = new int[t]; _allValues = new float[t]; }
            _comm.AllGatherV(local.Indices, _allIndices.AsSpan(0, t), _counts);
            if (Wire != WirePrecision.Float32)
            {
                if (_wireMine.Length < local.Count) _wireMine = new ushort[local.Count];
                if (_wireAll.Length < t) _wireAll = new ushort[t];
                WireCodec.Encode(local.Values, _wireMine.AsSpan(0, local.Count), Wire);
                _comm.AllGatherV<ushort>(_wireMine.AsSpan(0, local.Count), _wireAll.AsSpan(0, t), _counts);
                WireCodec.Decode(_wireAll.AsSpan(0, t), _allValues.AsSpan(0, t), Wire);
            }
            else
            {
                _comm.AllGatherV(local.Values, _allValues.AsSpan(0, t), _counts);
            }
            averaged.Clear();
            int offset = 0;
            for (int r = 0; r < p; r++)
            {
                _scatter.ScatterAdd(_allIndices.AsSpan(offset, _counts[r]), _allValues.AsSpan(offset, _counts[r]), averaged);
                offset += _counts[r];
            }
        }
        if (p > 1 && !(mode == ExchangeMode.Dense && Wire != WirePrecision.Float32)) TensorPrimitives.Multiply(averaged, 1f / p, averaged);
        double bytes = mode == ExchangeMode.Dense ? DenseBytesPerRank : Model.SparseBytesPerRank(total, valueBytes);
        return new ExchangeStats(mode, local.Count, total, denseMs, sparseMs, bytes, Stopwatch.GetElapsedTime(start).TotalMilliseconds,
            waitMs);
    }

    /// <summary>
    /// Dense average of a piece of the gradient (any length up to <see cref="Length"/>), in place. Collective: every worker
    /// passes pieces of the same lengths in the same order.
    /// </summary>
    internal ExchangeStats AverageDense(Span<float> piece)
    {
        if (piece.Length > Length)
            throw new ArgumentException($"Piece length {piece.Length} exceeds the exchange length {Length}.", nameof(piece));
        long start = Stopwatch.GetTimestamp();
        SumDense(piece);
        if (_comm.Size > 1 && Wire == WirePrecision.Float32) TensorPrimitives.Multiply(piece, 1f / _comm.Size, piece);
        double bytes = Model.DenseBytesPerRank(piece.Length) * Wire.BytesPerValue() / sizeof(float);
        return new ExchangeStats(ExchangeMode.Dense, piece.Length, (long)piece.Length * _comm.Size,
            Model.DenseSeconds((long)piece.Length * Wire.BytesPerValue() / sizeof(float)) * 1e3, double.NaN, bytes,
            Stopwatch.GetElapsedTime(start).TotalMilliseconds);
    }

    /// <summary>Dense allreduce of <paramref name="gradient"/> in place, divided by the worker count. Collective.</summary>
    public ExchangeStats AllReduceDense(Span<float> gradient)
    {
        if (gradient.Length != Length)
            throw new ArgumentException($"Gradient length {gradient.Length} differs from the exchange length {Length}.", nameof(gradient));
        return AverageDense(gradient);
    }

    // The dense exchange moves as many bytes as a float32 ring allreduce of this many floats (the cost model's unit).
    private long DenseWireFloats => (long)Length * Wire.BytesPerValue() / sizeof(float);

    private double DenseBytesPerRank => Model.DenseBytesPerRank(Length) * Wire.BytesPerValue() / sizeof(float);

    // Float32: the sum over the workers in place (MPI_Allreduce). 16-bit: the average instead, in the two halves of a ring
    // allreduce: each rank pre-divides by the worker count (as Horovod and DDP do, so a sum cannot overflow the format), sends
    // block r to rank r, adds the P blocks it receives in single precision in rank order, and gathers every rank's rounded
    // block. Every rank ends with the same values; a value the format cannot hold fails on every rank alike.
    private void SumDense(Span<float> values)
    {
        int p = _comm.Size;
        if (p == 1) return;
        if (Wire == WirePrecision.Float32)
        {
            if (OrderedSum) SumInRankOrder(values);
            else _comm.AllReduceSum(values);
            return;
        }
        int n = values.Length, block = (n + p - 1) / p, padded = block * p;
        if (_wireMine.Length < padded) _wireMine = new ushort[padded];
        if (_wireAll.Length < padded) _wireAll = new ushort[padded];
        if (_wireSum.Length < block) { _wireSum = new float[block]; _wireTerm = new float[block]; }
        var mine = _wireMine.AsSpan(0, padded);
        var all = _wireAll.AsSpan(0, padded);
        TensorPrimitives.Multiply(values, 1f / p, values);
        WireCodec.Encode(values, mine[..n], Wire);
        mine[n..].Clear();
        _comm.AllToAll<ushort>(mine, all);
        var sum = _wireSum.AsSpan(0, block);
        var term = _wireTerm.AsSpan(0, block);
        sum.Clear();
        for (int r = 0; r < p; r++)
        {
            WireCodec.Decode(all.Slice(r * block, block), term, Wire);
            TensorPrimitives.Add(sum, term, sum);
        }
        WireCodec.Encode(sum, mine[..block], Wire);
        _comm.AllGather<ushort>(mine[..block], all);
        WireCodec.Decode(all[..n], values, Wire);
        if (!TensorPrimitives.IsFiniteAll<float>(values))
            throw new OverflowException($"Gradient entry {FirstNonFinite(values)} does not fit {Wire} on the wire (|x| / workers above " +
                $"65504, or not "
                + $"finite). Use WirePrecision.BFloat16 or Float32.");
    }

    // Rank r adds block r of every rank's vector in rank order; every rank gathers the sums.
    private void SumInRankOrder(Span<float> values)
    {
        int p = _comm.Size, n = values.Length, block = (n + p - 1) / p, padded = block * p;
        if (_orderedMine.Length < padded) { _orderedMine = new float[padded]; _orderedAll = new float[padded]; }
        var mine = _orderedMine.AsSpan(0, padded);
        var all = _orderedAll.AsSpan(0, padded);
        values.CopyTo(mine);
        mine[n..].Clear();
        _comm.AllToAll<float>(mine, all);
        var sum = mine[..block];
        all[..block].CopyTo(sum);
        for (int r = 1; r < p; r++) TensorPrimitives.Add(sum, all.Slice(r * block, block), sum);
        _comm.AllGather<float>(sum, all);
        all[..n].CopyTo(values);
    }

    private static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++) if (!float.IsFinite(values[i])) return i;
        return -1;
    }
}
