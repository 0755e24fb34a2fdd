using System.Globalization;
using Microsoft.ML.SIDCo.Onnx;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Microsoft.ML.SIDCo.Models;

/// <summary>
/// Appends to <paramref name="graph"/> the ONNX nodes that compute <paramref name="module"/>'s output [batch, outputs] from
/// the float32 value named <paramref name="input"/> [batch, inputs], and returns the output value's name. It reads the
/// trained weights from the module (<see cref="OnnxGraph.Weights"/>).
/// </summary>
/// <param name="module">The trained module, built by the definition's factory.</param>
/// <param name="graph">The graph being written.</param>
/// <param name="input">The name of the input value.</param>
public delegate string OnnxExporter(Module<Tensor, Tensor> module, OnnxGraph graph, string input);

/// <summary>
/// What to train: a named TorchSharp architecture that maps a flat feature vector [batch, inputs] to
/// [batch, outputs]. Built-in definitions carry a descriptor so a saved model can be rebuilt in a new
/// process; custom ones are rebuilt by passing the same factory when loading.
/// </summary>
public sealed class ModelDefinition
{
    private readonly Func<int, int, Module<Tensor, Tensor>> _factory;

    private ModelDefinition(string descriptor, bool builtIn, Func<int, int, Module<Tensor, Tensor>> factory, OnnxExporter? onnx)
    {
        Descriptor = descriptor;
        IsBuiltIn = builtIn;
        _factory = factory;
        OnnxExport = onnx;
    }

    /// <summary>
    /// Writes the architecture as ONNX nodes, for <c>mlContext.Model.Save</c> and <c>SIDCoTransformer.ExportOnnx</c>; every
    /// built-in architecture has one, a custom one when given to <see cref="Custom"/>.
    /// </summary>
    public OnnxExporter? OnnxExport { get; }

    /// <summary>A text that names the architecture and its settings, e.g. <c>convnet:height=28,width=28,...</c>.</summary>
    public string Descriptor { get; }

    /// <summary>The part of <see cref="Descriptor"/> before the colon.</summary>
    public string Name => Descriptor.Split(':')[0];

    /// <summary>True for the architectures in <see cref="SIDCoModels"/> (rebuildable from the descriptor alone).</summary>
    public bool IsBuiltIn { get; }

    /// <summary>Builds a fresh module for <paramref name="inputs"/> features and <paramref name="outputs"/> outputs.</summary>
    public Module<Tensor, Tensor> Build(int inputs, int outputs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(inputs, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outputs, 1);
        return _factory(inputs, outputs);
    }

    /// <summary>
    /// A user-supplied architecture. <paramref name="factory"/> gets (inputs, outputs) and must return a module taking
    /// [batch, inputs]. <paramref name="onnx"/> writes it as ONNX nodes; without one the model trains and scores, but
    /// <c>mlContext.Model.Save</c> and the ONNX export say that the architecture has no exporter.
    /// </summary>
    public static ModelDefinition Custom(string name, Func<int, int, Module<Tensor, Tensor>> factory, OnnxExporter? onnx = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(factory);
        if (name.Contains(':')) throw new ArgumentException("A custom model name must not contain ':'.", nameof(name));
        return new ModelDefinition(name, builtIn: false, factory, onnx);
    }

    internal static ModelDefinition BuiltIn(string name, IReadOnlyList<(string Key, int Value)> settings,
        Func<int, int, Module<Tensor, Tensor>> factory, OnnxExporter onnx)
        => new(name + ":" + string.Join(",", settings.Select(s => $"{s.Key}={s.Value.ToString(CultureInfo.InvariantCulture)}")),
            builtIn: true, factory, onnx);

    /// <summary>Rebuilds a built-in definition from its <see cref="Descriptor"/>.</summary>
    public static ModelDefinition FromDescriptor(string descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        var parts = descriptor.Split(':', 2);
        var s = (parts.Length > 1 ? parts[1] : "").Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(kv => kv.Split('=')).ToDictionary(kv => kv[0], kv => int.Parse(kv[1], CultureInfo.InvariantCulture));
        int Get(string k) => s.TryGetValue(k, out int v) ? v : throw new FormatException($"Model descriptor '{descriptor}' lacks '{k}'.");
        return parts[0] switch
        {
            "mlp" => SIDCoModels.Mlp(Enumerable.Range(0, Get("layers")).Select(i => Get($"h{i}")).ToArray()),
            "convnet" => SIDCoModels.ConvNet(Get("height"), Get("width"), Get("channels"), Get("conv1"), Get("conv2"), Get("hidden")),
            "lstm" => SIDCoModels.Lstm(Get("steps"), Get("hidden"), Get("layers")),
            _ => throw new FormatException($"'{parts[0]}' is not a built-in model; pass the custom model definition when loading."),
        };
    }

    /// <inheritdoc />
    public override string ToString() => Descriptor;
}

