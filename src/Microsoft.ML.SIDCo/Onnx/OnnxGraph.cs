using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.SIDCo.Onnx;

/// <summary>
/// An ONNX graph being written: values are named, weights become initializers, and every node has one or more
/// outputs whose names the graph makes unique. The architectures' exporters (and a custom model's, see
/// <c>ModelDefinition.Custom</c>) append the nodes that compute the network's output from its input; the trainer adds
/// the task's head (softmax, arg-max, sigmoid) around them. Built on OnnxSharp's generated ONNX protobuf types.
/// </summary>
public sealed class OnnxGraph
{
    /// <summary>
    /// The ONNX operator set the export writes (17: Gemm, Conv, MaxPool, LSTM, Softmax, ArgMax, and ReduceSum, Squeeze and
    /// Unsqueeze with their axes as an input).
    /// </summary>
    public const int OperatorSet = 17;

    /// <summary>ONNX's code for int64 elements (a Cast node's <c>to</c>).</summary>
    internal const long Int64Type = (long)TensorProto.Types.DataType.Int64;

    // ONNX IR version 8 goes with operator set 17 (ONNX 1.12).
    private const long IrVersion = 8;
    private readonly GraphProto _graph = new() { Name = "sidco" };
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>Adds a float32 weight tensor (copied from a contiguous CPU tensor, e.g. a parameter) and returns its name.</summary>
    public string Weights(string name, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        using var values = tensor.detach().cpu().to_type(ScalarType.Float32).contiguous();
        return Floats(name, MemoryMarshal.Cast<byte, float>(values.bytes), values.shape);
    }

    /// <summary>Adds a float32 constant of <paramref name="shape"/> and returns its name.</summary>
    public string Floats(string name, ReadOnlySpan<float> values, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Aggregate(1L, (a, b) => a * b) != values.Length)
            throw new ArgumentException($"{values.Length} values do not fill shape [{string.Join(", ", shape)}].", nameof(values));
        return Initializer(name, TensorProto.Types.DataType.Float, MemoryMarshal.AsBytes(values), shape);
    }

    /// <summary>Adds a float64 constant of <paramref name="shape"/> and returns its name.</summary>
    public string Doubles(string name, ReadOnlySpan<double> values, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Aggregate(1L, (a, b) => a * b) != values.Length)
            throw new ArgumentException($"{values.Length} values do not fill shape [{string.Join(", ", shape)}].", nameof(values));
        return Initializer(name, TensorProto.Types.DataType.Double, MemoryMarshal.AsBytes(values), shape);
    }

    private string Initializer(string name, TensorProto.Types.DataType type, ReadOnlySpan<byte> raw, long[] shape)
    {
        var t = new TensorProto { Name = Unique(name), DataType = (int)type, RawData = ByteString.CopyFrom(raw) };
        t.Dims.AddRange(shape);
        _graph.Initializer.Add(t);
        return t.Name;
    }

    /// <summary>Adds a one-dimensional int64 constant (shapes, axes, indices) and returns its name.</summary>
    public string Int64s(string name, params long[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var t = new TensorProto { Name = Unique(name), DataType = (int)TensorProto.Types.DataType.Int64 };
        t.Int64Data.AddRange(values);
        t.Dims.Add(values.Length);
        _graph.Initializer.Add(t);
        return t.Name;
    }

    /// <summary>
    /// Adds an operator node with one output and returns the output's name. Attribute values are <see cref="long"/>
    /// (or <see cref="int"/>), <see cref="float"/>, <see cref="string"/>, or arrays of <see cref="long"/> or <see cref="int"/>.
    /// </summary>
    public string Node(string op, string[] inputs, params (string Name, object Value)[] attributes) => Node(op, inputs, 1, attributes)[0];

    /// <summary>Adds an operator node with <paramref name="outputs"/> outputs and returns their names.</summary>
    public string[] Node(string op, string[] inputs, int outputs, params (string Name, object Value)[] attributes)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(op);
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentOutOfRangeException.ThrowIfLessThan(outputs, 1);
        var node = new NodeProto { OpType = op, Name = Unique(op.ToLowerInvariant()) };
        node.Input.AddRange(inputs);
        for (int i = 0; i < outputs; i++) node.Output.Add(Unique($"{node.Name}_out{i}"));
        foreach (var (name, value) in attributes) node.Attribute.Add(Attribute(name, value));
        _graph.Node.Add(node);
        return node.Output.ToArray();
    }

    /// <summary>Adds a node whose single output gets exactly <paramref name="output"/> as its name (a graph output).</summary>
    internal string NamedNode(string output, string op, string[] inputs, params (string Name, object Value)[] attributes)
    {
        if (!_names.Add(output)) throw new InvalidOperationException($"The ONNX value name '{output}' is taken.");
        var node = new NodeProto { OpType = op, Name = Unique(op.ToLowerInvariant()) };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        foreach (var (name, value) in attributes) node.Attribute.Add(Attribute(name, value));
        _graph.Node.Add(node);
        return output;
    }

    /// <summary>Declares a graph input; a null dimension is symbolic (the batch).</summary>
    internal string Input(string name, TensorProto.Types.DataType type, params long?[] shape)
    {
        if (!_names.Add(name)) throw new InvalidOperationException($"The ONNX value name '{name}' is taken.");
        _graph.Input.Add(ValueInfo(name, type, shape));
        return name;
    }

    /// <summary>Declares a graph output; a null dimension is symbolic (the batch).</summary>
    internal void Output(string name, TensorProto.Types.DataType type, params long?[] shape)
        => _graph.Output.Add(ValueInfo(name, type, shape));

    /// <summary>The model: this graph, the operator set and who wrote it.</summary>
    internal byte[] ToModelBytes(string description)
    {
        var model = new ModelProto { IrVersion = IrVersion, ProducerName = "Microsoft.ML.SIDCo", DocString = description, Graph = _graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = OperatorSet });
        return model.ToByteArray();
    }

    private string Unique(string hint)
    {
        string name = hint;
        for (int i = 1; !_names.Add(name); i++) name = $"{hint}_{i}";
        return name;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, long?[] shape)
    {
        var dims = new TensorShapeProto();
        foreach (var d in shape)
        {
            var dimension = new TensorShapeProto.Types.Dimension();
            if (d is long size) dimension.DimValue = size;
            else dimension.DimParam = "N";
            dims.Dim.Add(dimension);
        }
        var tensor = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = dims };
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }

    private static AttributeProto Attribute(string name, object value)
    {
        var a = new AttributeProto { Name = name };
        switch (value)
        {
            case long l: a.Type = AttributeProto.Types.AttributeType.Int; a.I = l; break;
            case int i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
            case float f: a.Type = AttributeProto.Types.AttributeType.Float; a.F = f; break;
            case string s: a.Type = AttributeProto.Types.AttributeType.String; a.S = ByteString.CopyFromUtf8(s); break;
            case long[] ls: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ls); break;
            case int[] ints: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ints.Select(x => (long)x)); break;
            default:
                string type = value?.GetType().Name ?? "null";
                throw new ArgumentException($"Attribute '{name}' has a value of type {type}; use long, float, string or long[].",
                    nameof(value));
        }
        return a;
    }
}
