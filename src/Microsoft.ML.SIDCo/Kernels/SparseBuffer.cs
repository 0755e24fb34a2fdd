namespace Microsoft.ML.SIDCo.Kernels;

/// <summary>
/// A growable pair of index and value arrays that selection kernels append to. It is reused from
/// call to call, so steady-state compression allocates nothing.
/// </summary>
public class SparseBuffer
{
    private int[] _indices;
    private float[] _values;

    /// <summary>Creates a buffer with room for <paramref name="capacity"/> entries.</summary>
    public SparseBuffer(int capacity = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        _indices = capacity == 0 ? [] : new int[capacity];
        _values = capacity == 0 ? [] : new float[capacity];
    }

    /// <summary>Number of entries held.</summary>
    public int Count { get; private set; }

    /// <summary>The selected indices, ascending.</summary>
    public ReadOnlySpan<int> Indices => _indices.AsSpan(0, Count);

    /// <summary>The selected values, aligned with <see cref="Indices"/>.</summary>
    public ReadOnlySpan<float> Values => _values.AsSpan(0, Count);

    /// <summary>Writable view of the indices (for in-place filtering by compressors).</summary>
    internal Span<int> IndicesMutable => _indices.AsSpan(0, Count);

    /// <summary>Writable view of the values.</summary>
    internal Span<float> ValuesMutable => _values.AsSpan(0, Count);

    /// <summary>Forgets the entries, keeping the memory.</summary>
    public void Clear() => Count = 0;

    /// <summary>Makes sure <paramref name="extra"/> more entries fit without reallocation.</summary>
    public void Reserve(int extra)
    {
        long need = (long)Count + extra;
        if (need <= _indices.Length) return;
        if (need > Array.MaxLength) throw new InvalidOperationException("A sparse gradient cannot hold more than Array.MaxLength entries.");
        int size = (int)Math.Min(Array.MaxLength, Math.Max(need, Math.Max(16L, _indices.Length * 2L)));
        Array.Resize(ref _indices, size);
        Array.Resize(ref _values, size);
    }

    /// <summary>Appends one entry (callers keep indices ascending).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void Add(int index, float value)
    {
        int c = Count;
        var idx = _indices;
        var val = _values;
        if ((uint)c < (uint)idx.Length && (uint)c < (uint)val.Length)
        {
            idx[c] = index;
            val[c] = value;
            Count = c + 1;
            return;
        }
        AddSlow(index, value);
    }

    private void AddSlow(int index, float value)
    {
        Reserve(1);
        _indices[Count] = index;
        _values[Count] = value;
        Count++;
    }

    /// <summary>Appends a block of entries.</summary>
    public void AddRange(ReadOnlySpan<int> indices, ReadOnlySpan<float> values)
    {
        if (indices.Length != values.Length) throw new ArgumentException("Index and value spans differ in length.", nameof(values));
        Reserve(indices.Length);
        indices.CopyTo(_indices.AsSpan(Count));
        values.CopyTo(_values.AsSpan(Count));
        Count += indices.Length;
    }

    /// <summary>Keeps only the first <paramref name="count"/> entries.</summary>
    internal void Truncate(int count)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, Count);
        Count = count;
    }

    /// <summary>Sets the count after a kernel wrote directly into <see cref="GetWritableTail"/>.</summary>
    internal void SetCount(int count) => Count = count;

    /// <summary>Room for <paramref name="extra"/> entries after the current ones, for kernels that fill it directly (then
    /// <see cref="SetCount"/>).</summary>
    internal void GetWritableTail(int extra, out Span<int> indices, out Span<float> values)
    {
        Reserve(extra);
        indices = _indices.AsSpan(Count, extra);
        values = _values.AsSpan(Count, extra);
    }
}
