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
/// The model a <see cref="SIDCoTrainer"/> produces: scores an <see cref="IDataView"/> with the trained TorchSharp module
/// and adds the columns ML.NET's own trainers add, so <c>Evaluate</c>, <c>CrossValidate</c>, prediction engines and a
/// trailing <c>MapKeyToValue("PredictedLabel")</c> work on it:
/// multiclass: <c>Score</c> (class probabilities, slot names = the label's key values) and <c>PredictedLabel</c> (a key
/// with the label's key values); binary: <c>Score</c> (the logit), <c>Probability</c> (its sigmoid) and
/// <c>PredictedLabel</c> (Boolean, <c>Score</c> &gt; 0); regression: <c>Score</c>.
/// A row with a NaN or infinite feature scores as missing: NaN scores, a missing key (multiclass) or false (binary).
/// </summary>
/// <remarks>
/// Two ways to keep a model (docs/persistence.md): <c>mlContext.Model.Save</c> stores it as ML.NET's own transformers over
/// its ONNX export (<see cref="ToOnnxTransformer"/>), which <c>mlContext.Model.Load</c> reads without this package or
/// TorchSharp; <see cref="Save(string, bool)"/> keeps the TorchSharp model itself (with its training history), which
/// <c>mlContext.Extensions.LoadSIDCoModel(path)</c> reads back.
/// </remarks>
public sealed partial class SIDCoTransformer : ITransformer, IDisposable
{
    // 1: the first format; 2: the task may be binary, and regression keeps the target standardisation (Format 1 reads as identity).
    // 3: the manifest's checksum is saved beside it.
    private const int Format = 3;
    private const int FirstChecksummedFormat = 3;
    private const string ManifestEntry = "manifest.json", ManifestChecksumEntry = "manifest.xxh64", WeightsEntry = "weights.bin";
    private const int FirstFormat = 1;
    private readonly MLContext _ml;
    private readonly nn.Module<Tensor, Tensor> _module;
    private readonly object _gate = new();
    private readonly KeyValues? _keyValues;
    private readonly TargetScale _scale;
    private volatile bool _disposed;

    /// <summary>Where and how the model was trained.</summary>
    /// <param name="Compressor">Compressor name.</param>
    /// <param name="Density">Target density.</param>
    /// <param name="Workers">Number of workers.</param>
    /// <param name="Transport">"mpi", "mpi+inprocess" or "inprocess".</param>
    public sealed record TrainingInfo(string Compressor, double Density, int Workers, string Transport);

    internal SIDCoTransformer(MLContext ml, nn.Module<Tensor, Tensor> module, ModelDefinition definition, string featureColumn,
        int featureLength,
        TrainingTask task, int classes, KeyValues? keyValues, TargetScale scale, TrainingHistory history, TrainingInfo info)
    {
        _ml = ml; _module = module; Definition = definition; FeatureColumnName = featureColumn; FeatureLength = featureLength;
        Task = task; Classes = classes; _keyValues = keyValues; _scale = scale; History = history; Info = info;
        _module.eval();
    }

    /// <summary>The trained TorchSharp module (in evaluation mode).</summary>
    public nn.Module<Tensor, Tensor> Module
    {
        get
        {
            ThrowIfDisposed();
            return _module;
        }
    }

    /// <summary>The architecture.</summary>
    public ModelDefinition Definition { get; }

    /// <summary>The feature column scored.</summary>
    public string FeatureColumnName { get; }

    /// <summary>Features per row.</summary>
    public int FeatureLength { get; }

    /// <summary>Task trained for.</summary>
    public TrainingTask Task { get; }

    /// <summary>Number of classes (2 for binary, 1 for regression).</summary>
    public int Classes { get; }

    /// <summary>Per-epoch training history.</summary>
    public TrainingHistory History { get; }

    /// <summary>How it was trained.</summary>
    public TrainingInfo Info { get; }

    /// <summary>A fingerprint of the weights: equal across workers and after save/load.</summary>
    public long WeightsFingerprint => new ParameterSet(Module).Fingerprint();

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

