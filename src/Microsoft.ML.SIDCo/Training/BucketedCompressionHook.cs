using Microsoft.ML.SIDCo.Communication;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>
/// Compression per bucket: the gradient is cut into the overlapped exchange's buckets (<see cref="BackwardOverlap.Plan"/>)
/// and each has a <see cref="CompressionHook"/> of its own (compressor, residual, exchange), so that a bucket is compressed
/// and exchanged as soon as backward completes it. SIDCo then fits each bucket's magnitudes instead of the whole model's,
/// as the paper and its reference code do; the sum of the buckets' selections targets the same density.
/// </summary>
internal sealed class BucketedCompressionHook(CompressionHookOptions options, long bucketBytes) : IBucketedGradientHook
{
    private const int StateVersion = 1;

    private readonly CompressionHookOptions _options = options ?? throw new ArgumentNullException(nameof(options));
    private (int Offset, int Count, CompressionHook Hook)[] _buckets = [];
    private readonly Dictionary<int, int> _byOffset = [];
    private double _compressMs, _communicateMs, _bytes, _predictedMs, _waitMs, _weightedRatio;
    private long _selected, _entries;
    private int _stages;
    private bool _skipped, _sparse;

    /// <summary>The buckets' (offset, count) in exchange order (after <see cref="Initialize"/>).</summary>
    public IReadOnlyList<(int Offset, int Count)> Buckets => [.. _buckets.Select(b => (b.Offset, b.Count))];

    /// <inheritdoc />
    public void Initialize(GradientHookContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var plan = BackwardOverlap.Plan(context.Parameters, bucketBytes);
        var buckets = new List<(int, int, CompressionHook)>();
        try
        {
            foreach (var (first, last, offset, count) in plan)
            {
                var hook = new CompressionHook(_options);
                buckets.Add((offset, count, hook));
                var slices = Enumerable.Range(first, last - first + 1).Select(i => context.Parameters[i])
                    .Select(s => s with { Offset = s.Offset - offset }).ToList();
                hook.Initialize(new GradientHookContext(context.Communicator, count, slices));
            }
        }
        catch
        {
            foreach (var (_, _, hook) in buckets) hook.Dispose();
            throw;
        }
        _buckets = [.. buckets];
        for (int b = 0; b < _buckets.Length; b++) _byOffset[_buckets[b].Offset] = b;
    }

    /// <inheritdoc />
    public GradientHookStats Reduce(Span<float> gradient, long step)
    {
        foreach (var (offset, count, hook) in _buckets) Add(hook.Reduce(gradient.Slice(offset, count), step), count);
        return CompleteStep(step);
    }

    /// <inheritdoc />
    public void ReduceBucket(Memory<float> values, int offset, long step)
    {
        var (_, count, hook) = _buckets[_byOffset[offset]];
        Add(hook.Reduce(values.Span, step), count);
    }

    private void Add(GradientHookStats s, int count)
    {
        _compressMs += s.CompressMs;
        _communicateMs += s.CommunicateMs;
        _bytes += s.BytesSent;
        _predictedMs += s.PredictedCommunicateMs;
        _waitMs += s.WaitMs;
        _selected += s.Selected;
        _weightedRatio += s.AchievedOverTarget * count;
        _entries += count;
        _stages = Math.Max(_stages, s.Stages);
        _skipped |= s.Skipped;
        _sparse |= s.Mode == ExchangeMode.Sparse;
    }

    /// <inheritdoc />
    public GradientHookStats CompleteStep(long step)
    {
        var stats = new GradientHookStats(_compressMs, _communicateMs, _selected, _bytes, _entries == 0 ? 1 : _weightedRatio / _entries,
            _sparse ? ExchangeMode.Sparse : ExchangeMode.Dense, Math.Max(1, _stages), _skipped, _predictedMs, _waitMs);
        _compressMs = _communicateMs = _bytes = _predictedMs = _waitMs = _weightedRatio = 0;
        _selected = _entries = 0;
        _stages = 0;
        _skipped = _sparse = false;
        return stats;
    }

    /// <inheritdoc />
    public void SaveState(Stream stream)
    {
        using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        w.Write(StateVersion);
        w.Write(_buckets.Length);
        foreach (var (_, count, hook) in _buckets)
        {
            using var state = new MemoryStream();
            hook.SaveState(state);
            w.Write(count);
            w.Write(state.Length);
            w.Write(state.GetBuffer(), 0, (int)state.Length);
        }
    }

    /// <inheritdoc />
    public void LoadState(Stream stream)
    {
        using var r = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        int version = r.ReadInt32(), buckets = r.ReadInt32();
        if (version != StateVersion || buckets != _buckets.Length)
            throw new InvalidDataException($"Per-bucket compression state (version {version}, {buckets} buckets) does not fit this hook "
                + $"(version {StateVersion}, {_buckets.Length} buckets).");
        var states = new byte[buckets][];
        for (int b = 0; b < buckets; b++)
        {
            int count = r.ReadInt32();
            long length = r.ReadInt64();
            if (count != _buckets[b].Count || length < 0 || length > stream.Length)
                throw new InvalidDataException($"Bucket {b} of the saved state holds {count} entries; this hook's holds " +
                    $"{_buckets[b].Count}.");
            states[b] = r.ReadBytes((int)length);
        }
        for (int b = 0; b < buckets; b++) _buckets[b].Hook.LoadState(new MemoryStream(states[b]));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var (_, _, hook) in _buckets) hook.Dispose();
    }
}
