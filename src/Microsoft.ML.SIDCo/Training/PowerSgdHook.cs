using System.Diagnostics;
using System.Numerics.Tensors;
using Microsoft.ML.SIDCo.Communication;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>
/// PowerSGD (Vogels, Karimireddy and Jaggi, NeurIPS 2019) as a gradient hook: each weight matrix M (a parameter's first
/// dimension by the rest, plus this worker's error) is sent as a rank-r product: P = M Q, summed over the workers and
/// orthogonalised, then Q = M^T P averaged over the workers, and every worker applies P Q^T. Q is warm-started from the last
/// step; the error M - P Q^T stays with the worker. Vectors (biases, norms) and matrices too small to gain are averaged
/// dense, as in PyTorch's PowerSGD hook, and so is the whole gradient for the first <see cref="DenseSteps"/> steps, by the
/// exchange of the no-compression baseline (<see cref="DenseAllReduceHook"/>, sums in rank order), as PyTorch's hook starts
/// with DDP's own allreduce.
/// </summary>
public sealed class PowerSgdHook : IGradientHook
{
    /// <summary>The default rank r.</summary>
    public const int DefaultRank = 1;

    /// <summary>The default number of dense steps at the start (PyTorch's start_powerSGD_iter).</summary>
    public const long DefaultDenseSteps = 10;

    // Gram-Schmidt leaves a column whose norm falls below this unscaled (a zero gradient block).
    private const float OrthogonalisationEpsilon = 1e-8f;

    private const int StateVersion = 1;

    private readonly record struct Matrix(string Name, int Offset, int Rows, int Columns, int POffset, int QOffset);

    private ICommunicator? _comm;
    private CostModel? _model;
    private GradientExchange? _dense;
    private Matrix[] _matrices = [];
    private (int Offset, int Count)[] _vectors = [];
    private float[] _p = [], _q = [], _error = [], _vectorValues = [], _approx = [];
    private int _length;

    /// <summary>Creates the hook.</summary>
    /// <param name="rank">The rank r of each matrix's approximation (1 or more).</param>
    /// <param name="denseSteps">Steps at the start averaged dense, without compression or error.</param>
    /// <param name="seed">Seeds the first Q (the same on every worker, so no exchange is needed to agree on it).</param>
    public PowerSgdHook(int rank = DefaultRank, long denseSteps = DefaultDenseSteps, int seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rank, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(denseSteps);
        Rank = rank;
        DenseSteps = denseSteps;
        Seed = seed;
    }

    /// <summary>The rank r.</summary>
    public int Rank { get; }

    /// <summary>Steps at the start averaged dense.</summary>
    public long DenseSteps { get; }

    /// <summary>Seed of the first Q.</summary>
    public int Seed { get; }

    /// <summary>Entries sent per step once compressing: the P and Q factors and the dense vectors.</summary>
    public long CompressedLength => _p.Length + _q.Length + _vectorValues.Length;

    /// <inheritdoc />
    public void Initialize(GradientHookContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        _comm = context.Communicator;
        _model = CostModel.Probe(_comm);
        _length = context.Length;
        var matrices = new List<Matrix>();
        var vectors = new List<(int, int)>();
        int pLength = 0, qLength = 0, covered = 0;
        foreach (var slice in context.Parameters)
        {
            int rows = slice.Shape.Length >= 2 ? (int)slice.Shape[0] : 0;
            int columns = rows > 0 ? slice.Count / rows : 0;
            // A rank-r factorisation sends (rows + columns) r values instead of rows x columns.
            if (rows > 0 && (long)(rows + columns) * Rank < (long)rows * columns)
            {
                matrices.Add(new Matrix(slice.Name, slice.Offset, rows, columns, pLength, qLength));
                pLength += rows * Rank;
                qLength += columns * Rank;
            }
            else vectors.Add((slice.Offset, slice.Count));
            covered += slice.Count;
        }
        if (covered != _length)
            throw new ArgumentException($"The parameters cover {covered} of the gradient's {_length} entries.", nameof(context));
        _matrices = [.. matrices];
        _vectors = [.. vectors];
        _p = new float[pLength];
        _q = new float[qLength];
        _error = new float[_length];
        _vectorValues = new float[vectors.Sum(v => v.Item2)];
        _approx = new float[_matrices.Length == 0 ? 0 : _matrices.Max(m => m.Columns)];
        var random = new Random(Seed);
        for (int i = 0; i < _q.Length; i++) _q[i] = (float)Gaussian(random);
        _comm.VerifyAgreement("the PowerSGD layout (rank, matrices, entries)",
            CommunicatorExtensions.Fingerprint($"{Rank};{DenseSteps};{Seed};"
                + string.Join(",", _matrices.Select(m => $"{m.Rows}x{m.Columns}"))));
    }

