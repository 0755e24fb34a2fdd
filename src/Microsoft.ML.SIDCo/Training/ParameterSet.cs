using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>Where one parameter lives in the flat gradient bucket.</summary>
/// <param name="Name">The parameter's name in the module.</param>
/// <param name="Offset">First index in the bucket.</param>
/// <param name="Count">Number of entries.</param>
/// <param name="Shape">The parameter's shape.</param>
public sealed record ParameterSlice(string Name, int Offset, int Count, long[] Shape);

/// <summary>
/// The trainable parameters of a TorchSharp module seen as one flat float32 vector with a fixed
/// layout: gradients are gathered into a contiguous bucket, optimizers update the parameters'
/// native memory in place through spans (no copies), and weights are saved with names, shapes and a checksum.
/// </summary>
/// <remarks>
/// Parameters must be contiguous float32 tensors. On the CPU the spans are the parameters' own memory; on an accelerator
/// they are a host copy, which <see cref="Commit"/> writes back to the device after an update.
/// </remarks>
internal sealed class ParameterSet
{
    private const uint Magic = 0x57444953; // "SIDW"
    private readonly (string Name, Parameter Parameter)[] _parameters;
    private readonly float[]? _host; // the parameters' host copy when they live on an accelerator

    /// <summary>Collects the trainable parameters of <paramref name="module"/>.</summary>
    public ParameterSet(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        _parameters = module.named_parameters().Where(p => p.parameter.requires_grad).ToArray();
        var slices = new List<ParameterSlice>();
        long offset = 0;
        foreach (var (name, p) in _parameters)
        {
            if (p.dtype != ScalarType.Float32)
                throw new NotSupportedException($"Parameter '{name}' is {p.dtype}; only float32 parameters are supported.");
            if (!p.is_contiguous()) throw new NotSupportedException($"Parameter '{name}' is not contiguous.");
            slices.Add(new ParameterSlice(name, (int)offset, (int)p.numel(), p.shape));
            offset += p.numel();
            if (offset > Array.MaxLength)
                throw new NotSupportedException("Models with more than Array.MaxLength parameters are not supported.");
        }
        Slices = slices;
        Length = (int)offset;
        if (_parameters.Any(p => p.Parameter.device_type != DeviceType.CPU))
        {
            _host = new float[Length];
            for (int i = 0; i < _parameters.Length; i++)
            {
                using var copy = _parameters[i].Parameter.detach().cpu();
                MemoryMarshal.Cast<byte, float>(copy.bytes).CopyTo(_host.AsSpan(Slices[i].Offset, Slices[i].Count));
            }
        }
    }

    /// <summary>The layout of the flat vector.</summary>
    public IReadOnlyList<ParameterSlice> Slices { get; }

    /// <summary>Total number of trainable entries.</summary>
    public int Length { get; }

    /// <summary>A span over parameter <paramref name="index"/>'s values: its native memory on the CPU, else its host copy.</summary>
    public Span<float> Values(int index) => _host is null
        ? MemoryMarshal.Cast<byte, float>(_parameters[index].Parameter.bytes)
        : _host.AsSpan(Slices[index].Offset, Slices[index].Count);

    /// <summary>Writes the host copy back to the device after an update through <see cref="Values"/> (nothing to do on the CPU).</summary>
    public void Commit()
    {
        if (_host is null) return;
        using var noGrad = torch.no_grad();
        for (int i = 0; i < _parameters.Length; i++)
        {
            var p = _parameters[i].Parameter;
            using var source = torch.tensor(_host.AsSpan(Slices[i].Offset, Slices[i].Count).ToArray(), Slices[i].Shape);
            p.copy_(source);
        }
    }

    /// <summary>Parameter <paramref name="index"/> itself (in <see cref="Slices"/> order).</summary>
    public Parameter Parameter(int index) => _parameters[index].Parameter;

    /// <summary>Copies every parameter's gradient into <paramref name="bucket"/> (zeros for parameters without one).</summary>
    public void GatherGradients(Span<float> bucket)
    {
        if (bucket.Length != Length)
            throw new ArgumentException($"Bucket length {bucket.Length} differs from the parameter count {Length}.", nameof(bucket));
        for (int i = 0; i < _parameters.Length; i++) GatherGradient(i, bucket);
    }

    /// <summary>Copies parameter <paramref name="i"/>'s gradient into its slice of <paramref name="bucket"/> (zeros without one).</summary>
    public void GatherGradient(int i, Span<float> bucket)
    {
        {
            var slice = bucket.Slice(Slices[i].Offset, Slices[i].Count);
            // The wrapper holds a reference to the native gradient: without disposing it, each step's gradients
            // (freed by zero_grad) would stay alive until the finalizer ran, growing native memory by a model per step.
            using var grad = _parameters[i].Parameter.grad;
            if (grad is null) { slice.Clear(); return; }
            if (grad.device_type != DeviceType.CPU)
            {
                using var host = grad.cpu();
                using var dense = host.contiguous();
                MemoryMarshal.Cast<byte, float>(dense.bytes).CopyTo(slice);
            }
            else if (!grad.is_contiguous()) { using var c = grad.contiguous(); MemoryMarshal.Cast<byte, float>(c.bytes).CopyTo(slice); }
            else MemoryMarshal.Cast<byte, float>(grad.bytes).CopyTo(slice);
        }
    }

    /// <summary>Copies all parameters into <paramref name="destination"/>.</summary>
    public void CopyTo(Span<float> destination)
    {
        for (int i = 0; i < _parameters.Length; i++) Values(i).CopyTo(destination.Slice(Slices[i].Offset, Slices[i].Count));
    }

