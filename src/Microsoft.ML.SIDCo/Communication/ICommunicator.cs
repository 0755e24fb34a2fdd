namespace Microsoft.ML.SIDCo.Communication;

/// <summary>
/// Collective operations among the workers of one training job. Every worker must call the same
/// collectives in the same order with compatible sizes, as with MPI. Element types are the
/// unmanaged types MPI moves natively: <see cref="float"/>, <see cref="double"/>, <see cref="int"/>,
/// <see cref="long"/>, <see cref="byte"/> (and <see cref="Half"/> as raw bytes).
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>This worker's rank, 0 .. <see cref="Size"/> - 1.</summary>
    int Rank { get; }

    /// <summary>Number of workers.</summary>
    int Size { get; }

    /// <summary>"mpi" or "inprocess".</summary>
    string Transport { get; }

    /// <summary>Blocks until every worker has arrived.</summary>
    void Barrier();

    /// <summary>Copies <paramref name="buffer"/> from <paramref name="root"/> to every worker.</summary>
    void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged;

    /// <summary>Element-wise sum over all workers, in place; every worker gets the same result.</summary>
    void AllReduceSum<T>(Span<T> buffer) where T : unmanaged;

    /// <summary>Gathers an equal-sized block from every worker into <paramref name="all"/> (rank order).</summary>
    void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all) where T : unmanaged;

    /// <summary>Gathers blocks of different sizes (<paramref name="counts"/>[r] from rank r) into <paramref name="all"/> in rank
    /// order.</summary>
    void AllGatherV<T>(ReadOnlySpan<T> mine, Span<T> all, ReadOnlySpan<int> counts) where T : unmanaged;

    /// <summary>
    /// Sends block r of <paramref name="send"/> (its length / <see cref="Size"/> elements) to rank r and receives rank r's
    /// block for this rank into block r of <paramref name="receive"/> (the same length). The default gathers every rank's
    /// whole buffer (correct, with Size times the traffic); transports override it with a true all-to-all.
    /// </summary>
    void AllToAll<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged
    {
        int block = CommunicatorExtensions.AllToAllBlock(send.Length, receive.Length, Size);
        var all = new T[(long)send.Length * Size];
        AllGather(send, all);
        for (int r = 0; r < Size; r++) all.AsSpan(r * send.Length + Rank * block, block).CopyTo(receive.Slice(r * block, block));
    }
}

/// <summary>
/// A group of workers made of hosts, each with several workers: collectives among a host's workers (<see cref="Local"/>,
/// shared memory) and among the hosts (<see cref="Hosts"/>, only the host's leader calls it). A two-level gradient hook
/// averages a host's workers first and has only the leaders exchange.
/// </summary>
internal interface IHierarchicalCommunicator : ICommunicator
{
    /// <summary>The workers of this host.</summary>
    ICommunicator Local { get; }

    /// <summary>The hosts, one leader each; only the leader may use it.</summary>
    ICommunicator Hosts { get; }

    /// <summary>True on the worker that talks to the other hosts.</summary>
    bool IsLeader { get; }
}

/// <summary>The world of an MPI job (one worker per rank), which can end the whole job.</summary>
internal interface IWorldCommunicator : ICommunicator
{
    /// <summary>Ends every process of the job with <paramref name="code"/> (MPI_Abort): the way out when a rank cannot go on.</summary>
    void Abort(int code);
}

/// <summary>
/// A communicator whose links other communicators of this process share (every MPI communicator over MPI_COMM_WORLD):
/// the cost model measures those links once per process.
/// </summary>
internal interface ISharesLinks
{
    /// <summary>The same object for every communicator over the same links.</summary>
    object Links { get; }
}

/// <summary>Thrown on every rank when ranks disagree about something they must share (buffer length, compressor, ...).</summary>
public sealed class RankMismatchException(string message) : InvalidOperationException(message);

