using System.Runtime.InteropServices;
using Microsoft.ML.SIDCo.Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.SIDCo.Models;

/// <summary>The built-in architectures as ONNX nodes, reading the trained weights by parameter name.</summary>
internal static class OnnxExporters
{
    public static OnnxExporter Mlp(int hiddenLayers) => (module, g, input) =>
    {
        var p = Parameters(module);
        string x = input;
        for (int i = 0; i < hiddenLayers; i++) x = g.Node("Relu", [Linear(g, p, $"fc{i}", x)]);
        return Linear(g, p, "out", x);
    };

    public static OnnxExporter ConvNet(int channels, int height, int width) => (module, g, input) =>
    {
        var p = Parameters(module);
        string x = g.Node("Reshape", [input, g.Int64s("image_shape", -1, channels, height, width)]);
        long[] window = [SIDCoModels.PoolSize, SIDCoModels.PoolSize];
        foreach (var conv in new[] { "conv1", "conv2" })
        {
            x = g.Node("Conv", [x, g.Weights($"{conv}.weight", p[$"{conv}.weight"]), g.Weights($"{conv}.bias", p[$"{conv}.bias"])],
                ("kernel_shape", new long[] { SIDCoModels.ConvKernel, SIDCoModels.ConvKernel }));
            x = g.Node("MaxPool", [g.Node("Relu", [x])], ("kernel_shape", window), ("strides", window));
        }
        // Flatten keeps row-major [channel, row, column] order, as TorchSharp's flatten does.
        x = g.Node("Flatten", [x], ("axis", 1L));
        x = g.Node("Relu", [Linear(g, p, "fc", x)]);
        return Linear(g, p, "out", x);
    };

    public static OnnxExporter Lstm(int steps, int hidden, int layers) => (module, g, input) =>
    {
        var p = Parameters(module);
        long features = p["_lstm.weight_ih_l0"].shape[1];
        // ONNX's LSTM reads [steps, batch, features] (layout 0); the module reads rows of [steps x features].
        string x = g.Node("Reshape", [input, g.Int64s("sequence_shape", -1, steps, features)]);
        x = g.Node("Transpose", [x], ("perm", new long[] { 1, 0, 2 }));
        string lastHidden = x;
        for (int l = 0; l < layers; l++)
        {
            var wih = p[$"_lstm.weight_ih_l{l}"];
            string w = g.Floats($"lstm{l}.W", OnnxGateOrder(wih), 1, 4 * hidden, wih.shape[1]);
            string r = g.Floats($"lstm{l}.R", OnnxGateOrder(p[$"_lstm.weight_hh_l{l}"]), 1, 4 * hidden, hidden);
            float[] biases = [.. OnnxGateOrder(p[$"_lstm.bias_ih_l{l}"]), .. OnnxGateOrder(p[$"_lstm.bias_hh_l{l}"])];
            string b = g.Floats($"lstm{l}.B", biases, 1, 8 * hidden);
            var outputs = g.Node("LSTM", [x, w, r, b], 2, ("hidden_size", (long)hidden));
            x = g.Node("Squeeze", [outputs[0], g.Int64s("direction_axis", 1)]); // [steps, 1, batch, hidden] -> [steps, batch, hidden]
            lastHidden = outputs[1];                                            // [1, batch, hidden]: the last step's state
        }
        string h = g.Node("Squeeze", [lastHidden, g.Int64s("direction_axis", 0)]);
        return Linear(g, p, "_out", h);
    };

