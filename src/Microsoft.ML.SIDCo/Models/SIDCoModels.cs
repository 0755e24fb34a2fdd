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
            "transformer" => SIDCoModels.Transformer(Get("steps"), Get("vocabulary"), Get("width"), Get("heads"), Get("layers"),
                Get("feedforward")),
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

    /// <summary>
    /// A Transformer encoder for token sequences given as [steps] token ids (as Single features, e.g. from ML.NET's
    /// <c>MapValueToKey</c> or a tokenizer): token and learned position embeddings, <paramref name="layers"/> pre-norm
    /// encoder blocks (multi-head self-attention and a ReLU feed-forward layer, each with a residual connection), and a
    /// linear output layer on the mean of the final states. Ids outside [0, <paramref name="vocabulary"/>) are clamped.
    /// </summary>
    /// <param name="steps">Tokens per example (the feature vector's length).</param>
    /// <param name="vocabulary">Number of token ids.</param>
    /// <param name="width">The model width (embedding size); a multiple of <paramref name="heads"/>.</param>
    /// <param name="heads">Attention heads.</param>
    /// <param name="layers">Encoder blocks.</param>
    /// <param name="feedForward">Width of each block's feed-forward layer; 0 for 4 x <paramref name="width"/>.</param>
    public static ModelDefinition Transformer(int steps, int vocabulary, int width = 64, int heads = 4, int layers = 2,
        int feedForward = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabulary, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(heads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(feedForward);
        if (width % heads != 0)
            throw new ArgumentOutOfRangeException(nameof(width), width, $"The width must be a multiple of {heads} heads.");
        int ff = feedForward > 0 ? feedForward : FeedForwardFactor * width;
        return ModelDefinition.BuiltIn("transformer",
            [("steps", steps), ("vocabulary", vocabulary), ("width", width), ("heads", heads), ("layers", layers), ("feedforward", ff)],
            (inputs, outputs) =>
            {
                if (inputs != steps)
                {
                    throw new ArgumentException(
                        $"The Transformer expects {steps} token ids per example (one per step), the data has {inputs} features.");
                }
                return new TransformerClassifier(steps, vocabulary, width, heads, layers, ff, outputs);
            }, OnnxExporters.Transformer(steps, vocabulary, width, heads, layers));
    }

    /// <summary>The feed-forward width of a Transformer block, as a multiple of the model width, unless given.</summary>
    internal const int FeedForwardFactor = 4;

    /// <summary>The epsilon of the Transformer's layer normalisations (TorchSharp's default).</summary>
    internal const double LayerNormEpsilon = 1e-5;

    private sealed class TransformerClassifier : Module<Tensor, Tensor>
    {
        private readonly Embedding _tokens;
        private readonly Parameter _positions;
        private readonly ModuleList<EncoderBlock> _blocks;
        private readonly LayerNorm _norm;
        private readonly Linear _out;
        private readonly int _vocabulary;

        public TransformerClassifier(int steps, int vocabulary, int width, int heads, int layers, int feedForward, int outputs)
            : base("transformer_classifier")
        {
            _vocabulary = vocabulary;
            _tokens = nn.Embedding(vocabulary, width);
            _positions = new Parameter(torch.randn(steps, width) * PositionScale);
            _blocks = new ModuleList<EncoderBlock>(Enumerable.Range(0, layers).Select(_ => new EncoderBlock(width, heads, feedForward))
                .ToArray());
            _norm = nn.LayerNorm(width, LayerNormEpsilon);
            _out = nn.Linear(width, outputs);
            RegisterComponents();
        }

        // Learned position embeddings start small beside the token embeddings (unit normal), as BERT's do.
        private const float PositionScale = 0.02f;

        public override Tensor forward(Tensor input)
        {
            using var scope = torch.NewDisposeScope();
            var ids = input.round().clamp(0, _vocabulary - 1).to_type(ScalarType.Int64);
            var h = _tokens.call(ids) + _positions;
            foreach (var block in _blocks) h = block.call(h);
            return _out.call(_norm.call(h).mean([1])).MoveToOuterDisposeScope();
        }
    }

    // One pre-norm encoder block: h + attention(norm1(h)), then h + feedForward(norm2(h)).
    private sealed class EncoderBlock : Module<Tensor, Tensor>
    {
        private readonly LayerNorm _norm1, _norm2;
        private readonly Linear _qkv, _proj, _ff1, _ff2;
        private readonly int _heads;

        public EncoderBlock(int width, int heads, int feedForward) : base("encoder_block")
        {
            _heads = heads;
            _norm1 = nn.LayerNorm(width, LayerNormEpsilon);
            _qkv = nn.Linear(width, 3 * width);
            _proj = nn.Linear(width, width);
            _norm2 = nn.LayerNorm(width, LayerNormEpsilon);
            _ff1 = nn.Linear(width, feedForward);
            _ff2 = nn.Linear(feedForward, width);
            RegisterComponents();
        }

        public override Tensor forward(Tensor h)
        {
            using var scope = torch.NewDisposeScope();
            long batch = h.shape[0], steps = h.shape[1], width = h.shape[2], headWidth = width / _heads;
            // [batch, steps, 3 x width] -> [3, batch, heads, steps, head width]: queries, keys and values per head.
            var qkv = _qkv.call(_norm1.call(h)).reshape(batch, steps, 3, _heads, headWidth).permute(2, 0, 3, 1, 4);
            var (q, k, v) = (qkv[0], qkv[1], qkv[2]);
            var attention = (q.matmul(k.transpose(-2, -1)) * (1.0 / Math.Sqrt(headWidth))).softmax(-1);
            var mixed = attention.matmul(v).transpose(1, 2).reshape(batch, steps, width);
            var x = h + _proj.call(mixed);
            return (x + _ff2.call(_ff1.call(_norm2.call(x)).relu())).MoveToOuterDisposeScope();
        }
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
                return _out.call(last);
        }
    }
}