/// <summary>Helpers built on the collectives.</summary>
public static class CommunicatorExtensions
{
    /// <summary>
    /// Collectively checks that every rank holds the same <paramref name="value"/> for <paramref name="what"/>;
    /// when they differ, throws <see cref="RankMismatchException"/> on every rank (never a hang: all ranks take part).
    /// </summary>
    public static void VerifyAgreement(this ICommunicator comm, string what, long value)
    {
        ArgumentNullException.ThrowIfNull(comm);
        if (comm.Size == 1) return;
        var all = new long[comm.Size];
        comm.AllGather<long>([value], all);
        if (all.Distinct().Count() > 1)
            throw new RankMismatchException($"Ranks disagree on {what}: " + string.Join(", ", all.Select((v, r) => $"rank {r} = {v}"))
                + ". Every rank must train the same model with the same options.");
    }

    /// <summary>
    /// Collectively checks that every rank holds the same value for each named setting (the names in the same order on
    /// every rank). When they differ, every rank throws <see cref="RankMismatchException"/> naming the first setting that
    /// differs and each rank's value of it.
    /// </summary>
    internal static void VerifyAgreement(this ICommunicator comm, string what, IReadOnlyList<(string Name, string Value)> settings)
    {
        if (comm.Size == 1) return;
        comm.VerifyAgreement($"the list of {what}", Fingerprint(string.Join("\n", settings.Select(s => s.Name))));
        int n = settings.Count;
        var mine = settings.Select(s => Fingerprint(s.Value)).ToArray();
        var all = new long[n * comm.Size];
        comm.AllGather<long>(mine, all);
        for (int i = 0; i < n; i++)
        {
            bool same = true;
            for (int r = 1; r < comm.Size && same; r++) same = all[r * n + i] == all[i];
            if (same) continue;
            // Every rank holds every hash, so all of them reach this point for the same setting.
            var values = GatherStrings(comm, settings[i].Value);
            throw new RankMismatchException($"Ranks disagree on {settings[i].Name} ({what}): "
                + string.Join(", ", values.Select((v, r) => $"rank {r} = {v}")) + ". Every rank must train with the same options.");
        }
    }

    // Every rank's string, in rank order (collective).
    private static string[] GatherStrings(ICommunicator comm, string value)
    {
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(value);
        var counts = new int[comm.Size];
        comm.AllGather<int>([bytes.Length], counts);
        var all = new byte[counts.Sum()];
        comm.AllGatherV<byte>(bytes, all, counts);
        var result = new string[comm.Size];
        int offset = 0;
        for (int r = 0; r < comm.Size; r++)
        {
            result[r] = System.Text.Encoding.UTF8.GetString(all, offset, counts[r]);
            offset += counts[r];
        }
        return result;
    }

    /// <summary>A stable 64-bit fingerprint of a string (for <see cref="VerifyAgreement(ICommunicator, string, long)"/>).</summary>
    public static long Fingerprint(string text) => (long)System.IO.Hashing.XxHash64.HashToUInt64(System.Text.Encoding.UTF8.GetBytes(text));

    /// <summary>The block length of an all-to-all: checks that both buffers hold <paramref name="size"/> equal blocks.</summary>
    internal static int AllToAllBlock(int send, int receive, int size)
    {
        if (send != receive || send % size != 0)
            throw new ArgumentException($"AllToAll needs send and receive buffers of equal length, a multiple of the {size} ranks; got "
                + $"{send} and {receive}.", nameof(receive));
        return send / size;
    }

    /// <summary>Exclusive prefix sums of <paramref name="counts"/>.</summary>
    internal static int[] Displacements(ReadOnlySpan<int> counts)
    {
        var d = new int[counts.Length];
        long sum = 0;
        for (int r = 0; r < counts.Length; r++)
        {
            d[r] = (int)sum;
            sum += counts[r];
            if (sum > int.MaxValue)
                throw new InvalidOperationException("AllGatherV total exceeds int.MaxValue elements; exchange in smaller pieces.");
        }
        return d;
    }
}
