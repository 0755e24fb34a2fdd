using System.Globalization;
using System.IO.Compression;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.SIDCo;

/// <summary>
/// The model a <see cref="SIDCoTrainer"/> produces: scores an <see cref="IDataView"/> with the trained
/// TorchSharp module. Multiclass: <c>Score</c> (class probabilities) and <c>PredictedLabel</c> (a key with
/// the training label's key values); regression: <c>Score</c>. So <c>mlContext.MulticlassClassification.Evaluate</c>,
/// <c>mlContext.Regression.Evaluate</c> and prediction engines work on it.
/// </summary>
/// <remarks>
/// ML.NET's <c>mlContext.Model.Save</c> can only persist transformers registered inside ML.NET's own
/// assemblies, so it cannot carry the torch weights: use <see cref="Save(string)"/> and
/// <c>mlContext.Extensions.LoadSIDCoModel(path)</c> (see docs/persistence.md).
/// </remarks>
public sealed class SIDCoTransformer : ITransformer, IDisposable
{
    private const int Format = 1;
    private readonly MLContext _ml;
    private readonly nn.Module<Tensor, Tensor> _module;
    private readonly object _gate = new();
    private readonly KeyValues? _keyValues;

    /// <summary>Where and how the model was trained.</summary>
    /// <param name="Compressor">Compressor name.</param>
    /// <param name="Density">Target density.</param>
    /// <param name="Workers">Number of workers.</param>
    /// <param name="Transport">"mpi" or "inprocess".</param>
    public sealed record TrainingInfo(string Compressor, double Density, int Workers, string Transport);

    internal SIDCoTransformer(MLContext ml, nn.Module<Tensor, Tensor> module, ModelDefinition definition, string featureColumn, int featureLength,
        TrainingTask task, int classes, KeyValues? keyValues, TrainingHistory history, TrainingInfo info)
    {
        _ml = ml; _module = module; Definition = definition; FeatureColumnName = featureColumn; FeatureLength = featureLength;
        Task = task; Classes = classes; _keyValues = keyValues; History = history; Info = info;
        _module.eval();
    }

    /// <summary>The trained TorchSharp module (in evaluation mode).</summary>
    public nn.Module<Tensor, Tensor> Module => _module;

    /// <summary>The architecture.</summary>
    public ModelDefinition Definition { get; }

    /// <summary>The feature column scored.</summary>
    public string FeatureColumnName { get; }

    /// <summary>Features per row.</summary>
    public int FeatureLength { get; }

    /// <summary>Task trained for.</summary>
    public TrainingTask Task { get; }

    /// <summary>Number of classes (1 for regression).</summary>
    public int Classes { get; }

    /// <summary>Per-epoch training history.</summary>
    public TrainingHistory History { get; }

    /// <summary>How it was trained.</summary>
    public TrainingInfo Info { get; }

    /// <summary>A fingerprint of the weights: equal across workers and after save/load.</summary>
    public long WeightsFingerprint => new ParameterSet(_module).Fingerprint();

    /// <inheritdoc />
    public bool IsRowToRowMapper => true;

    /// <inheritdoc />
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Inner(inputSchema).GetOutputSchema(inputSchema);

    /// <inheritdoc />
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => Inner(inputSchema).GetRowToRowMapper(inputSchema);

