using System.Runtime.CompilerServices;
using System.Text;

namespace Microsoft.ML.SIDCo.Communication;

/// <summary>An MPI call returned an error code; the message carries <c>MPI_Error_string</c>.</summary>
public sealed class MpiException(string operation, int code, string detail)
    : Exception($"{operation} failed with MPI error {code}: {detail}")
{
    /// <summary>The MPI error code.</summary>
    public int ErrorCode { get; } = code;
}

/// <summary>
/// <see cref="ICommunicator"/> over Open MPI's <c>MPI_COMM_WORLD</c>: one worker per rank, launched by
/// <c>mpirun</c>. MPI is initialised once per process (thread level at least SERIALIZED) and
/// finalised at a clean process exit. The world communicator
/// uses <c>MPI_ERRORS_RETURN</c>, so every failure surfaces as an <see cref="MpiException"/>.
/// MPI stays initialised until the process ends cleanly (or <see cref="Shutdown"/> is called), so
/// several trainings in one process can each create and dispose a communicator.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator, ISharesLinks, IWorldCommunicator
{
    private static readonly object s_lock = new();
    private static bool s_initializedByUs;

    /// <summary>Identifies <c>MPI_COMM_WORLD</c>, which every instance attaches to (a cache key for per-link measurements).</summary>
    internal static object World { get; } = new();

    /// <inheritdoc />
    object ISharesLinks.Links => World;

    private readonly MpiNative.Api _api;

    /// <summary>Largest element count passed to one MPI call; larger buffers are sent in pieces so counts never overflow int.</summary>
    public int MaxElementsPerCall { get; init; } = 1 << 28;

    /// <summary>
    /// <see cref="AllGather{T}"/> of blocks this large (bytes per rank) or larger runs as a ring of our own instead of
    /// <c>MPI_Allgather</c>: on rate-limited TCP links the algorithm Open MPI picks for large blocks is slower than a ring
    /// (docs/benchmarks.md, "The allgather half"). Smaller blocks keep Open MPI's algorithms, which need fewer rounds.
    /// </summary>
    internal int RingAllGatherMinBytes { get; init; } = DefaultRingAllGatherMinBytes;

    internal const int DefaultRingAllGatherMinBytes = 256 << 10;

    // Tag of the ring's point-to-point messages; collectives have a context of their own, so they cannot match it.
    private const int RingTag = 0x51DC;

    /// <summary>True when this process was started by mpirun (Open MPI or PMIx environment present).</summary>
    public static bool IsLaunchedByMpirun =>
        Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is not null
            || Environment.GetEnvironmentVariable("PMIX_RANK") is not null;

    /// <summary>The world size announced by mpirun, or 1.</summary>
    public static int LaunchedWorldSize => int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE"), out int s) ? s : 1;

    /// <summary>This process's rank announced by mpirun (Open MPI's <c>OMPI_COMM_WORLD_RANK</c>, or PMIx's <c>PMIX_RANK</c>), or
    /// 0.</summary>
    public static int LaunchedRank =>
        int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK"), out int r) && r >= 0 ? r
        : int.TryParse(Environment.GetEnvironmentVariable("PMIX_RANK"), out r) && r >= 0 ? r : 0;

    /// <summary>
    /// How many ranks of this job mpirun started on this machine (Open MPI's <c>OMPI_COMM_WORLD_LOCAL_SIZE</c>,
    /// or MPICH's <c>MPI_LOCALNRANKS</c>), or 1 when not started by mpirun.
    /// </summary>
    public static int LaunchedLocalSize =>
        int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_SIZE"), out int s) && s > 0 ? s
        : int.TryParse(Environment.GetEnvironmentVariable("MPI_LOCALNRANKS"), out s) && s > 0 ? s : 1;

    /// <summary>This process's rank among the ranks mpirun started on this machine (<c>OMPI_COMM_WORLD_LOCAL_RANK</c>), or 0.</summary>
    public static int LaunchedLocalRank =>
        int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_RANK"), out int r) && r >= 0 ? r : 0;

    /// <summary>True when Open MPI's library can be loaded on this machine.</summary>
    public static bool IsAvailable => MpiNative.TryLoad(out _);

    /// <summary>Initialises MPI (once per process) and attaches to the world communicator.</summary>
    public MpiCommunicator()
    {
        _api = MpiNative.Get();
        lock (s_lock)
        {
            int flag;
            Check("MPI_Initialized", _api.Initialized(&flag));
            if (flag == 0)
            {
                int finalized;
                Check("MPI_Finalized", _api.Finalized(&finalized));
                if (finalized != 0)
                    throw new InvalidOperationException("MPI was already finalized in this process; it cannot be initialised twice.");
                int provided;
                Check("MPI_Init_thread", _api.InitThread(null, null, MpiNative.ThreadMultiple, &provided));
                if (provided < MpiNative.ThreadSerialized)
                    throw new InvalidOperationException($"Open MPI provided thread level {provided}; at least MPI_THREAD_SERIALIZED is " +
                        $"required.");
                s_initializedByUs = true;
                AppDomain.CurrentDomain.ProcessExit += OnProcessExit;
            }
            Check("MPI_Comm_set_errhandler", _api.CommSetErrhandler(_api.CommWorld, _api.ErrorsReturn));
        }
        int rank, size;
        Check("MPI_Comm_rank", _api.CommRank(_api.CommWorld, &rank));
        Check("MPI_Comm_size", _api.CommSize(_api.CommWorld, &size));
        Rank = rank; Size = size;
    }

    /// <inheritdoc />
    public int Rank { get; }

    /// <inheritdoc />
    public int Size { get; }

    /// <inheritdoc />
    public string Transport => "mpi";

    /// <inheritdoc />
    public void Barrier() => Check("MPI_Barrier", _api.BarrierFn(_api.CommWorld));

    /// <inheritdoc />
    public void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfNegative(root);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(root, Size);
        var (type, scale) = TypeOf<T>();
        fixed (T* p = buffer)
        {
            for (long off = 0; off < buffer.Length; off += MaxElementsPerCall)
            {
                int n = (int)Math.Min(MaxElementsPerCall, buffer.Length - off);
                Check("MPI_Bcast", _api.Bcast(p + off, n * scale, type, root, _api.CommWorld));
            }
        }
    }

    /// <inheritdoc />
    public void AllReduceSum<T>(Span<T> buffer) where T : unmanaged
    {
        var (type, scale) = TypeOf<T>();
        if (scale != 1) throw new NotSupportedException($"AllReduceSum supports float, double, int and long, not {typeof(T).Name}.");
        fixed (T* p = buffer)
        {
            for (long off = 0; off < buffer.Length; off += MaxElementsPerCall)
            {
                int n = (int)Math.Min(MaxElementsPerCall, buffer.Length - off);
                Check("MPI_Allreduce", _api.Allreduce((void*)MpiNative.InPlace, p + off, n, type, _api.OpSum, _api.CommWorld));
            }
        }
    }

    /// <inheritdoc />
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all) where T : unmanaged
    {
        if ((long)mine.Length * Size != all.Length)
            throw new ArgumentException($"AllGather needs {mine.Length} x {Size} = {(long)mine.Length * Size} elements of output, got " +
            $"{all.Length}.", nameof(all));
        var (type, scale) = TypeOf<T>();
        if (Size > 1 && (long)mine.Length * Unsafe.SizeOf<T>() >= RingAllGatherMinBytes)
        {
            RingAllGather(mine, all, type, scale);
            return;
        }
        if ((long)mine.Length * scale > int.MaxValue)
            throw new InvalidOperationException("AllGather block exceeds int.MaxValue MPI elements; exchange in smaller pieces.");
        fixed (T* s = mine)
        fixed (T* r = all)
            Check("MPI_Allgather", _api.Allgather(s, mine.Length * scale, type, r, mine.Length * scale, type, _api.CommWorld));
    }

    // The allgather half of a ring allreduce: in step s each rank passes the block it received in step s - 1 (its own first)
    // to the next rank and takes the previous rank's from the rank before it. Size - 1 steps, each link busy in one direction
    // with one block at a time; the same bytes as MPI_Allgather in the same places.
    private void RingAllGather<T>(ReadOnlySpan<T> mine, Span<T> all, nint type, int scale) where T : unmanaged
    {
        if ((long)Math.Min(MaxElementsPerCall, mine.Length) * scale > int.MaxValue)
            throw new InvalidOperationException("A ring piece exceeds int.MaxValue MPI elements; lower MaxElementsPerCall.");
        int block = mine.Length, next = (Rank + 1) % Size, previous = (Rank + Size - 1) % Size;
        mine.CopyTo(all.Slice(Rank * block, block));
        fixed (T* r = all)
        {
            for (int step = 0; step < Size - 1; step++)
            {
                T* send = r + (long)((Rank - step + Size) % Size) * block;
                T* receive = r + (long)((Rank - step - 1 + 2 * Size) % Size) * block;
                for (long off = 0; off < block; off += MaxElementsPerCall)
                {
                    int n = (int)Math.Min(MaxElementsPerCall, block - off);
                    Check("MPI_Sendrecv", _api.Sendrecv(send + off, n * scale, type, next, RingTag, receive + off, n * scale, type,
                        previous, RingTag, _api.CommWorld, null));
                }
            }
        }
    }

    /// <inheritdoc />
    public void AllGatherV<T>(ReadOnlySpan<T> mine, Span<T> all, ReadOnlySpan<int> counts) where T : unmanaged
    {
        if (counts.Length != Size)
            throw new ArgumentException($"AllGatherV needs one count per rank ({Size}), got {counts.Length}.", nameof(counts));
        if (counts[Rank] != mine.Length)
            throw new ArgumentException($"counts[{Rank}] = {counts[Rank]} but this rank contributes {mine.Length} elements.",
            nameof(counts));
        var (type, scale) = TypeOf<T>();
        var displs = CommunicatorExtensions.Displacements(counts);
        long total = (long)displs[^1] + counts[^1];
        if (total > all.Length)
            throw new ArgumentException($"AllGatherV output holds {all.Length} elements; {total} are needed.", nameof(all));
        if (total * scale > int.MaxValue)
            throw new InvalidOperationException("AllGatherV total exceeds int.MaxValue MPI elements; exchange in smaller pieces.");
        var scaledCounts = new int[Size];
        for (int r = 0; r < Size; r++) { scaledCounts[r] = counts[r] * scale; displs[r] *= scale; }
        fixed (T* s = mine)
        fixed (T* r = all)
        fixed (int* c = scaledCounts)
        fixed (int* d = displs)
            Check("MPI_Allgatherv", _api.Allgatherv(s, mine.Length * scale, type, r, c, d, type, _api.CommWorld));
    }

    /// <inheritdoc />
    public void AllToAll<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged
    {
        int block = CommunicatorExtensions.AllToAllBlock(send.Length, receive.Length, Size);
        var (type, scale) = TypeOf<T>();
        if ((long)block * scale > int.MaxValue)
            throw new InvalidOperationException("AllToAll block exceeds int.MaxValue MPI elements; exchange in smaller pieces.");
        fixed (T* s = send)
        fixed (T* r = receive)
            Check("MPI_Alltoall", _api.Alltoall(s, block * scale, type, r, block * scale, type, _api.CommWorld));
    }

    /// <summary>Ends every process of the job with <paramref name="code"/> (MPI_Abort): the way out when one rank cannot
    /// continue.</summary>
    public void Abort(int code) => _api.Abort(_api.CommWorld, code);

    private (nint Type, int Scale) TypeOf<T>() where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return (_api.Float, 1);
        if (typeof(T) == typeof(double)) return (_api.Double, 1);
        if (typeof(T) == typeof(int)) return (_api.Int, 1);
        if (typeof(T) == typeof(long)) return (_api.Long, 1);
        if (typeof(T) == typeof(byte)) return (_api.Byte, 1);
        // Other unmanaged types (Half, structs) travel as raw bytes.
        return (_api.Byte, Unsafe.SizeOf<T>());
    }

    private void Check(string operation, int code)
    {
        if (code == MpiNative.Success) return;
        var buffer = stackalloc byte[512];
        int len = 0;
        string detail = _api.ErrorString(code, buffer, &len) == MpiNative.Success ? Encoding.ASCII.GetString(buffer, len) : "unknown error";
        throw new MpiException(operation, code, detail);
    }

    private static void OnProcessExit(object? sender, EventArgs e)
    {
        // A clean exit finalises MPI so mpirun sees a normal end; a failing exit must not (peers may be
        // blocked in a collective, and mpirun's own abort handling ends the job).
        if (Environment.ExitCode == 0) FinalizeOnce();
    }

    private static void FinalizeOnce()
    {
        lock (s_lock)
        {
            if (!s_initializedByUs) return;
            var api = MpiNative.Get();
            int finalized;
            if (api.Finalized(&finalized) == MpiNative.Success && finalized == 0) api.Finalize();
            s_initializedByUs = false;
        }
    }

    /// <summary>Finalises MPI now (no MPI call is possible in this process afterwards). Optional: a clean exit does it.</summary>
    public static void Shutdown() => FinalizeOnce();

    /// <summary>Detaches this instance. MPI itself stays initialised (see <see cref="Shutdown"/>).</summary>
    public void Dispose() { }
}
