using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>
/// Float tensors whose memory libtorch allocated (64-byte aligned). Inputs must not be made with
/// <c>torch.tensor(float[])</c>: its copy lands wherever the allocator puts it, and MKL's matrix products choose their
/// code path by alignment, so the same batch gave results differing in the last bits from one Fit to the next.
/// </summary>
internal static class AlignedTensors
{
    /// <summary>A new aligned tensor of <paramref name="shape"/> holding <paramref name="values"/>.</summary>
    public static Tensor From(ReadOnlySpan<float> values, params long[] shape)
    {
        var tensor = torch.empty(shape, ScalarType.Float32);
        values.CopyTo(Floats(tensor));
        return tensor;
    }

    /// <summary>The memory of a contiguous float32 CPU tensor.</summary>
    public static Span<float> Floats(Tensor tensor) => MemoryMarshal.Cast<byte, float>(tensor.bytes);
}
