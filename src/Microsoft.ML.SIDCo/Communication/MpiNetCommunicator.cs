using System.Reflection;
using System.Runtime.InteropServices;

namespace Microsoft.ML.SIDCo.Communication;

/// <summary>
/// <see cref="ICommunicator"/> over MPI.NET, for the MPI implementations of the MPICH family: Microsoft MPI on Windows
/// (<c>mpiexec</c>) and MPICH on Linux (<c>mpiexec.mpich</c>), where MPI.NET's calls to <c>msmpi.dll</c> are routed to
/// <c>libmpich.so.12</c>. One worker per rank of <c>MPI_COMM_WORLD</c>; MPI is initialised once per process (thread level
/// multiple) and finalised when the process exits. Open MPI, whose handles are pointers rather than MPICH's integers, keeps
/// its own binding (<see cref="MpiCommunicator"/>).
/// </summary>
public sealed unsafe class MpiNetCommunicator : ICommunicator, ISharesLinks, IWorldCommunicator
{
    private static readonly object s_lock = new();
    private static MPI.Environment? s_environment;

    // MPICH and Microsoft MPI define MPI_IN_PLACE as the address -1.
    private static readonly IntPtr s_inPlace = new(-1);

    /// <summary>Largest element count passed to one MPI call: larger buffers are sent in pieces so counts never overflow int.</summary>
    internal const int MaxElementsPerCall = 1 << 28;

    /// <summary>The MPICH-ABI libraries tried, in order, where MPI.NET asks for <c>msmpi.dll</c> on Linux.</summary>
    internal static readonly string[] MpichLibraries = ["libmpich.so.12", "libmpi.so.12"];

    /// <summary>Identifies <c>MPI_COMM_WORLD</c> (a cache key for per-link measurements).</summary>
    internal static object World { get; } = new();

    /// <inheritdoc />
    object ISharesLinks.Links => World;

    /// <summary>True when this process was started by an MPICH-family launcher (Hydra's or Microsoft MPI's <c>mpiexec</c>, which
    /// set <c>PMI_RANK</c>) and not by Open MPI's <c>mpirun</c>.</summary>
    public static bool IsLaunchedByMpiexec =>
        Environment.GetEnvironmentVariable("PMI_RANK") is not null && !MpiCommunicator.IsLaunchedByMpirun;

    /// <summary>This process's rank announced by <c>mpiexec</c> (<c>PMI_RANK</c>), or 0.</summary>
    public static int LaunchedRank => int.TryParse(Environment.GetEnvironmentVariable("PMI_RANK"), out int r) && r >= 0 ? r : 0;

    /// <summary>The world size announced by <c>mpiexec</c> (<c>PMI_SIZE</c>), or 1.</summary>
    public static int LaunchedWorldSize => int.TryParse(Environment.GetEnvironmentVariable("PMI_SIZE"), out int s) && s > 0 ? s : 1;

    /// <summary>How many ranks <c>mpiexec</c> started on this machine (MPICH's <c>MPI_LOCALNRANKS</c>), or 1.</summary>
    public static int LaunchedLocalSize =>
        int.TryParse(Environment.GetEnvironmentVariable("MPI_LOCALNRANKS"), out int s) && s > 0 ? s : 1;

    /// <summary>This process's rank among the ranks mpiexec started on this machine (MPICH's <c>MPI_LOCALRANKID</c>), or 0.</summary>
    public static int LaunchedLocalRank =>
        int.TryParse(Environment.GetEnvironmentVariable("MPI_LOCALRANKID"), out int r) && r >= 0 ? r : 0;

    /// <summary>Initialises MPI through MPI.NET (once per process) and attaches to the world communicator.</summary>
    public MpiNetCommunicator()
    {
        lock (s_lock)
        {
            if (s_environment is null)
            {
                RouteToMpich();
                string[] args = [];
                try
                {
                    s_environment = new MPI.Environment(ref args, MPI.Threading.Multiple);
                }
                catch (DllNotFoundException e)
                {
                    throw new InvalidOperationException(
                        "MPI.NET found no MPI library: on Windows install Microsoft MPI (msmpi.dll); on Linux install MPICH "
                        + "(Debian: apt-get install mpich libmpich12) and start the program with mpiexec.mpich.", e);
                }
                AppDomain.CurrentDomain.ProcessExit += (_, _) => Finalise();
            }
        }
        Rank = MPI.Communicator.world.Rank;
        Size = MPI.Communicator.world.Size;
    }

    /// <inheritdoc />
    public int Rank { get; }

    /// <inheritdoc />
    public int Size { get; }

    /// <inheritdoc />
    public string Transport => "mpinet";

    /// <inheritdoc />
    public void Barrier() => Check("MPI_Barrier", MPI.Unsafe.MPI_Barrier(MPI.Unsafe.MPI_COMM_WORLD));

    /// <inheritdoc />
    public void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged
    {
        var (type, scale) = TypeOf<T>();
        fixed (T* p = buffer)
        {
            for (long done = 0; done < buffer.Length; done += MaxElementsPerCall)
            {
                int count = (int)Math.Min(MaxElementsPerCall, buffer.Length - done);
                Check("MPI_Bcast", MPI.Unsafe.MPI_Bcast((IntPtr)(p + done), count * scale, type, root, MPI.Unsafe.MPI_COMM_WORLD));
            }
        }
    }