    /// <inheritdoc />
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return Inner(input.Schema).Transform(input);
    }

    /// <summary>Not supported: ML.NET's model format cannot carry the torch weights. Use <see cref="Save(string)"/>.</summary>
    /// <exception cref="NotSupportedException">Always, with the supported alternative.</exception>
    void ICanSaveModel.Save(ModelSaveContext ctx) => throw new NotSupportedException(
        "mlContext.Model.Save cannot store a SIDCo model: ML.NET's model format only holds transformers registered inside ML.NET. " +
        "Save it with transformer.Save(path) and load it with mlContext.Extensions.LoadSIDCoModel(path); save the rest of the pipeline with mlContext.Model.Save as usual.");

    /// <summary>Scores one feature vector: class probabilities (multiclass) or the value (regression).</summary>
    public float[] Predict(ReadOnlySpan<float> features)
    {
        if (features.Length != FeatureLength) throw new ArgumentException($"Expected {FeatureLength} features, got {features.Length}.", nameof(features));
        var output = new float[Task == TrainingTask.Regression ? 1 : Classes];
        Score(features.ToArray(), output);
        return output;
    }

    private void Score(float[] features, float[] output) => Score(features, output.AsSpan());

    private void Score(float[] features, Span<float> output)
    {
        lock (_gate)
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var y = _module.forward(torch.tensor(features, [1, features.Length]));
            if (Task == TrainingTask.MulticlassClassification) y = nn.functional.softmax(y, 1);
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(y.contiguous().bytes).CopyTo(output);
        }
    }

    // ---- scoring through ML.NET's CustomMapping, with column names and types set at run time ----

    /// <summary>Row type of the scoring input (infrastructure; not for direct use).</summary>
    public sealed class ScoringInput
    {
        /// <summary>Features.</summary>
        public float[] Features = [];
    }

    /// <summary>Row type of multiclass scoring output (infrastructure; not for direct use).</summary>
    public sealed class ClassificationOutput
    {
        /// <summary>Class probabilities.</summary>
        public float[] Score = [];
        /// <summary>1-based key of the most probable class.</summary>
        public uint PredictedLabel;
    }

    /// <summary>Row type of regression scoring output (infrastructure; not for direct use).</summary>
    public sealed class RegressionOutput
    {
        /// <summary>Predicted value.</summary>
        public float Score;
    }

    private ITransformer Inner(DataViewSchema inputSchema)
    {
        var col = inputSchema.GetColumnOrNull(FeatureColumnName)
            ?? throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Feature column '{FeatureColumnName}' not found");
        if (col.Type is not VectorDataViewType { ItemType: NumberDataViewType n, Size: var size } || n != NumberDataViewType.Single || size != FeatureLength)
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Schema mismatch for feature column '{FeatureColumnName}': expected known-size vector of Single of size {FeatureLength}, got {col.Type}");
        var estimator = CreateScoringEstimator(_ml, FeatureColumnName, FeatureLength, Task, Classes, _keyValues, Score);
        var input = SchemaDefinition.Create(typeof(ScoringInput), SchemaDefinition.Direction.Read);
        input[nameof(ScoringInput.Features)].ColumnName = FeatureColumnName;
        input[nameof(ScoringInput.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, FeatureLength);
        return estimator.Fit(_ml.Data.LoadFromEnumerable(Array.Empty<ScoringInput>(), input));
    }

    /// <summary>The CustomMapping that scores rows with <paramref name="score"/>; its output schema is the transformer's.</summary>
    internal static IEstimator<ITransformer> CreateScoringEstimator(MLContext ml, string featureColumn, int featureLength, TrainingTask task, int classes, KeyValues? keyValues, Action<float[], float[]> score)
    {
        var input = SchemaDefinition.Create(typeof(ScoringInput), SchemaDefinition.Direction.Read);
        input[nameof(ScoringInput.Features)].ColumnName = featureColumn;
        input[nameof(ScoringInput.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, featureLength);
        if (task == TrainingTask.Regression)
        {
            return ml.Transforms.CustomMapping<ScoringInput, RegressionOutput>((i, o) => { var v = new float[1]; score(i.Features, v); o.Score = v[0]; }, contractName: null, input, null);
        }
        var output = SchemaDefinition.Create(typeof(ClassificationOutput), SchemaDefinition.Direction.Both);
        output[nameof(ClassificationOutput.Score)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, classes);
        var predicted = output[nameof(ClassificationOutput.PredictedLabel)];
        predicted.ColumnType = new KeyDataViewType(typeof(uint), classes);
        AddKeyValues(predicted, keyValues, classes);
        return ml.Transforms.CustomMapping<ScoringInput, ClassificationOutput>((i, o) =>
        {
            if (o.Score.Length != classes) o.Score = new float[classes];
            score(i.Features, o.Score);
            int best = 0;
            for (int c = 1; c < classes; c++) if (o.Score[c] > o.Score[best]) best = c;
            o.PredictedLabel = (uint)best + 1;
        }, contractName: null, input, output);
    }

    private static void AddKeyValues(SchemaDefinition.Column column, KeyValues? keyValues, int classes)
    {
        if (keyValues is null || keyValues.Values.Length != classes) return;
        var inv = CultureInfo.InvariantCulture;
        void Add<T>(Func<string, T> parse, PrimitiveDataViewType type)
            => column.AddAnnotation("KeyValues", new VBuffer<T>(classes, keyValues.Values.Select(parse).ToArray()), new VectorDataViewType(type, classes));
        switch (keyValues.TypeName)
        {
            case "Text": Add(s => s.AsMemory(), TextDataViewType.Instance); break;
            case "UInt32": Add(s => uint.Parse(s, inv), NumberDataViewType.UInt32); break;
            case "Int32": Add(s => int.Parse(s, inv), NumberDataViewType.Int32); break;
            case "Int64": Add(s => long.Parse(s, inv), NumberDataViewType.Int64); break;
            case "Single": Add(s => float.Parse(s, inv), NumberDataViewType.Single); break;
            case "Double": Add(s => double.Parse(s, inv), NumberDataViewType.Double); break;
        }
    }

    // ---- persistence ----

    private sealed record Manifest(int Format, string Model, bool BuiltIn, string FeatureColumn, int FeatureLength, string Task, int Classes,
        KeyValues? KeyValues, string Compressor, double Density, int Workers, string Transport, List<EpochMetrics> History);

    /// <summary>Saves the model (architecture descriptor, weights with checksum, column names, label key values, history) to a zip file.</summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string temp = path + ".tmp";
        using (var file = File.Create(temp)) Save(file);
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>Saves the model to <paramref name="stream"/> as a zip archive.</summary>
    public void Save(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
        var manifest = new Manifest(Format, Definition.Descriptor, Definition.IsBuiltIn, FeatureColumnName, FeatureLength, Task.ToString(), Classes,
            _keyValues, Info.Compressor, Info.Density, Info.Workers, Info.Transport, History.Epochs);
        using (var w = new StreamWriter(zip.CreateEntry("manifest.json").Open())) w.Write(JsonSerializer.Serialize(manifest));
        using (var s = zip.CreateEntry("weights.bin").Open()) new ParameterSet(_module).Save(s);
    }

    /// <summary>Loads a model saved with <see cref="Save(string)"/>; pass <paramref name="customModel"/> when it was trained with <see cref="ModelDefinition.Custom"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a SIDCo model, is corrupt, or does not match <paramref name="customModel"/>.</exception>
    public static SIDCoTransformer Load(MLContext ml, string path, ModelDefinition? customModel = null)
    {
        ArgumentNullException.ThrowIfNull(ml);
        using var file = File.OpenRead(path);
        return Load(ml, file, customModel);
    }

    /// <summary>Loads a model from a stream written by <see cref="Save(Stream)"/>.</summary>
    public static SIDCoTransformer Load(MLContext ml, Stream stream, ModelDefinition? customModel = null)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(stream);
        Manifest manifest;
        byte[] weights;
        try
        {
            using var zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
            var m = zip.GetEntry("manifest.json") ?? throw new InvalidDataException("Not a SIDCo model: manifest.json is missing.");
            var wEntry = zip.GetEntry("weights.bin") ?? throw new InvalidDataException("Not a SIDCo model: weights.bin is missing.");
            using (var r = new StreamReader(m.Open())) manifest = JsonSerializer.Deserialize<Manifest>(r.ReadToEnd()) ?? throw new InvalidDataException("Empty manifest.");
            using var ws = new MemoryStream();
            using (var s = wEntry.Open()) s.CopyTo(ws);
            weights = ws.ToArray();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new InvalidDataException($"Not a readable SIDCo model: {e.Message}", e);
        }
        if (manifest.Format != Format) throw new InvalidDataException($"SIDCo model format {manifest.Format} is not supported (expected {Format}).");
        var definition = manifest.BuiltIn ? ModelDefinition.FromDescriptor(manifest.Model)
            : customModel ?? throw new InvalidDataException($"The model uses the custom architecture '{manifest.Model}': pass its ModelDefinition to Load.");
        if (!manifest.BuiltIn && customModel!.Descriptor != manifest.Model)
            throw new InvalidDataException($"The model was trained with custom architecture '{manifest.Model}', not '{customModel.Descriptor}'.");
        var task = Enum.Parse<TrainingTask>(manifest.Task);
        var module = definition.Build(manifest.FeatureLength, task == TrainingTask.Regression ? 1 : manifest.Classes);
        try { new ParameterSet(module).Load(new MemoryStream(weights)); }
        catch { module.Dispose(); throw; }
        return new SIDCoTransformer(ml, module, definition, manifest.FeatureColumn, manifest.FeatureLength, task, manifest.Classes, manifest.KeyValues,
            new TrainingHistory(manifest.History), new TrainingInfo(manifest.Compressor, manifest.Density, manifest.Workers, manifest.Transport));
    }

    /// <summary>Releases the module's native memory.</summary>
    public void Dispose() => _module.Dispose();
}