    /// <inheritdoc />
    public GradientHookStats Reduce(Span<float> gradient, long step)
    {
        var comm = _comm ?? throw new InvalidOperationException("Initialize must be called first.");
        if (gradient.Length != _length)
            throw new ArgumentException($"Gradient length {gradient.Length} differs from the hook's {_length}.", nameof(gradient));
        long start = Stopwatch.GetTimestamp();
        int workers = comm.Size;
        var model = _model!;
        if (step < DenseSteps)
        {
            // Created at the first dense step and dropped after the last: its buffers (twice the gradient) serve only the
            // dense start. Creating it is collective, as this call is: every worker takes the same steps.
            _dense ??= new GradientExchange(comm, _length, ExchangeMode.Dense, WirePrecision.Float32, model) { OrderedSum = true };
            var e = _dense.AllReduceDense(gradient);
            if (step == DenseSteps - 1) _dense = null;
            return new GradientHookStats(0, e.ElapsedMs, gradient.Length, e.BytesPerRank, 1, ExchangeMode.Dense, 1, false,
                e.PredictedDenseMs);
        }

        // Vectors: averaged dense.
        int at = 0;
        foreach (var (offset, count) in _vectors) { gradient.Slice(offset, count).CopyTo(_vectorValues.AsSpan(at)); at += count; }
        comm.AllReduceSum<float>(_vectorValues);
        if (workers > 1) TensorPrimitives.Multiply(_vectorValues, 1f / workers, _vectorValues);
        at = 0;
        foreach (var (offset, count) in _vectors) { _vectorValues.AsSpan(at, count).CopyTo(gradient.Slice(offset, count)); at += count; }

        // M = gradient + error, in the gradient's memory; P = M Q (Q kept transposed: r rows of the matrix's columns).
        foreach (var m in _matrices)
        {
            var mat = gradient.Slice(m.Offset, m.Rows * m.Columns);
            TensorPrimitives.Add(mat, _error.AsSpan(m.Offset, mat.Length), mat);
            var q = _q.AsSpan(m.QOffset, m.Columns * Rank);
            var p = _p.AsSpan(m.POffset, m.Rows * Rank);
            for (int i = 0; i < m.Rows; i++)
            {
                var row = mat.Slice(i * m.Columns, m.Columns);
                for (int j = 0; j < Rank; j++) p[i * Rank + j] = TensorPrimitives.Dot(row, q.Slice(j * m.Columns, m.Columns));
            }
        }
        comm.AllReduceSum<float>(_p);

        // Orthogonalise P; Q = M^T P (row by row of M, into Q's r rows).
        foreach (var m in _matrices)
        {
            var p = _p.AsSpan(m.POffset, m.Rows * Rank);
            Orthogonalise(p, m.Rows, Rank);
            var q = _q.AsSpan(m.QOffset, m.Columns * Rank);
            q.Clear();
            var mat = gradient.Slice(m.Offset, m.Rows * m.Columns);
            for (int i = 0; i < m.Rows; i++)
            {
                var row = mat.Slice(i * m.Columns, m.Columns);
                for (int j = 0; j < Rank; j++)
                {
                    var qj = q.Slice(j * m.Columns, m.Columns);
                    TensorPrimitives.MultiplyAdd(row, p[i * Rank + j], qj, qj);
                }
            }
        }
        comm.AllReduceSum<float>(_q);
        if (workers > 1) TensorPrimitives.Multiply(_q, 1f / workers, _q);

        // Every worker applies P Q^T; this worker keeps M - P Q^T as its error.
        foreach (var m in _matrices)
        {
            var p = _p.AsSpan(m.POffset, m.Rows * Rank);
            var q = _q.AsSpan(m.QOffset, m.Columns * Rank);
            var approx = _approx.AsSpan(0, m.Columns);
            for (int i = 0; i < m.Rows; i++)
            {
                approx.Clear();
                for (int j = 0; j < Rank; j++) TensorPrimitives.MultiplyAdd(q.Slice(j * m.Columns, m.Columns), p[i * Rank + j], approx,
                    approx);
                var row = gradient.Slice(m.Offset + i * m.Columns, m.Columns);
                TensorPrimitives.Subtract(row, approx, _error.AsSpan(m.Offset + i * m.Columns, m.Columns));
                approx.CopyTo(row);
            }
        }
        double elapsed = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        // Three allreduces (vectors, P, Q): the latency three times over, the bytes once.
        double predicted = (model.DenseSeconds(CompressedLength) + 2 * model.DenseSeconds(0)) * 1e3;
        return new GradientHookStats(0, elapsed, CompressedLength, model.DenseBytesPerRank(CompressedLength), 1, ExchangeMode.Dense, 1,
            false, predicted);
    }

