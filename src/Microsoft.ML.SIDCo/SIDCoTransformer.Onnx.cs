using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Onnx;
using Microsoft.ML.SIDCo.Training;
using Microsoft.ML.Trainers;
using static Onnx.TensorProto.Types;

namespace Microsoft.ML.SIDCo;

public sealed partial class SIDCoTransformer
{
    // Helper columns of the ML.NET form, dropped at its end.
    private const string HelperScore = "__sidco_score", HelperNearest = "__sidco_nearest";
    private const string StandaloneInput = "features";

    /// <summary>
    /// Writes the model as a standalone ONNX model (operator set <see cref="OnnxGraph.OperatorSet"/>), for ONNX Runtime or any
    /// ONNX consumer. Input "features": float [N, <see cref="FeatureLength"/>]. Outputs, as this transformer's columns:
    /// multiclass "Score" [N, classes] (probabilities) and "PredictedLabel" int64 [N] (the class's 0-based index, -1 for a
    /// row with a NaN or infinite feature); binary "Score" [N] (logit), "Probability" [N], "PredictedLabel" bool [N];
    /// regression "Score" [N].
    /// </summary>
    /// <exception cref="NotSupportedException">The model's architecture is custom and has no <see cref="Models.OnnxExporter"/>.</exception>
    public void ExportOnnx(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var bytes = OnnxModel(perRow: false, StandaloneInput);
        stream.Write(bytes);
    }