/// <summary>Ready-made architectures. None uses batch normalisation or dropout, so replicas stay identical without syncing
/// buffers.</summary>
public static class SIDCoModels
{
    /// <summary>The ConvNet's convolution kernel side and its max-pooling window (and stride).</summary>
    internal const int ConvKernel = 5, PoolSize = 2;

    /// <summary>A multilayer perceptron with ReLU between the given hidden layer widths (e.g. <c>Mlp(2048, 2048)</c>: a wide model with
    /// millions of parameters).</summary>
    public static ModelDefinition Mlp(params int[] hidden)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        if (hidden.Any(h => h < 1)) throw new ArgumentOutOfRangeException(nameof(hidden), "Hidden layer widths must be positive.");
        var settings = new List<(string, int)> { ("layers", hidden.Length) };
        settings.AddRange(hidden.Select((h, i) => ($"h{i}", h)));
        return ModelDefinition.BuiltIn("mlp", settings, (inputs, outputs) =>
        {
            var layers = new List<(string, Module<Tensor, Tensor>)>();
            int width = inputs;
            for (int i = 0; i < hidden.Length; i++)
            {
                layers.Add(($"fc{i}", nn.Linear(width, hidden[i])));
                layers.Add(($"relu{i}", nn.ReLU()));
                width = hidden[i];
            }
            layers.Add(("out", nn.Linear(width, outputs)));
            return nn.Sequential(layers);
        }, OnnxExporters.Mlp(hidden.Length));
    }

    /// <summary>
    /// A small convolutional network for images given as flat [channels x height x width] vectors:
    /// two 5x5 convolution + ReLU + 2x2 max-pool blocks, a hidden dense layer, and the output layer.
    /// </summary>
    public static ModelDefinition ConvNet(int height = 28, int width = 28, int channels = 1, int conv1 = 16, int conv2 = 32,
        int hidden = 128)
    {
        foreach (var (name, v) in new[] { (nameof(height), height), (nameof(width), width), (nameof(channels), channels),
            (nameof(conv1), conv1), (nameof(conv2), conv2), (nameof(hidden), hidden) })
            if (v < 1) throw new ArgumentOutOfRangeException(name, v, "Must be positive.");
        int shrink = ConvKernel - 1, h2 = ((height - shrink) / PoolSize - shrink) / PoolSize,
            w2 = ((width - shrink) / PoolSize - shrink) / PoolSize;
        if (h2 < 1 || w2 < 1) throw new ArgumentOutOfRangeException(nameof(height), "Images must be at least 16x16 for the ConvNet.");
        return ModelDefinition.BuiltIn("convnet",
            [("height", height), ("width", width), ("channels", channels), ("conv1", conv1), ("conv2", conv2), ("hidden", hidden)],
            (inputs, outputs) =>
            {
                if (inputs != channels * height * width)
                    throw new ArgumentException($"The ConvNet expects {channels}x{height}x{width} = {channels * height * width} features " +
                        $"per example, the data has {inputs}.");
                return nn.Sequential(
                    ("image", nn.Unflatten(1, [channels, height, width])),
                    ("conv1", nn.Conv2d(channels, conv1, ConvKernel)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(PoolSize)),
                    ("conv2", nn.Conv2d(conv1, conv2, ConvKernel)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(PoolSize)),
                    ("flatten", nn.Flatten()),
                    ("fc", nn.Linear(conv2 * h2 * w2, hidden)), ("relu3", nn.ReLU()),
                    ("out", nn.Linear(hidden, outputs)));
            }, OnnxExporters.ConvNet(channels, height, width));
    }

    /// <summary>An LSTM classifier for sequences given as flat [steps x features] vectors: the last step's hidden state feeds a linear
    /// output layer.</summary>
    public static ModelDefinition Lstm(int steps, int hidden = 64, int layers = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(hidden, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        return ModelDefinition.BuiltIn("lstm", [("steps", steps), ("hidden", hidden), ("layers", layers)], (inputs, outputs) =>
        {
            if (inputs % steps != 0)
                throw new ArgumentException($"The LSTM expects a multiple of {steps} features (steps x features per step), the data has " +
                $"{inputs}.");
            return new LstmClassifier(steps, inputs / steps, hidden, layers, outputs);
        }, OnnxExporters.Lstm(steps, hidden, layers));
    }

    private sealed class LstmClassifier : Module<Tensor, Tensor>
    {
        private readonly LSTM _lstm;
        private readonly Linear _out;
        private readonly long _steps, _features;

        public LstmClassifier(int steps, int features, int hidden, int layers, int outputs) : base("lstm_classifier")
        {
            _steps = steps; _features = features;
            _lstm = nn.LSTM(features, hidden, numLayers: layers, batchFirst: true);
            _out = nn.Linear(hidden, outputs);
            RegisterComponents();
        }

        public override Tensor forward(Tensor input)
        {
            using var sequence = input.reshape(input.shape[0], _steps, _features);
            var (output, h, c) = _lstm.forward(sequence);
            h.Dispose(); c.Dispose();
            using (output)
            using (var last = output.select(1, -1))
                return _out.forward(last);
        }
    }
}
