namespace Microsoft.ML.SIDCo.Communication;

/// <summary>
/// A group of in-process workers (threads, e.g. one per device) that talk through shared memory.
/// Create the group once, then give each worker thread its own <see cref="InProcessCommunicator"/>.
/// </summary>
/// <remarks>
/// Each collective publishes every worker's buffer, meets at a barrier, lets every worker read what
/// it needs, and meets again before buffers may be reused. Reductions add in rank order, so every
/// worker gets bitwise the same result. If one worker fails, <see cref="Abort"/> releases the others
/// with <see cref="WorkerFailedException"/> instead of leaving them blocked.
/// </remarks>
public sealed class InProcessGroup : IDisposable
{
    private readonly Barrier _barrier;
    private readonly CancellationTokenSource _abort = new();
    internal readonly nint[] Pointers;
    internal readonly int[] Lengths;
    private byte[] _scratch = [];
    private volatile Exception? _failure;

    /// <summary>Creates a group of <paramref name="size"/> workers.</summary>
    public InProcessGroup(int size)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        Size = size;
        _barrier = new Barrier(size);
        Pointers = new nint[size];
        Lengths = new int[size];
        Communicators = Enumerable.Range(0, size).Select(r => new InProcessCommunicator(this, r)).ToArray();
    }

    /// <summary>Number of workers.</summary>
    public int Size { get; }

    /// <summary>One communicator per rank.</summary>
    public IReadOnlyList<InProcessCommunicator> Communicators { get; }

    /// <summary>Releases every worker blocked in a collective: they throw <see cref="WorkerFailedException"/>.</summary>
    public void Abort(Exception reason)
    {
        _failure ??= reason;
        _abort.Cancel();
    }

    /// <summary>Shared reduction buffer; grown by rank 0 before the collective's first meeting.</summary>
    internal void EnsureScratch(int bytes) { if (_scratch.Length < bytes) _scratch = new byte[bytes]; }

    internal Span<T> Scratch<T>(int length)
        where T : unmanaged => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(_scratch.AsSpan()).Slice(0, length);

    internal void Meet()
    {
        try { _barrier.SignalAndWait(_abort.Token); }
        catch (OperationCanceledException) { throw new WorkerFailedException(_failure); }
    }

    /// <summary>Runs <paramref name="work"/> on every worker, one thread each, and waits; the first failure aborts the others and is
    /// rethrown.</summary>
    public void Run(Action<InProcessCommunicator> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var errors = new Exception?[Size];
        var threads = Communicators.Select((c, r) => new Thread(() =>
        {
            try { work(c); }
            catch (Exception e) { errors[r] = e; Abort(e); }
        }, maxStackSize: 16 << 20)
        { Name = $"sidco-worker-{r}", IsBackground = true }).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        var first = errors.FirstOrDefault(e => e is not null and not WorkerFailedException) ?? errors.FirstOrDefault(e => e is not null);
        if (first is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
    }

    /// <summary>Releases the barrier.</summary>
    public void Dispose() { _barrier.Dispose(); _abort.Dispose(); }
}

/// <summary>Thrown in a worker whose peer failed while they were in a collective.</summary>
public sealed class WorkerFailedException(Exception? cause)
    : Exception("Another worker failed during a collective operation: " + (cause?.Message ?? "unknown reason"), cause);

/// <summary><see cref="ICommunicator"/> for one worker thread of an <see cref="InProcessGroup"/>.</summary>
public sealed unsafe class InProcessCommunicator : ICommunicator
{
    private readonly InProcessGroup _group;

    internal InProcessCommunicator(InProcessGroup group, int rank) { _group = group; Rank = rank; }

    /// <summary>Creates a single-worker communicator (every collective is a copy).</summary>
    public static InProcessCommunicator CreateSingle() => new InProcessGroup(1).Communicators[0];

    /// <inheritdoc />
    public int Rank { get; }

    /// <inheritdoc />
    public int Size => _group.Size;

    /// <inheritdoc />
    public string Transport => "inprocess";

    /// <inheritdoc />
    public void Barrier() { if (Size > 1) _group.Meet(); }