    /// <summary>
    /// Writes <see cref="ExportOnnx(Stream)"/>'s model to a file, on the primary rank only unless <paramref name="onEveryRank"/>.
    /// </summary>
    /// <returns>True when this process wrote the file.</returns>
    public bool ExportOnnx(string path, bool onEveryRank = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!onEveryRank && !SIDCoTrainer.IsPrimaryWorker) return false;
        var bytes = OnnxModel(perRow: false, StandaloneInput);
        string temp = $"{path}.{Environment.ProcessId}.tmp";
        File.WriteAllBytes(temp, bytes);
        File.Move(temp, path, overwrite: true);
        return true;
    }

    /// <summary>
    /// This model as ML.NET's own transformers, which <c>mlContext.Model.Save</c> stores and <c>mlContext.Model.Load</c>
    /// reads without this package or TorchSharp: <c>ApplyOnnxModel</c> scores the exported network, and for multiclass a
    /// K-means model whose centroids are the one-hot vectors turns the probabilities into the arg-max's key (the nearest
    /// one-hot vector is the arg-max: |p - e_j|^2 = |p|^2 - 2 p_j + 1), which a value mapping gives the label's key values.
    /// Multiclass columns match this transformer's (Score's slot names aside). ML.NET's OnnxTransformer gives only vector
    /// columns, and ML.NET has no public transform from a one-slot vector to a scalar, so binary and regression
    /// columns are one-element vectors there.
    /// </summary>
    /// <exception cref="NotSupportedException">The architecture is custom and has no <see cref="Models.OnnxExporter"/>.</exception>
    /// <exception cref="InvalidOperationException">
    /// No native ONNX Runtime could be loaded (the app adds Microsoft.ML.OnnxRuntime).
    /// </exception>
    public ITransformer ToOnnxTransformer()
    {
        ThrowIfDisposed();
        var bytes = OnnxModel(perRow: true, FeatureColumnName);
        var schema = SchemaDefinition.Create(typeof(ScoringInput), SchemaDefinition.Direction.Read);
        // Look the column up once: the definition's indexer finds columns by their current name.
        var schemaColumn = schema[nameof(ScoringInput.Features)];
        schemaColumn.ColumnName = FeatureColumnName;
        schemaColumn.ColumnType = new VectorDataViewType(NumberDataViewType.Single, FeatureLength);
        IDataView view = _ml.Data.LoadFromEnumerable(Array.Empty<ScoringInput>(), schema);
        var parts = new List<ITransformer>();
        void Add(ITransformer t)
        {
            parts.Add(t);
            view = t.Transform(view);
        }
        try
        {
            if (Task != TrainingTask.MulticlassClassification)
            {
                string[] outputs = Task == TrainingTask.Regression ? ["Score"] : ["Score", "Probability", "PredictedLabel"];
                Add(_ml.Transforms.ApplyOnnxModel(outputs, [FeatureColumnName], new MemoryStream(bytes)).Fit(view));
                return new TransformerChain<ITransformer>(parts.ToArray());
            }
            Add(_ml.Transforms.ApplyOnnxModel([HelperScore, HelperNearest], [FeatureColumnName], new MemoryStream(bytes)).Fit(view));
            var (nearest, classOfCluster) = NearestOneHot(Classes + 1);
            Add(nearest); // writes PredictedLabel (the cluster) and a Score of distances, which the next copy hides
            Add(_ml.Transforms.CopyColumns("Score", HelperScore).Fit(view));
            Add(KeyOfCluster(classOfCluster).Fit(view));
            Add(_ml.Transforms.DropColumns(HelperScore, HelperNearest).Fit(view));
            return new TransformerChain<ITransformer>(parts.ToArray());
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or EntryPointNotFoundException)
        {
            foreach (var part in parts) (part as IDisposable)?.Dispose();
            throw new InvalidOperationException("Saving or scoring a SIDCo model as ONNX needs a native ONNX Runtime: add "
                + $"Microsoft.ML.OnnxRuntime (or Microsoft.ML.OnnxRuntime.Gpu) to the app ({e.GetBaseException().Message.TrimEnd()}).", e);
        }
    }

    /// <summary>
    /// <c>mlContext.Model.Save</c> stores this model as <see cref="ToOnnxTransformer"/>'s ML.NET transformers, so the file
    /// loads with <c>mlContext.Model.Load</c> wherever ML.NET and ONNX Runtime run.
    /// </summary>
    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        using var native = (TransformerChain<ITransformer>)ToOnnxTransformer();
        ((ICanSaveModel)native).Save(ctx);
    }

    // K-means fitted on the one-hot vectors of `slots` dimensions: each centroid is one of them exactly (a cluster of one
    // point is that point). Returns the model and, per cluster, the one-hot slot it holds; the last slot is the sentinel
    // that rows with a non-finite feature are sent to.
    private (ClusteringPredictionTransformer<KMeansModelParameters> Model, int[] SlotOfCluster) NearestOneHot(int slots)
    {
        var schema = SchemaDefinition.Create(typeof(ScoringInput), SchemaDefinition.Direction.Read);
        // Look the column up once: the definition's indexer finds columns by their current name.
        var schemaColumn = schema[nameof(ScoringInput.Features)];
        schemaColumn.ColumnName = HelperNearest;
        schemaColumn.ColumnType = new VectorDataViewType(NumberDataViewType.Single, slots);
        var oneHots = Enumerable.Range(0, slots).Select(j => new ScoringInput { Features = OneHot(j, slots) }).ToArray();
        var options = new KMeansTrainer.Options { FeatureColumnName = HelperNearest, NumberOfClusters = slots };
        var model = _ml.Clustering.Trainers.KMeans(options).Fit(_ml.Data.LoadFromEnumerable(oneHots, schema));
        VBuffer<float>[] centroids = null!; // ML.NET allocates the array when given none
        model.Model.GetClusterCentroids(ref centroids, out int k);
        var slotOf = new int[k];
        for (int c = 0; c < k; c++)
        {
            var centroid = centroids[c].DenseValues().ToArray();
            int slot = Array.IndexOf(centroid, 1f);
            slotOf[c] = centroid.SequenceEqual(OneHot(slot, slots)) ? slot : -1;
        }
        if (k != slots || slotOf.Contains(-1) || slotOf.Distinct().Count() != slots)
            throw new InvalidOperationException("K-means did not recover the one-hot vectors as centroids; the ONNX form cannot be built.");
        return (model, slotOf);
    }

    // e_j of the given dimension; an index outside it gives the zero vector.
    private static float[] OneHot(int j, int dimension)
    {
        var v = new float[dimension];
        if (j >= 0 && j < dimension) v[j] = 1;
        return v;
    }

    // Cluster key (1-based) to the label's key, with the label's key values; the sentinel cluster maps to nothing, a missing key.
    private IEstimator<ITransformer> KeyOfCluster(int[] slotOfCluster)
    {
        var values = _keyValues is { } kv && kv.Values.Length == Classes ? kv : KeyValues.ClassIndices(Classes);
        return values.MapClusters(_ml, c => (uint)(Array.IndexOf(slotOfCluster, c) + 1));
    }

    /// <summary>The model as ONNX bytes: per row (input [FeatureLength], outputs without a batch axis, for ML.NET) or batched.</summary>
    internal byte[] OnnxModel(bool perRow, string inputName)
    {
        ThrowIfDisposed();
        var export = Definition.OnnxExport ?? throw new NotSupportedException(
            $"The custom architecture '{Definition.Descriptor}' has no ONNX exporter: give one to "
            + "ModelDefinition.Custom(name, factory, onnx) so that mlContext.Model.Save and ExportOnnx can write it; "
            + "SIDCoTransformer.Save(path) keeps the model in SIDCo's own format.");
        var g = new OnnxGraph();
        long?[] batch = perRow ? [] : [null];
        string input = g.Input(inputName, DataType.Float, [.. batch, FeatureLength]);
        string rows = perRow ? g.Node("Reshape", [input, g.Int64s("row_shape", 1, FeatureLength)]) : input;
        string logits;
        lock (_gate) logits = export(_module, g, rows);
        // A row with a NaN or infinite feature is missing (its outputs NaN, as in Score): x * 0 sums to NaN exactly then.
        string zero = g.Floats("zero", [0f]);
        string zeroed = g.Node("ReduceSum", [g.Node("Mul", [rows, zero]), g.Int64s("feature_axis", 1)], ("keepdims", 0L));
        string finite = g.Node("Not", [g.Node("IsNaN", [zeroed])]);
        string finiteColumn = g.Node("Unsqueeze", [finite, g.Int64s("class_axis", 1)]);
        string nan = g.Floats("nan", [float.NaN]);
        string description = $"{Definition.Descriptor}, {Task}, {FeatureLength} features -> {Classes} classes, "
            + $"trained with {Info.Compressor} on {Info.Workers} workers";
        switch (Task)
        {
            case TrainingTask.MulticlassClassification:
                {
                    string probabilities = g.Node("Where", [finiteColumn, g.Node("Softmax", [logits], ("axis", 1L)), nan]);
                    if (!perRow)
                    {
                        g.NamedNode("Score", "Identity", [probabilities]);
                        string index = g.Node("ArgMax", [logits], ("axis", 1L), ("keepdims", 0L));
                        g.NamedNode("PredictedLabel", "Where", [finite, index, g.Int64s("missing", -1)]);
                        g.Output("Score", DataType.Float, null, Classes);
                        g.Output("PredictedLabel", DataType.Int64, (long?)null);
                        break;
                    }
                    g.NamedNode(HelperScore, "Reshape", [probabilities, g.Int64s("score_shape", Classes)]);
                    // [probabilities, 0] for a finite row, the sentinel one-hot [0 ... 0, 1] for a missing one.
                    var sentinel = new float[Classes + 1];
                    sentinel[Classes] = 1;
                    string padded = g.Node("Concat", [probabilities, g.Floats("pad", [0f], 1, 1)], ("axis", 1L));
                    string nearest = g.Node("Where", [finiteColumn, padded, g.Floats("sentinel", sentinel, 1, Classes + 1)]);
                    g.NamedNode(HelperNearest, "Reshape", [nearest, g.Int64s("nearest_shape", Classes + 1)]);
                    g.Output(HelperScore, DataType.Float, Classes);
                    g.Output(HelperNearest, DataType.Float, Classes + 1);
                    break;
                }
            case TrainingTask.BinaryClassification:
                {
                    string logit = g.Node("Where", [finite, g.Node("Reshape", [logits, g.Int64s("flat", -1)]), nan]);
                    g.NamedNode("Score", "Identity", [logit]);
                    g.NamedNode("Probability", "Sigmoid", [logit]);
                    g.NamedNode("PredictedLabel", "Greater", [logit, zero]);
                    long?[] shape = perRow ? [1] : [null];
                    g.Output("Score", DataType.Float, shape);
                    g.Output("Probability", DataType.Float, shape);
                    g.Output("PredictedLabel", DataType.Bool, shape);
                    break;
                }
            default:
                {
                    // label = Mean + Scale * output, in double as the transformer computes it, then rounded once to float.
                    string value = g.Node("Cast", [g.Node("Reshape", [logits, g.Int64s("flat", -1)])], ("to", (long)DataType.Double));
                    string scaled = g.Node("Mul", [value, g.Doubles("scale", [_scale.Scale], 1)]);
                    string label = g.Node("Add", [scaled, g.Doubles("mean", [_scale.Mean], 1)]);
                    g.NamedNode("Score", "Where", [finite, g.Node("Cast", [label], ("to", (long)DataType.Float)), nan]);
                    g.Output("Score", DataType.Float, perRow ? [1] : [null]);
                    break;
                }
        }
        return g.ToModelBytes(description);
    }
}
