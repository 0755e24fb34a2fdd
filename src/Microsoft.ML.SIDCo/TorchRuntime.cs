using TorchSharp;

namespace Microsoft.ML.SIDCo;

/// <summary>
/// The native libtorch check. Like Microsoft.ML.TorchSharp, this package references TorchSharp only and leaves the
/// native libtorch to the app (CPU or CUDA, for the platforms it ships to), so the first use says what to add when
/// none is there, instead of TorchSharp's type-initialisation failure deep inside training.
/// </summary>
internal static class TorchRuntime
{
    private static readonly Lazy<Exception?> s_failure = new(Probe);

    /// <summary>What to add, named in the exception when no native libtorch loads.</summary>
    internal const string Advice =
        "Microsoft.ML.SIDCo references TorchSharp only; the app chooses the native libtorch, as with Microsoft.ML.TorchSharp. " +
        "Add one package to the app project: TorchSharp-cpu (CPU, every platform), libtorch-cpu-<rid> for the platforms you ship " +
        "(libtorch-cpu-linux-x64, libtorch-cpu-win-x64, libtorch-cpu-osx-arm64), or a CUDA build of libtorch. " +
        "On Linux, TorchSharp 0.107 also needs a libstdc++ with GLIBCXX_3.4.32 (Debian 13, Ubuntu 24.04 or newer).";

    /// <summary>Throws <see cref="InvalidOperationException"/> naming the packages to add when libtorch cannot be loaded.</summary>
    public static void EnsureLoaded()
    {
        if (s_failure.Value is { } cause)
        {
            string reason = cause.GetBaseException().Message.TrimEnd();
            throw new InvalidOperationException($"TorchSharp's native library (libtorch) could not be loaded ({reason}). {Advice}", cause);
        }
    }

    private static Exception? Probe()
    {
        try
        {
            return torch.TryInitializeDeviceType(DeviceType.CPU) ? null : new DllNotFoundException("no libtorch for the CPU was found.");
        }
        catch (Exception e) when (e is DllNotFoundException or NotSupportedException or TypeInitializationException
            or BadImageFormatException or EntryPointNotFoundException)
        {
            return e;
        }
    }
}