    /// <summary>Overwrites all parameters from <paramref name="source"/>.</summary>
    public void CopyFrom(ReadOnlySpan<float> source)
    {
        if (source.Length != Length)
            throw new ArgumentException($"Source length {source.Length} differs from the parameter count {Length}.", nameof(source));
        for (int i = 0; i < _parameters.Length; i++) source.Slice(Slices[i].Offset, Slices[i].Count).CopyTo(Values(i));
        Commit();
    }

    /// <summary>A 64-bit hash of every parameter's bytes: equal on two replicas iff they hold bitwise-identical weights (up to hash
    /// collisions).</summary>
    public long Fingerprint()
    {
        var hash = new XxHash64();
        for (int i = 0; i < _parameters.Length; i++) hash.Append(MemoryMarshal.AsBytes(Values(i)));
        return (long)hash.GetCurrentHashAsUInt64();
    }

    /// <summary>A hash of the layout (names and shapes), to check that two parties hold the same architecture.</summary>
    public long LayoutFingerprint() =>
        Communication.CommunicatorExtensions.Fingerprint(string.Join(";",
        Slices.Select(s => s.Name + "[" + string.Join("x", s.Shape) + "]")));

    /// <summary>Writes names, shapes and values, followed by a checksum.</summary>
    public void Save(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var body = new MemoryStream();
        using (var w = new BinaryWriter(body, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            w.Write(Slices.Count);
            for (int i = 0; i < Slices.Count; i++)
            {
                w.Write(Slices[i].Name);
                w.Write(Slices[i].Shape.Length);
                foreach (long d in Slices[i].Shape) w.Write(d);
                w.Write(MemoryMarshal.AsBytes(Values(i)));
            }
        }
        var bytes = body.GetBuffer().AsSpan(0, (int)body.Length);
        stream.Write(bytes);
        Span<byte> sum = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(sum, XxHash64.HashToUInt64(bytes));
        stream.Write(sum);
    }

    /// <summary>
    /// Reads weights written by <see cref="Save"/>. Everything (checksum, names, shapes) is verified
    /// before the first parameter is touched, so a corrupt or mismatched file changes nothing.
    /// </summary>
    public void Load(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        var all = copy.GetBuffer().AsSpan(0, (int)copy.Length);
        if (all.Length < 12) throw new InvalidDataException("The weights file is truncated.");
        var body = all[..^8];
        if (XxHash64.HashToUInt64(body) != BinaryPrimitives.ReadUInt64LittleEndian(all[^8..]))
            throw new InvalidDataException("The weights file is corrupt (checksum mismatch).");
        var values = new float[Length];
        using (var r = new BinaryReader(new MemoryStream(body.ToArray()), Encoding.UTF8))
        {
            if (r.ReadUInt32() != Magic) throw new InvalidDataException("Not a SIDCo weights file (bad magic number).");
            int count = r.ReadInt32();
            if (count != Slices.Count)
                throw new InvalidDataException($"The weights file holds {count} parameters; the model has {Slices.Count}.");
            for (int i = 0; i < count; i++)
            {
                string name = r.ReadString();
                var shape = new long[r.ReadInt32()];
                for (int d = 0; d < shape.Length; d++) shape[d] = r.ReadInt64();
                if (name != Slices[i].Name || !shape.SequenceEqual(Slices[i].Shape))
                    throw new InvalidDataException($"The weights file has parameter '{name}' [{string.Join("x", shape)}] where the model " +
                        $"has '{Slices[i].Name}' [{string.Join("x", Slices[i].Shape)}].");
                r.BaseStream.ReadExactly(MemoryMarshal.AsBytes(values.AsSpan(Slices[i].Offset, Slices[i].Count)));
            }
        }
        CopyFrom(values);
    }

    /// <summary>
    /// The number of values a weights file written by <see cref="Save"/> holds, read from its header after its checksum
    /// and every shape are checked against the file's length, so that nothing is allocated from an unchecked size.
    /// </summary>
    public static long StoredValues(ReadOnlySpan<byte> file)
    {
        if (file.Length < 12) throw new InvalidDataException("The weights file is truncated.");
        var body = file[..^8];
        if (XxHash64.HashToUInt64(body) != BinaryPrimitives.ReadUInt64LittleEndian(file[^8..]))
            throw new InvalidDataException("The weights file is corrupt (checksum mismatch).");
        using var r = new BinaryReader(new MemoryStream(body.ToArray()), Encoding.UTF8);
        if (r.ReadUInt32() != Magic) throw new InvalidDataException("Not a SIDCo weights file (bad magic number).");
        int count = r.ReadInt32();
        long total = 0;
        for (int i = 0; i < count; i++)
        {
            if (count < 0 || r.BaseStream.Position >= body.Length) throw new InvalidDataException("The weights file's header is corrupt.");
            _ = r.ReadString();
            int rank = r.ReadInt32();
            if (rank is < 0 or > MaxRank) throw new InvalidDataException($"The weights file holds a parameter of rank {rank}.");
            long elements = 1;
            for (int d = 0; d < rank; d++)
            {
                long size = r.ReadInt64();
                if (size < 0 || (elements *= size) * sizeof(float) > body.Length)
                    throw new InvalidDataException("The weights file's shapes do not fit its length.");
            }
            total += elements;
            if (total * sizeof(float) > body.Length) throw new InvalidDataException("The weights file's shapes do not fit its length.");
            r.BaseStream.Seek(elements * sizeof(float), SeekOrigin.Current);
        }
        return total;
    }

    // No TorchSharp parameter has more dimensions than this.
    private const int MaxRank = 8;
}
