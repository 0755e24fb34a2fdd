using System.Diagnostics;
using System.Numerics.Tensors;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>
/// Two-level exchange for several workers per host (<see cref="IHierarchicalCommunicator"/>): the workers of
/// a host average their gradients densely over shared memory, the host's leader compresses that
/// average (with error feedback) and exchanges it sparsely with the other hosts' leaders, and the
/// result is shared back with the host's workers. Compared with the flat exchange, the network sees
/// one selection per host instead of one per worker.
/// </summary>
internal sealed class HierarchicalCompressionHook(CompressionHookOptions options) : IGradientHook
{
    private readonly CompressionHookOptions _options = options ?? throw new ArgumentNullException(nameof(options));
    private IHierarchicalCommunicator? _comm;
    private CompressionHook? _leaderHook;

    /// <inheritdoc />
    public void Initialize(GradientHookContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        _comm = context.Communicator as IHierarchicalCommunicator
            ?? throw new InvalidOperationException("The hierarchical hook needs several workers per MPI rank (a hierarchical " +
                "communicator); use CompressionHook otherwise.");
        if (_comm.IsLeader)
        {
            _leaderHook = new CompressionHook(_options);
            _leaderHook.Initialize(context with { Communicator = _comm.Hosts });
        }
        _comm.Local.Barrier();
    }

    /// <inheritdoc />
    public GradientHookStats Reduce(Span<float> gradient, long step)
    {
        var comm = _comm ?? throw new InvalidOperationException("Initialize must be called first.");
        long start = Stopwatch.GetTimestamp();
        comm.Local.AllReduceSum(gradient);
        TensorPrimitives.Multiply(gradient, 1f / comm.Local.Size, gradient);
        double localMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        var shared = _leaderHook is null ? default : SharedStats.Of(_leaderHook.Reduce(gradient, step));
        long shareStart = Stopwatch.GetTimestamp();
        comm.Local.Broadcast(gradient, 0);
        // Every worker reports the leader's figures (shared with the result) plus its own local time.
        comm.Local.Broadcast<double>(shared.AsSpan(), 0);
        double shareMs = Stopwatch.GetElapsedTime(shareStart).TotalMilliseconds;
        return shared.ToStats(extraCommunicateMs: localMs + shareMs);
    }

    // The leader's step figures, as doubles in one span for a broadcast to the host's workers.
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct SharedStats
    {
        private const int Length = 10;
        public double CompressMs, CommunicateMs, Selected, BytesSent, AchievedOverTarget, Mode, Stages, Skipped, PredictedCommunicateMs,
            WaitMs;

        public static SharedStats Of(in GradientHookStats s) => new()
        {
            CompressMs = s.CompressMs,
            CommunicateMs = s.CommunicateMs,
            Selected = s.Selected,
            BytesSent = s.BytesSent,
            AchievedOverTarget = s.AchievedOverTarget,
            Mode = (double)s.Mode,
            Stages = s.Stages,
            Skipped = s.Skipped ? 1 : 0,
            PredictedCommunicateMs = s.PredictedCommunicateMs,
            WaitMs = s.WaitMs,
        };

        public Span<double> AsSpan() => System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref CompressMs, Length);

        public readonly GradientHookStats ToStats(double extraCommunicateMs) =>
            new(CompressMs, CommunicateMs + extraCommunicateMs, (long)Selected, BytesSent,
            AchievedOverTarget, (ExchangeMode)(int)Mode, (int)Stages, Skipped != 0, PredictedCommunicateMs, WaitMs);
    }

    /// <inheritdoc />
    public void SaveState(Stream stream)
    {
        using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        w.Write(_leaderHook is not null);
        w.Flush();
        _leaderHook?.SaveState(stream);
    }

    /// <inheritdoc />
    public void LoadState(Stream stream)
    {
        using var r = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        if (r.ReadBoolean() != _leaderHook is not null)
            throw new InvalidDataException("Checkpoint and worker disagree on which worker leads its host.");
        _leaderHook?.LoadState(stream);
    }

    /// <inheritdoc />
    public void Dispose() => _leaderHook?.Dispose();
}
