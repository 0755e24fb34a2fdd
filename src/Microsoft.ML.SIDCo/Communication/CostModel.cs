using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Microsoft.ML.SIDCo.Communication;

/// <summary>
/// The alpha-beta (latency-bandwidth) model of the two exchanges, for <paramref name="Workers"/> workers:
/// ring allreduce of n floats costs 2(P-1) alpha + 2 (P-1)/P 4n beta; allgather of K (index, value)
/// pairs in total costs 3(P-1) alpha + (P-1)/P K (4 + value bytes) beta + K gamma, where gamma is the
/// local cost of scatter-adding one received entry (random writes into the dense buffer). Sparse stops
/// paying once the union of selections approaches P k ~ n, i.e. when P * density nears 1, and on fast
/// links (shared memory) earlier, when K gamma outweighs the bytes saved.
/// </summary>
/// <param name="AlphaSeconds">Per-message latency.</param>
/// <param name="BetaSecondsPerByte">Inverse bandwidth.</param>
/// <param name="Workers">Number of workers P.</param>
/// <param name="ScatterSecondsPerEntry">Local cost of scatter-adding one received entry (gamma).</param>
public sealed record CostModel(double AlphaSeconds, double BetaSecondsPerByte, int Workers, double ScatterSecondsPerEntry = 0)
{
    private static readonly ConditionalWeakTable<object, CostModel> s_cache = new();

    /// <summary>Bytes each rank sends in a ring allreduce of <paramref name="elements"/> floats.</summary>
    public double DenseBytesPerRank(long elements) => Workers <= 1 ? 0 : 2.0 * (Workers - 1) / Workers * 4.0 * elements;

    /// <summary>Bytes each rank sends, on average, in the allgather of <paramref name="totalSelected"/> pairs.</summary>
    public double SparseBytesPerRank(long totalSelected, int valueBytes = 4) =>
        Workers <= 1 ? 0 : (double)(Workers - 1) / Workers * totalSelected * (4 + valueBytes);

    /// <summary>Predicted seconds for the dense allreduce.</summary>
    public double DenseSeconds(long elements) =>
        Workers <= 1 ? 0 : 2.0 * (Workers - 1) * AlphaSeconds + DenseBytesPerRank(elements) * BetaSecondsPerByte;

    /// <summary>Predicted seconds for the sparse allgather exchange (counts allgather and scatter-add included).</summary>
    public double SparseSeconds(long totalSelected, int valueBytes = 4) => Workers <= 1 ? 0
        : 3.0 * (Workers - 1) * AlphaSeconds + SparseBytesPerRank(totalSelected, valueBytes) * BetaSecondsPerByte
            + totalSelected * ScatterSecondsPerEntry;

    /// <summary>Which exchange the model predicts to be faster.</summary>
    public ExchangeMode Choose(long elements, long totalSelected, int valueBytes = 4)
        => SparseSeconds(totalSelected, valueBytes) <= DenseSeconds(elements) ? ExchangeMode.Sparse : ExchangeMode.Dense;

    /// <summary>
    /// Measures alpha and beta on <paramref name="comm"/> with a short probe (small and 4 MiB allreduces,
    /// median of <paramref name="repetitions"/>, and 32 MiB ones when the link is fast), and gamma with a
    /// local scatter-add; agreed on by all ranks (rank 0's figures are broadcast).
    /// Collective: every rank must call it. Cached per communicator; communicators over the same links (every
    /// <see cref="MpiCommunicator"/> of a process is <c>MPI_COMM_WORLD</c>) share one entry, so a process that fits
    /// several times probes once. <see cref="Measure"/> always measures.
    /// </summary>
    public static CostModel Probe(ICommunicator comm, int repetitions = 10)
    {
        ArgumentNullException.ThrowIfNull(comm);
        object key = comm is ISharesLinks shared ? shared.Links : comm;
        if (s_cache.TryGetValue(key, out var cached)) return cached;
        var model = Measure(comm, repetitions);
        s_cache.AddOrUpdate(key, model);
        return model;
    }