    public static OnnxExporter Transformer(int steps, int vocabulary, int width, int heads, int layers) => (module, g, input) =>
    {
        var p = Parameters(module);
        long headWidth = width / heads;
        // Token ids: rounded and clamped as the module does, then used as indices.
        string ids = g.Node("Clip", [g.Node("Round", [input]), g.Floats("id_min", [0f]), g.Floats("id_max", [(float)(vocabulary - 1)])]);
        ids = g.Node("Cast", [ids], ("to", OnnxGraph.Int64Type));
        string h = g.Node("Gather", [g.Weights("_tokens.weight", p["_tokens.weight"]), ids]);
        h = g.Node("Add", [h, g.Weights("_positions", p["_positions"])]);
        string scale = g.Floats("attention_scale", [(float)(1.0 / Math.Sqrt(headWidth))]);
        for (int l = 0; l < layers; l++)
        {
            string b = $"_blocks.{l}";
            // [batch, steps, 3 x width] -> [3, batch, heads, steps, head width], split into queries, keys and values.
            string qkv = Dense(g, p, $"{b}._qkv", LayerNorm(g, p, $"{b}._norm1", h));
            qkv = g.Node("Reshape", [qkv, g.Int64s("qkv_shape", 0, 0, 3, heads, headWidth)]);
            qkv = g.Node("Transpose", [qkv], ("perm", new long[] { 2, 0, 3, 1, 4 }));
            var parts = g.Node("Split", [qkv, g.Int64s("qkv_split", 1, 1, 1)], 3, ("axis", 0L));
            var (q, k, v) = (Squeeze0(g, parts[0]), Squeeze0(g, parts[1]), Squeeze0(g, parts[2]));
            string scores = g.Node("Mul", [g.Node("MatMul", [q, g.Node("Transpose", [k], ("perm", new long[] { 0, 1, 3, 2 }))]), scale]);
            string mixed = g.Node("MatMul", [g.Node("Softmax", [scores], ("axis", -1L)), v]);
            mixed = g.Node("Transpose", [mixed], ("perm", new long[] { 0, 2, 1, 3 }));
            mixed = g.Node("Reshape", [mixed, g.Int64s("merge_shape", 0, 0, width)]);
            h = g.Node("Add", [h, Dense(g, p, $"{b}._proj", mixed)]);
            string ff = g.Node("Relu", [Dense(g, p, $"{b}._ff1", LayerNorm(g, p, $"{b}._norm2", h))]);
            h = g.Node("Add", [h, Dense(g, p, $"{b}._ff2", ff)]);
        }
        string pooled = g.Node("ReduceMean", [LayerNorm(g, p, "_norm", h)], ("axes", new long[] { 1 }), ("keepdims", 0L));
        return Linear(g, p, "_out", pooled);
    };

    // A linear layer on the last axis of a tensor of any rank: x W^T + b (MatMul broadcasts where Gemm takes two axes).
    private static string Dense(OnnxGraph g, IReadOnlyDictionary<string, Tensor> p, string layer, string x)
    {
        using var transposed = p[$"{layer}.weight"].detach().t().contiguous();
        string weight = g.Weights($"{layer}.weight_t", transposed), bias = g.Weights($"{layer}.bias", p[$"{layer}.bias"]);
        return g.Node("Add", [g.Node("MatMul", [x, weight]), bias]);
    }

    private static string LayerNorm(OnnxGraph g, IReadOnlyDictionary<string, Tensor> p, string layer, string x)
        => g.Node("LayerNormalization",
            [x, g.Weights($"{layer}.weight", p[$"{layer}.weight"]), g.Weights($"{layer}.bias", p[$"{layer}.bias"])],
            ("axis", -1L), ("epsilon", (float)SIDCoModels.LayerNormEpsilon));

    private static string Squeeze0(OnnxGraph g, string x) => g.Node("Squeeze", [x, g.Int64s("axis0", 0)]);

    // A linear layer: x W^T + b.
    private static string Linear(OnnxGraph g, IReadOnlyDictionary<string, Tensor> p, string layer, string x)
    {
        string weight = g.Weights($"{layer}.weight", p[$"{layer}.weight"]), bias = g.Weights($"{layer}.bias", p[$"{layer}.bias"]);
        return g.Node("Gemm", [x, weight, bias], ("transB", 1L));
    }

    private static Dictionary<string, Tensor> Parameters(nn.Module<Tensor, Tensor> module)
        => module.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);

    // TorchSharp (as PyTorch) stacks an LSTM's gate blocks as input, forget, cell, output; ONNX as input, output, forget, cell.
    private static float[] OnnxGateOrder(Tensor stacked)
    {
        using var values = stacked.detach().cpu().contiguous();
        var source = MemoryMarshal.Cast<byte, float>(values.bytes);
        int block = source.Length / 4;
        var result = new float[source.Length];
        ReadOnlySpan<int> order = [0, 3, 1, 2];
        for (int gate = 0; gate < 4; gate++) source.Slice(order[gate] * block, block).CopyTo(result.AsSpan(gate * block, block));
        return result;
    }
}
