namespace Microsoft.ML.SIDCo.Communication;

/// <summary>
/// Several in-process workers inside each MPI rank, seen as one flat group: global rank =
/// host rank x workers per host + local rank. Every collective runs in three steps: among the
/// threads of a host (shared memory), among the hosts' leaders (local rank 0, MPI), and back to the
/// threads. Only leaders call MPI, so MPI_THREAD_SERIALIZED suffices.
/// </summary>
internal sealed class HybridCommunicator : IHierarchicalCommunicator
{
    private readonly InProcessCommunicator _local;
    private readonly ICommunicator _hosts;

    /// <summary>Joins this thread's <paramref name="local"/> communicator with the hosts' communicator.</summary>
    /// <param name="local">This worker's communicator among the threads of its host.</param>
    /// <param name="hosts">The communicator among hosts (an MPI rank per host); used by local rank 0 only.</param>
    public HybridCommunicator(InProcessCommunicator local, ICommunicator hosts)
    {
        _local = local ?? throw new ArgumentNullException(nameof(local));
        _hosts = hosts ?? throw new ArgumentNullException(nameof(hosts));
    }

    /// <summary>Communicator among the threads of this host.</summary>
    public ICommunicator Local => _local;

    /// <summary>Communicator among hosts (only the leader, local rank 0, may use it).</summary>
    public ICommunicator Hosts => _hosts;

    /// <summary>True on local rank 0, the thread that talks to the other hosts.</summary>
    public bool IsLeader => _local.Rank == 0;

    /// <summary>Workers per host.</summary>
    public int LocalSize => _local.Size;

    /// <inheritdoc />
    public int Rank => _hosts.Rank * _local.Size + _local.Rank;

    /// <inheritdoc />
    public int Size => _hosts.Size * _local.Size;

    /// <inheritdoc />
    public string Transport => _hosts.Transport + "+inprocess";

    /// <inheritdoc />
    public void Barrier()
    {
        _local.Barrier();
        if (IsLeader) _hosts.Barrier();
        _local.Barrier();
    }

    /// <inheritdoc />
    public void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfNegative(root);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(root, Size);
        _local.Broadcast(buffer, root % _local.Size);           // the root's host now holds it on every thread
        if (IsLeader) _hosts.Broadcast(buffer, root / _local.Size);
        _local.Broadcast(buffer, 0);
    }

    /// <inheritdoc />
    public void AllReduceSum<T>(Span<T> buffer) where T : unmanaged
    {
        _local.AllReduceSum(buffer);
        if (IsLeader) _hosts.AllReduceSum(buffer);
        _local.Broadcast(buffer, 0);
    }

    /// <inheritdoc />
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all) where T : unmanaged
    {
        if ((long)mine.Length * Size != all.Length)
            throw new ArgumentException($"AllGather needs {mine.Length} x {Size} elements of output, got {all.Length}.", nameof(all));
        var hostPart = new T[mine.Length * _local.Size];
        _local.AllGather(mine, hostPart);
        if (IsLeader) _hosts.AllGather<T>(hostPart, all);
        _local.Broadcast(all, 0);
    }

    /// <inheritdoc />
    public void AllGatherV<T>(ReadOnlySpan<T> mine, Span<T> all, ReadOnlySpan<int> counts) where T : unmanaged
    {
        if (counts.Length != Size)
            throw new ArgumentException($"AllGatherV needs one count per rank ({Size}), got {counts.Length}.", nameof(counts));
        int l = _local.Size, host = _hosts.Rank;
        var localCounts = counts.Slice(host * l, l);
        long hostTotal = 0;
        foreach (int c in localCounts) hostTotal += c;
        var hostPart = new T[hostTotal];
        _local.AllGatherV(mine, hostPart, localCounts);
        long total = 0;
        var hostCounts = new int[_hosts.Size];
        for (int h = 0; h < _hosts.Size; h++)
        {
            long s = 0;
            for (int j = 0; j < l; j++) s += counts[h * l + j];
            hostCounts[h] = checked((int)s);
            total += s;
        }
        if (IsLeader) _hosts.AllGatherV<T>(hostPart, all[..(int)total], hostCounts);
        _local.Broadcast(all[..(int)total], 0);
    }

    /// <summary>The local and host communicators belong to their owners.</summary>
    public void Dispose() { }
}