    /// <inheritdoc />
    public void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfNegative(root);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(root, Size);
        if (Size == 1) return;
        fixed (T* p = buffer)
        {
            Publish(p, buffer.Length);
            var src = Slot<T>(root);
            if (src.Length != buffer.Length) Fail($"Broadcast lengths differ: root {root} has {src.Length}, rank {Rank} has " +
                $"{buffer.Length}.");
            if (Rank != root) src.CopyTo(buffer);
            _group.Meet();
        }
    }

    /// <inheritdoc />
    public void AllReduceSum<T>(Span<T> buffer) where T : unmanaged
    {
        if (Size == 1) return;
        int n = buffer.Length;
        fixed (T* p = buffer)
        {
            if (Rank == 0) _group.EnsureScratch(checked(n * sizeof(T)));
            Publish(p, n);
            for (int r = 0; r < Size; r++)
                if (_group.Lengths[r] != n) Fail($"AllReduce lengths differ: rank {r} has {_group.Lengths[r]}, rank {Rank} has {n}.");
            // Reduce-scatter then all-gather through the shared scratch: each worker sums its own slice
            // over all ranks in rank order (so every worker ends with bitwise the same sums).
            int lo = (int)((long)n * Rank / Size), hi = (int)((long)n * (Rank + 1) / Size);
            var slice = _group.Scratch<T>(n)[lo..hi];
            Slot<T>(0)[lo..hi].CopyTo(slice);
            for (int r = 1; r < Size; r++) Add(slice, Slot<T>(r)[lo..hi]);
            _group.Meet();
            _group.Scratch<T>(n).CopyTo(buffer);
            _group.Meet();
        }
    }

    /// <inheritdoc />
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all) where T : unmanaged
    {
        if ((long)mine.Length * Size != all.Length)
            throw new ArgumentException($"AllGather needs {mine.Length} x {Size} elements of output, got {all.Length}.", nameof(all));
        fixed (T* p = mine)
        {
            Publish(p, mine.Length);
            for (int r = 0; r < Size; r++)
            {
                var src = Slot<T>(r);
                if (src.Length != mine.Length) Fail($"AllGather block sizes differ: rank {r} has {src.Length}, rank {Rank} has " +
                    $"{mine.Length}.");
                src.CopyTo(all.Slice(r * mine.Length, mine.Length));
            }
            if (Size > 1) _group.Meet();
        }
    }

    /// <inheritdoc />
    public void AllToAll<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged
    {
        int block = CommunicatorExtensions.AllToAllBlock(send.Length, receive.Length, Size);
        fixed (T* p = send)
        {
            Publish(p, send.Length);
            for (int r = 0; r < Size; r++)
            {
                var src = Slot<T>(r);
                if (src.Length != send.Length) Fail($"AllToAll sizes differ: rank {r} sends {src.Length}, rank {Rank} {send.Length}.");
                src.Slice(Rank * block, block).CopyTo(receive.Slice(r * block, block));
            }
            if (Size > 1) _group.Meet();
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
        var displs = CommunicatorExtensions.Displacements(counts);
        if ((long)displs[^1] + counts[^1] > all.Length) throw new ArgumentException("AllGatherV output is too small.", nameof(all));
        fixed (T* p = mine)
        {
            Publish(p, mine.Length);
            for (int r = 0; r < Size; r++)
            {
                var src = Slot<T>(r);
                if (src.Length != counts[r]) Fail($"AllGatherV: rank {r} contributes {src.Length} elements but counts say {counts[r]}.");
                src.CopyTo(all.Slice(displs[r], counts[r]));
            }
            if (Size > 1) _group.Meet();
        }
    }

    private void Publish<T>(T* p, int length) where T : unmanaged
    {
        _group.Pointers[Rank] = (nint)p;
        _group.Lengths[Rank] = length;
        if (Size > 1) _group.Meet();
    }

    private ReadOnlySpan<T> Slot<T>(int rank) where T : unmanaged => new((void*)_group.Pointers[rank], _group.Lengths[rank]);

    private void Fail(string message)
    {
        // Every worker sees the same published lengths and so fails the same way; meet once more so
        // nobody is left waiting for a worker that has already thrown.
        var e = new RankMismatchException(message);
        if (Size > 1) _group.Meet();
        throw e;
    }

    private static void Add<T>(Span<T> acc, ReadOnlySpan<T> x) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) System.Numerics.Tensors.TensorPrimitives.Add(Cast<T, float>(acc), CastRo<T, float>(x),
            Cast<T, float>(acc));
        else if (typeof(T) == typeof(double)) System.Numerics.Tensors.TensorPrimitives.Add(Cast<T, double>(acc), CastRo<T, double>(x),
            Cast<T, double>(acc));
        else if (typeof(T) == typeof(int)) System.Numerics.Tensors.TensorPrimitives.Add(Cast<T, int>(acc), CastRo<T, int>(x),
            Cast<T, int>(acc));
        else if (typeof(T) == typeof(long)) System.Numerics.Tensors.TensorPrimitives.Add(Cast<T, long>(acc), CastRo<T, long>(x),
            Cast<T, long>(acc));
        else throw new NotSupportedException($"AllReduceSum supports float, double, int and long, not {typeof(T).Name}.");
    }

    private static Span<TTo> Cast<TFrom, TTo>(Span<TFrom> s) where TFrom : unmanaged
        where TTo : unmanaged => System.Runtime.InteropServices.MemoryMarshal.Cast<TFrom, TTo>(s);
    private static ReadOnlySpan<TTo> CastRo<TFrom, TTo>(ReadOnlySpan<TFrom> s) where TFrom : unmanaged
        where TTo : unmanaged => System.Runtime.InteropServices.MemoryMarshal.Cast<TFrom, TTo>(s);

    /// <summary>Nothing to release per worker; the group owns the shared state.</summary>
    public void Dispose() { }
}