    /// <summary>The measurement <see cref="Probe"/> makes, without its cache (collective).</summary>
    public static CostModel Measure(ICommunicator comm, int repetitions = 10)
    {
        ArgumentNullException.ThrowIfNull(comm);
        if (comm.Size == 1) return new CostModel(0, 0, 1);
        // Every worker holds its own probe buffers: the workers of one process share a budget instead of each taking 36 MiB.
        int inThisProcess = comm is IHierarchicalCommunicator h ? h.Local.Size : comm.Transport == "inprocess" ? comm.Size : 1;
        int cap = (int)Math.Min(8L * Large, ProbeBudgetBytes / sizeof(float) / inThisProcess);
        int largeSize = Math.Min(Large, cap);
        var small = new float[1];
        var large = new float[largeSize];
        double tSmall = MedianSeconds(comm, () => comm.AllReduceSum<float>(small), repetitions);
        double tLarge = MedianSeconds(comm, () => comm.AllReduceSum<float>(large), repetitions);
        int p = comm.Size;
        double alpha = tSmall / (2.0 * (p - 1));
        int size = largeSize;
        // Whether to probe again is a collective decision: ranks time the same allreduce slightly
        // differently, and near the cut-off (4 MiB at 1 Gbit/s is about 50 ms) they would disagree,
        // some entering three more allreduces and the others not (a hang or a size mismatch).
        var measured = new[] { tLarge };
        comm.Broadcast<double>(measured, 0);
        tLarge = measured[0];
        if (tLarge < 0.05)
        {
            // A fast link (shared memory, fast fabric): 4 MiB stays in caches and flatters the
            // bandwidth, so measure again with a message the size of a real gradient bucket.
            size = Math.Min(8 * Large, cap);
            var huge = new float[size];
            tLarge = MedianSeconds(comm, () => comm.AllReduceSum<float>(huge), 3);
        }
        double beta = Math.Max(1e-13, (tLarge - 2.0 * (p - 1) * alpha) / (2.0 * (p - 1) / p * 4.0 * size));
        double gamma = s_scatterSeconds.Value;
        var agreed = new[] { alpha, beta, gamma };
        comm.Broadcast<double>(agreed, 0);
        return new CostModel(agreed[0], agreed[1], p, agreed[2]);
    }

    /// <summary>A model from a known link: latency in microseconds and bandwidth in Mbit/s.</summary>
    public static CostModel FromLink(double latencyMicroseconds, double megabitsPerSecond, int workers)
        => new(latencyMicroseconds * 1e-6, 8.0 / (megabitsPerSecond * 1e6), workers);

    // The probe's message sizes: 1 Mi floats, and 8 Mi on a fast link.
    private const int Large = 1 << 20;

    // What the probe buffers of one process's workers may take together; up to 8 workers probe at the full sizes.
    private const long ProbeBudgetBytes = 256L << 20;

    // The scatter-add rate is a property of this machine's memory: measured once per process, not by every worker.
    private static readonly Lazy<double> s_scatterSeconds = new(() => ScatterProbe(ScatterRepetitions));
    private const int ScatterRepetitions = 10;

    // Seconds per entry to scatter-add spread indices into a buffer larger than the caches.
    private static double ScatterProbe(int repetitions)
    {
        const int Dense = 1 << 23, Entries = 1 << 18;
        var dense = new float[Dense];
        var idx = new int[Entries];
        var val = new float[Entries];
        var rng = new Random(7);
        for (int i = 0; i < Entries; i++) { idx[i] = rng.Next(Dense); val[i] = 1f; }
        Array.Sort(idx); // selections arrive in ascending order per worker
        var t = new double[repetitions];
        for (int r = 0; r < repetitions; r++)
        {
            long start = Stopwatch.GetTimestamp();
            Kernels.CpuGradientKernels.Instance.ScatterAdd(idx, val, dense);
            t[r] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        Array.Sort(t);
        return t[repetitions / 2] / Entries;
    }

    private static double MedianSeconds(ICommunicator comm, Action op, int repetitions)
    {
        op(); op(); // warm-up
        var t = new double[repetitions];
        for (int i = 0; i < repetitions; i++)
        {
            comm.Barrier();
            long start = Stopwatch.GetTimestamp();
            op();
            t[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        Array.Sort(t);
        return t[repetitions / 2];
    }
}
