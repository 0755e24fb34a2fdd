using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Microsoft.ML.SIDCo.Communication;

/// <summary>How gradient values travel between workers. Sums are always formed in single precision.</summary>
public enum WirePrecision
{
    /// <summary>IEEE single precision: exact, 4 bytes a value.</summary>
    Float32,

    /// <summary>IEEE half precision: 2 bytes a value, 11 significant bits, magnitudes up to 65504 (larger ones are refused).</summary>
    Float16,

    /// <summary>bfloat16 (a float's top half, rounded to nearest even): 2 bytes a value, 8 significant bits, a float's range.</summary>
    BFloat16,
}

/// <summary>Conversions between single precision and the 16-bit wire formats; span-based, no allocation.</summary>
internal static class WireCodec
{
    /// <summary>Bytes a value takes on the wire.</summary>
    public static int BytesPerValue(this WirePrecision precision) => precision == WirePrecision.Float32 ? 4 : 2;

    /// <summary>Writes <paramref name="source"/> in a 16-bit format, rounded to nearest even (same lengths).</summary>
    public static void Encode(ReadOnlySpan<float> source, Span<ushort> destination, WirePrecision precision)
    {
        if (destination.Length != source.Length) throw new ArgumentException("Source and destination lengths differ.", nameof(destination));
        if (precision == WirePrecision.Float16) TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<ushort, Half>(destination));
        else EncodeBFloat16(source, destination);
    }

    /// <summary>Widens 16-bit values to single precision (exact).</summary>
    public static void Decode(ReadOnlySpan<ushort> source, Span<float> destination, WirePrecision precision)
    {
        if (destination.Length != source.Length) throw new ArgumentException("Source and destination lengths differ.", nameof(destination));
        if (precision == WirePrecision.Float16) TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<ushort, Half>(source), destination);
        else DecodeBFloat16(source, destination);
    }

    // Round to nearest even on the dropped 16 bits: add 0x7FFF plus the kept part's lowest bit, then keep the top half.
    // Inputs are finite (the hooks check first); a value within half a bfloat16 step of float.MaxValue rounds to infinity.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void EncodeBFloat16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        var bits = MemoryMarshal.Cast<float, uint>(source);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var bias = Vector256.Create(0x7FFFu);
            var one = Vector256.Create(1u);
            for (; i + 2 * Vector256<uint>.Count <= bits.Length; i += 2 * Vector256<uint>.Count)
            {
                var a = Vector256.Create(bits.Slice(i, Vector256<uint>.Count));
                var b = Vector256.Create(bits.Slice(i + Vector256<uint>.Count, Vector256<uint>.Count));
                a = (a + bias + ((a >> 16) & one)) >> 16;
                b = (b + bias + ((b >> 16) & one)) >> 16;
                Vector256.Narrow(a, b).CopyTo(destination.Slice(i));
            }
        }
        for (; i < bits.Length; i++) destination[i] = (ushort)((bits[i] + 0x7FFFu + ((bits[i] >> 16) & 1u)) >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DecodeBFloat16(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        var bits = MemoryMarshal.Cast<float, uint>(destination);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector256<ushort>.Count <= source.Length; i += Vector256<ushort>.Count)
            {
                var (lower, upper) = Vector256.Widen(Vector256.Create(source.Slice(i, Vector256<ushort>.Count)));
                (lower << 16).CopyTo(bits.Slice(i));
                (upper << 16).CopyTo(bits.Slice(i + Vector256<uint>.Count));
            }
        }
        for (; i < source.Length; i++) bits[i] = (uint)source[i] << 16;
    }
}
