using System.Numerics.Tensors;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>Which optimizer updates the parameters.</summary>
public enum OptimizerKind
{
    /// <summary>Stochastic gradient descent with optional (Nesterov) momentum.</summary>
    Sgd,
    /// <summary>Adam (bias-corrected first and second moments).</summary>
    Adam,
}

/// <summary>
/// An optimizer over the flat averaged gradient, updating the parameters' memory in place. Every
/// replica applies the same update to the same weights, so replicas stay bitwise identical; the
/// state is plain float arrays, so checkpoints are exact.
/// </summary>
internal abstract class FlatOptimizer
{
    /// <summary>Applies one update with learning rate <paramref name="learningRate"/>.</summary>
    public abstract void Step(ParameterSet parameters, ReadOnlySpan<float> gradient, float learningRate);

    /// <summary>Writes the state.</summary>
    public abstract void Save(BinaryWriter writer);

    /// <summary>Reads the state written by <see cref="Save"/>.</summary>
    public abstract void Load(BinaryReader reader);

    /// <summary>Creates an optimizer.</summary>
    public static FlatOptimizer Create(OptimizerKind kind, int length, double momentum, bool nesterov, double weightDecay, double beta1,
        double beta2, double epsilon) => kind switch
        {
            OptimizerKind.Sgd => new SgdOptimizer(length, (float)momentum, nesterov, (float)weightDecay),
            OptimizerKind.Adam => new AdamOptimizer(length, (float)beta1, (float)beta2, (float)epsilon, (float)weightDecay),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown optimizer."),
        };

    private protected static void ReadArray(BinaryReader reader, float[] target, string what)
    {
        int n = reader.ReadInt32();
        if (n != target.Length) throw new InvalidDataException($"Optimizer {what} has {n} entries; the model has {target.Length}.");
        reader.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(target.AsSpan()));
    }

    private protected static void WriteArray(BinaryWriter writer, float[] source)
    {
        writer.Write(source.Length);
        writer.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(source.AsSpan()));
    }
}

/// <summary>SGD as in PyTorch: d = g + wd p; v = mu v + d; p -= lr (nesterov ? d + mu v : v).</summary>
internal sealed class SgdOptimizer(int length, float momentum, bool nesterov, float weightDecay) : FlatOptimizer
{
    private readonly float[] _velocity = new float[length];
    private readonly float[] _d = new float[length];

    /// <inheritdoc />
    public override void Step(ParameterSet parameters, ReadOnlySpan<float> gradient, float learningRate)
    {
        for (int i = 0; i < parameters.Slices.Count; i++)
        {
            var s = parameters.Slices[i];
            var p = parameters.Values(i);
            var g = gradient.Slice(s.Offset, s.Count);
            var d = _d.AsSpan(s.Offset, s.Count);
            if (weightDecay != 0) TensorPrimitives.MultiplyAdd(p, weightDecay, g, d); else g.CopyTo(d);
            if (momentum != 0)
            {
                var v = _velocity.AsSpan(s.Offset, s.Count);
                TensorPrimitives.MultiplyAdd(v, momentum, d, v);
                if (nesterov) TensorPrimitives.MultiplyAdd(v, momentum, d, d);
                else v.CopyTo(d);
            }
            TensorPrimitives.MultiplyAdd(d, -learningRate, p, p);
        }
    }

    /// <inheritdoc />
    public override void Save(BinaryWriter writer) => WriteArray(writer, _velocity);

    /// <inheritdoc />
    public override void Load(BinaryReader reader) => ReadArray(reader, _velocity, "velocity");
}

/// <summary>Adam as in PyTorch (L2 weight decay added to the gradient).</summary>
internal sealed class AdamOptimizer(int length, float beta1, float beta2, float epsilon, float weightDecay) : FlatOptimizer
{
    private readonly float[] _m = new float[length];
    private readonly float[] _v = new float[length];
    private readonly float[] _d = new float[length];
    private long _t;

    /// <inheritdoc />
    public override void Step(ParameterSet parameters, ReadOnlySpan<float> gradient, float learningRate)
    {
        _t++;
        float c1 = 1 - MathF.Pow(beta1, _t), c2 = 1 - MathF.Pow(beta2, _t);
        for (int i = 0; i < parameters.Slices.Count; i++)
        {
            var s = parameters.Slices[i];
            var p = parameters.Values(i);
            var g = gradient.Slice(s.Offset, s.Count);
            var m = _m.AsSpan(s.Offset, s.Count);
            var v = _v.AsSpan(s.Offset, s.Count);
            var d = _d.AsSpan(s.Offset, s.Count);
            for (int j = 0; j < p.Length; j++)
            {
                float gj = g[j] + weightDecay * p[j];
                m[j] = beta1 * m[j] + (1 - beta1) * gj;
                v[j] = beta2 * v[j] + (1 - beta2) * gj * gj;
                d[j] = m[j] / c1 / (MathF.Sqrt(v[j] / c2) + epsilon);
            }
            TensorPrimitives.MultiplyAdd(d, -learningRate, p, p);
        }
    }

    /// <inheritdoc />
    public override void Save(BinaryWriter writer) { writer.Write(_t); WriteArray(writer, _m); WriteArray(writer, _v); }

    /// <inheritdoc />
    public override void Load(BinaryReader reader)
    {
        long t = reader.ReadInt64();
        ReadArray(reader, _m, "first moment");
        ReadArray(reader, _v, "second moment");
        _t = t;
    }
}