    /// <summary>This worker's copy of matrix <paramref name="index"/>'s P (rows x r, row-major) after the last step.</summary>
    internal float[] PFor(int index) => _p.AsSpan(_matrices[index].POffset, _matrices[index].Rows * Rank).ToArray();

    /// <summary>Matrix <paramref name="index"/>'s Q, transposed (r x columns, row-major).</summary>
    internal float[] QTransposedFor(int index) => _q.AsSpan(_matrices[index].QOffset, _matrices[index].Columns * Rank).ToArray();

    /// <summary>This worker's error (the whole gradient's length; zero outside the matrices).</summary>
    internal float[] Error => (float[])_error.Clone();

    /// <summary>Whether the dense start's exchange (and its buffers) is held: from the first dense step to the last.</summary>
    internal bool HoldsDenseExchange => _dense is not null;

    /// <summary>The matrices compressed, in order: name, rows, columns.</summary>
    internal IReadOnlyList<(string Name, int Rows, int Columns)> Matrices => [.. _matrices.Select(m => (m.Name, m.Rows, m.Columns))];

    // Modified Gram-Schmidt on the r columns of a rows x r row-major matrix.
    private static void Orthogonalise(Span<float> p, int rows, int rank)
    {
        for (int j = 0; j < rank; j++)
        {
            for (int k = 0; k < j; k++)
            {
                double dot = 0;
                for (int i = 0; i < rows; i++) dot += (double)p[i * rank + j] * p[i * rank + k];
                for (int i = 0; i < rows; i++) p[i * rank + j] -= (float)dot * p[i * rank + k];
            }
            double norm = 0;
            for (int i = 0; i < rows; i++) norm += (double)p[i * rank + j] * p[i * rank + j];
            float scale = 1f / (float)(Math.Sqrt(norm) + OrthogonalisationEpsilon);
            for (int i = 0; i < rows; i++) p[i * rank + j] *= scale;
        }
    }

    private static double Gaussian(Random random)
    {
        double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    /// <inheritdoc />
    public void SaveState(Stream stream)
    {
        using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        w.Write(StateVersion);
        w.Write(_q.Length);
        w.Write(_error.Length);
        foreach (float v in _q) w.Write(v);
        foreach (float v in _error) w.Write(v);
    }

    /// <inheritdoc />
    public void LoadState(Stream stream)
    {
        using var r = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        int version = r.ReadInt32(), qLength = r.ReadInt32(), errorLength = r.ReadInt32();
        if (version != StateVersion || qLength != _q.Length || errorLength != _error.Length)
            throw new InvalidDataException($"PowerSGD state (version {version}, Q {qLength}, error {errorLength}) does not fit this hook "
                + $"(version {StateVersion}, Q {_q.Length}, error {_error.Length}).");
        var q = new float[qLength];
        var error = new float[errorLength];
        for (int i = 0; i < q.Length; i++) q[i] = r.ReadSingle();
        for (int i = 0; i < error.Length; i++) error[i] = r.ReadSingle();
        q.CopyTo(_q, 0);
        error.CopyTo(_error, 0);
    }

    /// <inheritdoc />
    public void Dispose() { }
}
