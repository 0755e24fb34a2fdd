using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// Residual memory for one gradient buffer: what compression did not send is added to the next
/// gradient, so nothing is lost, only delayed. acc = g + residual; send acc[selected]; residual = acc
/// with the sent entries zeroed.
/// </summary>
/// <remarks>
/// The accumulation runs in place, fused with the statistics pass (one read of the gradient, one read
/// and one write of the residual: the least memory traffic error feedback can have). Entries whose
/// sum is not finite are never stored, so a step rejected for NaN/Inf loses nothing: the finite part
/// of its gradient stays in the residual, to be sent later like any other residual, and the residual
/// keeps its previous value at the offending entries.
/// </remarks>
public sealed class ErrorFeedback
{
    private const uint Magic = 0x45444953; // "SIDE"
    private float[] _residual;

    /// <summary>Creates a zero residual for a buffer of <paramref name="length"/> entries.</summary>
    public ErrorFeedback(int length, string name = "gradient")
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        _residual = new float[length];
        Name = name;
    }

    /// <summary>Name used in error messages.</summary>
    public string Name { get; }

    /// <summary>Number of entries.</summary>
    public int Length => _residual.Length;

    /// <summary>The current residual.</summary>
    public ReadOnlySpan<float> Residual => _residual;

    /// <summary>The residual, writable: compressors accumulate into it and zero what they send.</summary>
    internal Span<float> Accumulator => _residual;

    /// <summary>Zeroes the residual.</summary>
    public void Reset() => Array.Clear(_residual);

    /// <summary>Sets the residual from <paramref name="values"/>.</summary>
    public void Restore(ReadOnlySpan<float> values)
    {
        if (values.Length != Length)
            throw new ArgumentException($"Residual length {values.Length} differs from buffer '{Name}' length {Length}.", nameof(values));
        values.CopyTo(_residual);
    }

    /// <summary>Writes the residual with a header and checksum.</summary>
    public void Save(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var bytes = MemoryMarshal.AsBytes(_residual.AsSpan());
        Span<byte> header = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(header[4..], Length);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], XxHash64.HashToUInt64(bytes));
        stream.Write(header);
        stream.Write(bytes);
    }

    /// <summary>Reads a residual written by <see cref="Save"/>; on any mismatch throws and leaves the residual unchanged.</summary>
    public void Load(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Span<byte> header = stackalloc byte[16];
        stream.ReadExactly(header);
        if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Magic)
            throw new InvalidDataException($"Not an error-feedback residual for buffer '{Name}' (bad magic number).");
        int length = BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
        if (length != Length)
            throw new InvalidDataException($"Residual for buffer '{Name}' has {length} entries; this buffer has {Length}.");
        var data = new float[length];
        stream.ReadExactly(MemoryMarshal.AsBytes(data.AsSpan()));
        if (XxHash64.HashToUInt64(MemoryMarshal.AsBytes(data.AsSpan())) != BinaryPrimitives.ReadUInt64LittleEndian(header[8..]))
            throw new InvalidDataException($"Residual for buffer '{Name}' is corrupt (checksum mismatch).");
        _residual = data;
    }
}