    /// <summary>
    /// Scores one feature vector and returns what the <c>Score</c> column holds: the class probabilities (multiclass),
    /// the logit (binary; <c>Probability</c> is its sigmoid) or the predicted value (regression).
    /// </summary>
    public float[] Predict(ReadOnlySpan<float> features)
    {
        if (features.Length != FeatureLength)
            throw new ArgumentException($"Expected {FeatureLength} features, got {features.Length}.", nameof(features));
        var output = new float[Task.Outputs(Classes)];
        Score(features.ToArray(), output);
        return output;
    }

    // The Score column's values for one row; NaN when a feature is not finite (the row is missing, as in ML.NET's scorers).
    private void Score(float[] features, Span<float> output)
    {
        ThrowIfDisposed();
        if (!System.Numerics.Tensors.TensorPrimitives.IsFiniteAll<float>(features))
        {
            output.Fill(float.NaN);
            return;
        }
        lock (_gate)
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var y = _module.forward(AlignedTensors.From(features, 1, features.Length));
            if (Task == TrainingTask.MulticlassClassification) y = nn.functional.softmax(y, 1);
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(y.contiguous().bytes).CopyTo(output);
        }
        if (Task == TrainingTask.Regression) output[0] = _scale.ToLabel(output[0]);
    }

    // ---- scoring through ML.NET's CustomMapping, with column names and types set at run time ----

    /// <summary>Row type of the scoring input (infrastructure; not for direct use).</summary>
    internal sealed class ScoringInput
    {
        /// <summary>Features.</summary>
        public float[] Features = [];
    }

    /// <summary>Row type of multiclass scoring output (infrastructure; not for direct use).</summary>
    internal sealed class ClassificationOutput
    {
        /// <summary>Class probabilities.</summary>
        public float[] Score = [];
        /// <summary>The most probable class's 0-based index (CustomMapping stores index i as key i + 1; an index past the last class is a
        /// missing key).</summary>
        public uint PredictedLabel;
    }

    /// <summary>Row type of binary scoring output (infrastructure; not for direct use).</summary>
    internal sealed class BinaryOutput
    {
        /// <summary>The logit.</summary>
        public float Score;
        /// <summary>The probability of true: the logit's sigmoid.</summary>
        public float Probability;
        /// <summary>True when the logit is above 0.</summary>
        public bool PredictedLabel;
    }

    /// <summary>Row type of regression scoring output (infrastructure; not for direct use).</summary>
    internal sealed class RegressionOutput
    {
        /// <summary>Predicted value.</summary>
        public float Score;
    }

    private ITransformer Inner(DataViewSchema inputSchema)
    {
        ThrowIfDisposed();
        var col = inputSchema.GetColumnOrNull(FeatureColumnName)
            ?? throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Feature column '{FeatureColumnName}' not found");
        if (col.Type is not VectorDataViewType { ItemType: NumberDataViewType n, Size: var size } || n != NumberDataViewType.Single
            || size != FeatureLength)
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"Schema mismatch for feature column '{FeatureColumnName}': expected known-size vector of Single of size " +
                $"{FeatureLength}, got {col.Type}");
        var estimator = CreateScoringEstimator(_ml, FeatureColumnName, FeatureLength, Task, Classes, _keyValues, Score);
        var input = SchemaDefinition.Create(typeof(ScoringInput), SchemaDefinition.Direction.Read);
        // Look the column up once: the definition's indexer finds columns by their current name.
        var inputColumn = input[nameof(ScoringInput.Features)];
        inputColumn.ColumnName = FeatureColumnName;
        inputColumn.ColumnType = new VectorDataViewType(NumberDataViewType.Single, FeatureLength);
        return estimator.Fit(_ml.Data.LoadFromEnumerable(Array.Empty<ScoringInput>(), input));
    }

    /// <summary>Scores one row: fills the span with the Score column's values (length: the task's outputs).</summary>
    internal delegate void RowScorer(float[] features, Span<float> output);

    /// <summary>
    /// The CustomMapping that scores rows with <paramref name="score"/>; its output schema is the transformer's, so the
    /// trainer's <see cref="SIDCoTrainer.GetOutputSchema"/> (with placeholder key values of the label's type) and the
    /// fitted transformer give the same columns, types and annotations.
    /// </summary>
    internal static IEstimator<ITransformer> CreateScoringEstimator(MLContext ml, string featureColumn, int featureLength,
        TrainingTask task, int classes,
        KeyValues? keyValues, RowScorer score)
    {
        var input = SchemaDefinition.Create(typeof(ScoringInput), SchemaDefinition.Direction.Read);
        // Look the column up once: the definition's indexer finds columns by their current name.
        var inputColumn = input[nameof(ScoringInput.Features)];
        inputColumn.ColumnName = featureColumn;
        inputColumn.ColumnType = new VectorDataViewType(NumberDataViewType.Single, featureLength);
        switch (task)
        {
            case TrainingTask.Regression:
                {
                    var output = SchemaDefinition.Create(typeof(RegressionOutput), SchemaDefinition.Direction.Both);
                    MarkScore(output[nameof(RegressionOutput.Score)], MlNetAnnotations.Regression, MlNetAnnotations.Score);
                    return ml.Transforms.CustomMapping<ScoringInput, RegressionOutput>((i, o) =>
                    {
                        Span<float> v = stackalloc float[1];
                        score(i.Features, v);
                        o.Score = v[0];
                    }, contractName: null, input, output);
                }
            case TrainingTask.BinaryClassification:
                {
                    var output = SchemaDefinition.Create(typeof(BinaryOutput), SchemaDefinition.Direction.Both);
                    const string Kind = MlNetAnnotations.BinaryClassification;
                    MarkScore(output[nameof(BinaryOutput.Score)], Kind, MlNetAnnotations.Score);
                    var probability = output[nameof(BinaryOutput.Probability)];
                    MarkScore(probability, Kind, MlNetAnnotations.Probability);
                    probability.AddAnnotation(MlNetAnnotations.IsNormalized, true, BooleanDataViewType.Instance);
                    MarkScore(output[nameof(BinaryOutput.PredictedLabel)], Kind, MlNetAnnotations.PredictedLabel);
                    return ml.Transforms.CustomMapping<ScoringInput, BinaryOutput>((i, o) =>
                    {
                        Span<float> v = stackalloc float[1];
                        score(i.Features, v);
                        o.Score = v[0];
                        o.Probability = float.IsNaN(v[0]) ? float.NaN : 1f / (1f + MathF.Exp(-v[0]));
                        o.PredictedLabel = v[0] > 0;
                    }, contractName: null, input, output);
                }
            default:
                {
                    var output = SchemaDefinition.Create(typeof(ClassificationOutput), SchemaDefinition.Direction.Both);
                    const string Kind = MlNetAnnotations.MulticlassClassification;
                    var scoreColumn = output[nameof(ClassificationOutput.Score)];
                    scoreColumn.ColumnType = new VectorDataViewType(NumberDataViewType.Single, classes);
                    MarkScore(scoreColumn, Kind, MlNetAnnotations.Score);
                    var predicted = output[nameof(ClassificationOutput.PredictedLabel)];
                    predicted.ColumnType = new KeyDataViewType(typeof(uint), classes);
                    MarkScore(predicted, Kind, MlNetAnnotations.PredictedLabel);
                    if (keyValues is not null && keyValues.Values.Length == classes)
                    {
                        keyValues.AddTo(predicted);
                        keyValues.AddAsSlotNames(scoreColumn);
                    }
                    return ml.Transforms.CustomMapping<ScoringInput, ClassificationOutput>((i, o) =>
                    {
                        if (o.Score.Length != classes) o.Score = new float[classes];
                        score(i.Features, o.Score);
                        // The arg-max's index; CustomMapping stores index i as key i + 1, and an index past the last class as key 0
                        // (missing).
                        int best = 0;
                        for (int c = 1; c < classes; c++) if (o.Score[c] > o.Score[best]) best = c;
                        o.PredictedLabel = float.IsNaN(o.Score[0]) ? (uint)classes : (uint)best;
                    }, contractName: null, input, output);
                }
        }
    }

    // The annotations ML.NET's scorers put on their output columns, so tools that look for a score column by kind find ours.
    private static void MarkScore(SchemaDefinition.Column column, string columnKind, string valueKind)
    {
        column.AddAnnotation(MlNetAnnotations.ScoreColumnKind, columnKind.AsMemory(), TextDataViewType.Instance);
        column.AddAnnotation(MlNetAnnotations.ScoreValueKind, valueKind.AsMemory(), TextDataViewType.Instance);
    }

    // ---- persistence ----

    private sealed record Manifest(int Format, string Model, bool BuiltIn, string FeatureColumn, int FeatureLength, string Task,
        int Classes,
        KeyValues? KeyValues, string Compressor, double Density, int Workers, string Transport, List<EpochMetrics> History,
        double TargetMean = 0, double TargetScale = 1);

    /// <summary>
    /// Saves the model (architecture descriptor, weights with checksum, column names, label key values, history) to a zip
    /// file. Under <c>mpirun</c> every rank holds the same model, so only the primary rank
    /// (<see cref="SIDCoTrainer.IsPrimaryWorker"/>) writes unless <paramref name="onEveryRank"/> is true; the file
    /// appears complete or not at all (written to a temporary name, then renamed).
    /// </summary>
    /// <param name="path">The file to write (replaced if it exists).</param>
    /// <param name="onEveryRank">Write on every MPI rank too (give each rank its own path). Default false.</param>
    /// <returns>True when this process wrote the file.</returns>
    public bool Save(string path, bool onEveryRank = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!onEveryRank && !SIDCoTrainer.IsPrimaryWorker) return false;
        // A name of this process's own, so that two processes saving one path never write the same temporary file.
        string temp = $"{path}.{Environment.ProcessId}.tmp";
        try
        {
            using (var file = File.Create(temp)) Save(file);
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
        return true;
    }

    /// <summary>Saves the model to <paramref name="stream"/> as a zip archive (on whichever rank calls it).</summary>
    public void Save(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
        var manifest =
            new Manifest(Format, Definition.Descriptor, Definition.IsBuiltIn, FeatureColumnName, FeatureLength, Task.ToString(), Classes,
            _keyValues, Info.Compressor, Info.Density, Info.Workers, Info.Transport, History.Epochs, _scale.Mean, _scale.Scale);
        byte[] manifestBytes = JsonSerializer.SerializeToUtf8Bytes(manifest);
        using (var s = zip.CreateEntry(ManifestEntry).Open()) s.Write(manifestBytes);
        using (var w = new StreamWriter(zip.CreateEntry(ManifestChecksumEntry).Open())) w.Write(Checksum(manifestBytes));
        using (var s = zip.CreateEntry(WeightsEntry).Open()) new ParameterSet(Module).Save(s);
    }

    /// <summary>Loads a model saved with <see cref="Save(string, bool)"/>; pass <paramref name="customModel"/> when it was trained with
    /// <see cref="ModelDefinition.Custom"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a SIDCo model, is corrupt, or does not match
    /// <paramref name="customModel"/>.</exception>
    public static SIDCoTransformer Load(MLContext ml, string path, ModelDefinition? customModel = null)
    {
        ArgumentNullException.ThrowIfNull(ml);
        using var file = File.OpenRead(path);
        try
        {
            return Load(ml, file, customModel);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}' is not a usable SIDCo model: {e.Message}", e);
        }
    }

    /// <summary>Loads a model from a stream written by <see cref="Save(Stream)"/>.</summary>
    /// <exception cref="InvalidDataException">The stream is not a SIDCo model, is corrupt, or does not match
    /// <paramref name="customModel"/>.</exception>
    public static SIDCoTransformer Load(MLContext ml, Stream stream, ModelDefinition? customModel = null)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(stream);
        TorchRuntime.EnsureLoaded();
        Manifest manifest;
        byte[] weights;
        long storedValues;
        try
        {
            using var zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
            byte[] manifestBytes = ReadEntry(zip, ManifestEntry);
            manifest = JsonSerializer.Deserialize<Manifest>(manifestBytes) ?? throw new InvalidDataException("Empty manifest.");
            if (manifest.Format is < FirstFormat or > Format)
            {
                throw new InvalidDataException(
                    $"SIDCo model format {manifest.Format} is not supported (this version reads {FirstFormat} to {Format}).");
            }
            if (manifest.Format >= FirstChecksummedFormat
                && System.Text.Encoding.UTF8.GetString(ReadEntry(zip, ManifestChecksumEntry)) != Checksum(manifestBytes))
                throw new InvalidDataException($"{ManifestEntry} is corrupt (checksum mismatch).");
            weights = ReadEntry(zip, WeightsEntry);
            storedValues = ParameterSet.StoredValues(weights);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NotSupportedException or IOException)
        {
            throw new InvalidDataException($"Not a readable SIDCo model: {e.Message}", e);
        }
        // Every size is checked before anything is allocated from it: a model reads each feature and produces each class
        // through at least one of its stored values.
        if (manifest.FeatureLength < 1 || manifest.FeatureLength > storedValues)
        {
            throw new InvalidDataException(
                $"The manifest's FeatureLength {manifest.FeatureLength} does not fit the {storedValues} stored weights.");
        }
        if (manifest.Classes < 0 || manifest.Classes > storedValues)
            throw new InvalidDataException($"The manifest's Classes {manifest.Classes} does not fit the {storedValues} stored weights.");
        if (!Enum.TryParse<TrainingTask>(manifest.Task, out var task) || !Enum.IsDefined(task))
            throw new InvalidDataException($"Unknown task '{manifest.Task}' in the model.");
        if (task == TrainingTask.MulticlassClassification && manifest.KeyValues is { } kv && kv.Values.Length != manifest.Classes)
        {
            throw new InvalidDataException(
                $"The manifest holds {kv.Values.Length} key values for {manifest.Classes} classes.");
        }
        ModelDefinition definition;
        try
        {
            definition = manifest.BuiltIn ? ModelDefinition.FromDescriptor(manifest.Model)
                : customModel ?? throw new InvalidDataException(
                    $"The model uses the custom architecture '{manifest.Model}': pass its ModelDefinition to Load.");
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"The manifest's model '{manifest.Model}' is not a built-in architecture: {e.Message}", e);
        }
        if (!manifest.BuiltIn && customModel!.Descriptor != manifest.Model)
        {
            throw new InvalidDataException(
                $"The model was trained with custom architecture '{manifest.Model}', not '{customModel.Descriptor}'.");
        }
        nn.Module<Tensor, Tensor> module;
        try
        {
            module = definition.Build(manifest.FeatureLength, task.Outputs(manifest.Classes));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The manifest's sizes do not fit its architecture '{manifest.Model}': {e.Message}", e);
        }
        try { new ParameterSet(module).Load(new MemoryStream(weights)); }
        catch { module.Dispose(); throw; }
        return new SIDCoTransformer(ml, module, definition, manifest.FeatureColumn, manifest.FeatureLength, task, manifest.Classes,
            manifest.KeyValues,
            new TargetScale(manifest.TargetMean, manifest.TargetScale), new TrainingHistory(manifest.History),
            new TrainingInfo(manifest.Compressor, manifest.Density, manifest.Workers, manifest.Transport));
    }

    private static byte[] ReadEntry(ZipArchive zip, string name)
    {
        var entry = zip.GetEntry(name) ?? throw new InvalidDataException($"Not a SIDCo model: {name} is missing.");
        // The zip's own header gives the size: refuse one that would not fit an array before reading it.
        if (entry.Length > Array.MaxLength) throw new InvalidDataException($"{name} is too large ({entry.Length} bytes).");
        using var s = entry.Open();
        using var copy = new MemoryStream();
        s.CopyTo(copy);
        return copy.ToArray();
    }

    private static string Checksum(byte[] bytes) =>
        System.IO.Hashing.XxHash64.HashToUInt64(bytes).ToString("x16", CultureInfo.InvariantCulture);

    /// <summary>Releases the module's native memory.</summary>
    /// <remarks>
    /// ML.NET disposes a model with the prediction engine made from it (<c>PredictionEngine.Dispose</c> disposes its
    /// transformer chain): dispose an engine only when the model is no longer needed. Any use after disposal throws
    /// <see cref="ObjectDisposedException"/>.
    /// </remarks>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _module.Dispose();
    }

    // The module's native memory is gone once disposed: fail with the reason instead of reading freed memory.
    private void ThrowIfDisposed()
    {
        if (_disposed)
            throw new ObjectDisposedException(nameof(SIDCoTransformer),
                "This SIDCo model was disposed. ML.NET disposes a model together with a PredictionEngine made from it; dispose the " +
                "engine only when the model is no longer needed.");
    }
}