    /// <inheritdoc />
    public void AllReduceSum<T>(Span<T> buffer) where T : unmanaged
    {
        var (type, scale) = TypeOf<T>();
        if (scale != 1)
            throw new NotSupportedException($"AllReduceSum over MPI supports float, double, int and long, not {typeof(T).Name}.");
        fixed (T* p = buffer)
        {
            for (long done = 0; done < buffer.Length; done += MaxElementsPerCall)
            {
                int count = (int)Math.Min(MaxElementsPerCall, buffer.Length - done);
                Check("MPI_Allreduce",
                    MPI.Unsafe.MPI_Allreduce(s_inPlace, (IntPtr)(p + done), count, type, MPI.Unsafe.MPI_SUM, MPI.Unsafe.MPI_COMM_WORLD));
            }
        }
    }

    /// <inheritdoc />
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all) where T : unmanaged
    {
        if (all.Length != (long)mine.Length * Size)
            throw new ArgumentException($"AllGather needs {mine.Length} x {Size} elements for the result, got {all.Length}.", nameof(all));
        var (type, scale) = TypeOf<T>();
        fixed (T* send = mine)
        fixed (T* receive = all)
        {
            Check("MPI_Allgather", MPI.Unsafe.MPI_Allgather((IntPtr)send, mine.Length * scale, type, (IntPtr)receive, mine.Length * scale,
                type, MPI.Unsafe.MPI_COMM_WORLD));
        }
    }

    /// <inheritdoc />
    public void AllGatherV<T>(ReadOnlySpan<T> mine, Span<T> all, ReadOnlySpan<int> counts) where T : unmanaged
    {
        if (counts.Length != Size) throw new ArgumentException($"AllGatherV needs {Size} counts, got {counts.Length}.", nameof(counts));
        if (counts[Rank] != mine.Length)
            throw new ArgumentException($"This rank's count is {counts[Rank]} but it sends {mine.Length}.", nameof(counts));
        var displacements = CommunicatorExtensions.Displacements(counts);
        long total = (long)displacements[^1] + counts[^1];
        if (all.Length != total)
            throw new ArgumentException($"AllGatherV needs {total} elements for the result, got {all.Length}.", nameof(all));
        var (type, scale) = TypeOf<T>();
        var scaledCounts = new int[Size];
        var scaledDisplacements = new int[Size];
        for (int r = 0; r < Size; r++)
        {
            scaledCounts[r] = checked(counts[r] * scale);
            scaledDisplacements[r] = checked(displacements[r] * scale);
        }
        fixed (T* send = mine)
        fixed (T* receive = all)
        {
            Check("MPI_Allgatherv", MPI.Unsafe.MPI_Allgatherv((IntPtr)send, mine.Length * scale, type, (IntPtr)receive, scaledCounts,
                scaledDisplacements, type, MPI.Unsafe.MPI_COMM_WORLD));
        }
    }

    /// <summary>Ends every process of the job with <paramref name="code"/> (MPI_Abort).</summary>
    public void Abort(int code) => MPI.Unsafe.MPI_Abort(MPI.Unsafe.MPI_COMM_WORLD, code);

    /// <summary>Nothing to release: MPI stays initialised until the process exits.</summary>
    public void Dispose() { }

    // MPI.NET calls msmpi.dll, Microsoft MPI's library. MPICH shares its integer handles and its ABI, so on other systems
    // the calls go to MPICH's library instead.
    private static void RouteToMpich()
    {
        if (OperatingSystem.IsWindows()) return;
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(MPI.Communicator).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // A resolver was set already (by the application): it decides.
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!name.StartsWith("msmpi", StringComparison.OrdinalIgnoreCase)) return IntPtr.Zero;
        foreach (string library in MpichLibraries)
            if (NativeLibrary.TryLoad(library, out IntPtr handle)) return handle;
        return IntPtr.Zero;
    }

    private static void Finalise()
    {
        lock (s_lock)
        {
            // A failing exit must not finalise: peers may be blocked in a collective, and the launcher ends the job.
            if (s_environment is null || Environment.ExitCode != 0) return;
            s_environment.Dispose();
            s_environment = null;
        }
    }

    private static (int Type, int Scale) TypeOf<T>() where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return (MPI.Unsafe.MPI_FLOAT, 1);
        if (typeof(T) == typeof(double)) return (MPI.Unsafe.MPI_DOUBLE, 1);
        if (typeof(T) == typeof(int)) return (MPI.Unsafe.MPI_INT, 1);
        if (typeof(T) == typeof(long)) return (MPI.Unsafe.MPI_LONG_LONG_INT, 1);
        if (typeof(T) == typeof(byte)) return (MPI.Unsafe.MPI_BYTE, 1);
        // Other unmanaged types (Half, structs) travel as raw bytes.
        return (MPI.Unsafe.MPI_BYTE, sizeof(T));
    }

    private static void Check(string operation, int code)
    {
        if (code != 0) throw new MpiException(operation, code, "reported by MPI through MPI.NET");
    }
}
