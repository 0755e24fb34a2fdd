using System.Runtime.InteropServices;

namespace Microsoft.ML.SIDCo.Communication;

/// <summary>
/// A minimal binding of the Open MPI C API (libmpi.so.40), resolved at run time. Open MPI's handles
/// are the addresses of exported globals (<c>ompi_mpi_comm_world</c>, <c>ompi_mpi_float</c>, ...),
/// so they are read with <see cref="NativeLibrary.GetExport"/>; functions are called through
/// unmanaged function pointers.
/// </summary>
internal static unsafe class MpiNative
{
    public const int Success = 0;
    public const int ThreadSerialized = 2;
    public const int ThreadMultiple = 3;
    public static readonly nint InPlace = 1; // MPI_IN_PLACE in Open MPI

    private static readonly Lazy<Api> s_api = new(Load);

    public static Api Get() => s_api.Value;

    public static bool TryLoad(out string? error)
    {
        try { _ = s_api.Value; error = null; return true; }
        catch (Exception e) { error = e.Message; return false; }
    }

    internal sealed class Api
    {
        public nint CommWorld, Float, Double, Int, Long, Byte, OpSum, ErrorsReturn;
        public delegate* unmanaged<int*, nint*, int, int*, int> InitThread;
        public delegate* unmanaged<int*, int> Initialized;
        public delegate* unmanaged<int*, int> Finalized;
        public delegate* unmanaged<int> Finalize;
        public delegate* unmanaged<nint, int*, int> CommRank;
        public delegate* unmanaged<nint, int*, int> CommSize;
        public delegate* unmanaged<nint, int> BarrierFn;
        public delegate* unmanaged<void*, int, nint, int, nint, int> Bcast;
        public delegate* unmanaged<void*, void*, int, nint, nint, nint, int> Allreduce;
        public delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int> Allgather;
        public delegate* unmanaged<void*, int, nint, void*, int*, int*, nint, nint, int> Allgatherv;
        public delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int> Alltoall;
        public delegate* unmanaged<void*, int, nint, int, int, void*, int, nint, int, int, nint, void*, int> Sendrecv;
        public delegate* unmanaged<nint, nint, int> CommSetErrhandler;
        public delegate* unmanaged<int, byte*, int*, int> ErrorString;
        public delegate* unmanaged<nint, int, int> Abort;
    }

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern nint DlOpen(string file, int mode);

    private static Api Load()
    {
        // Open MPI loads its components as plugins that need libmpi's symbols: load it RTLD_GLOBAL.
        const int RtldNow = 2, RtldGlobal = 0x100;
        nint lib = 0;
        foreach (var name in new[] { "libmpi.so.40", "libmpi.so" })
        {
            try { lib = DlOpen(name, RtldNow | RtldGlobal); } catch (Exception) { lib = 0; }
            if (lib == 0) NativeLibrary.TryLoad(name, out lib);
            if (lib != 0) break;
        }
        if (lib == 0)
            throw new DllNotFoundException("Open MPI (libmpi.so.40) was not found. Install it with 'apt-get install openmpi-bin " +
            "libopenmpi-dev' (./build.sh setup does this).");
        nint F(string s) => NativeLibrary.GetExport(lib, s);
        return new Api
        {
            CommWorld = F("ompi_mpi_comm_world"),
            Float = F("ompi_mpi_float"),
            Double = F("ompi_mpi_double"),
            Int = F("ompi_mpi_int"),
            Long = F("ompi_mpi_long_long_int"),
            Byte = F("ompi_mpi_byte"),
            OpSum = F("ompi_mpi_op_sum"),
            ErrorsReturn = F("ompi_mpi_errors_return"),
            InitThread = (delegate* unmanaged<int*, nint*, int, int*, int>)F("MPI_Init_thread"),
            Initialized = (delegate* unmanaged<int*, int>)F("MPI_Initialized"),
            Finalized = (delegate* unmanaged<int*, int>)F("MPI_Finalized"),
            Finalize = (delegate* unmanaged<int>)F("MPI_Finalize"),
            CommRank = (delegate* unmanaged<nint, int*, int>)F("MPI_Comm_rank"),
            CommSize = (delegate* unmanaged<nint, int*, int>)F("MPI_Comm_size"),
            BarrierFn = (delegate* unmanaged<nint, int>)F("MPI_Barrier"),
            Bcast = (delegate* unmanaged<void*, int, nint, int, nint, int>)F("MPI_Bcast"),
            Allreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, int>)F("MPI_Allreduce"),
            Allgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int>)F("MPI_Allgather"),
            Allgatherv = (delegate* unmanaged<void*, int, nint, void*, int*, int*, nint, nint, int>)F("MPI_Allgatherv"),
            Alltoall = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int>)F("MPI_Alltoall"),
            Sendrecv = (delegate* unmanaged<void*, int, nint, int, int, void*, int, nint, int, int, nint, void*, int>)F("MPI_Sendrecv"),
            CommSetErrhandler = (delegate* unmanaged<nint, nint, int>)F("MPI_Comm_set_errhandler"),
            ErrorString = (delegate* unmanaged<int, byte*, int*, int>)F("MPI_Error_string"),
            Abort = (delegate* unmanaged<nint, int, int>)F("MPI_Abort"),
        };
    }
}
