using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo;

/// <summary>
/// A label's key values (the classes' names or values, in key order), carried from the training data to the
/// <c>PredictedLabel</c> column and the <c>Score</c> column's slot names, and kept in saved models.
/// </summary>
/// <param name="TypeName">The item type's name: a <see cref="DataKind"/> name such as "String", "Single" or "Boolean".</param>
/// <param name="Values">The values in key order, as invariant strings.</param>
internal sealed record KeyValues(string TypeName, string[] Values)
{
    private static readonly CultureInfo s_inv = CultureInfo.InvariantCulture;

    /// <summary>Reads the key values of a key-typed column, or null when it has none of a supported type.</summary>
    public static KeyValues? Read(DataViewSchema.Column column)
    {
        if (column.Annotations.Schema.GetColumnOrNull(MlNetAnnotations.KeyValues) is not { Type: VectorDataViewType vt }) return null;
        if (KindOf(vt.ItemType) is not { } kind) return null;
        string[] Get<T>(Func<T, string> show)
        {
            VBuffer<T> values = default;
            column.GetKeyValues(ref values);
            return values.DenseValues().Select(show).ToArray();
        }
        string[]? values = kind switch
        {
            DataKind.String => Get<ReadOnlyMemory<char>>(v => v.ToString()),
            DataKind.Boolean => Get<bool>(v => v ? "true" : "false"),
            DataKind.Single => Get<float>(v => v.ToString("R", s_inv)),
            DataKind.Double => Get<double>(v => v.ToString("R", s_inv)),
            DataKind.SByte => Get<sbyte>(v => v.ToString(s_inv)),
            DataKind.Byte => Get<byte>(v => v.ToString(s_inv)),
            DataKind.Int16 => Get<short>(v => v.ToString(s_inv)),
            DataKind.UInt16 => Get<ushort>(v => v.ToString(s_inv)),
            DataKind.Int32 => Get<int>(v => v.ToString(s_inv)),
            DataKind.UInt32 => Get<uint>(v => v.ToString(s_inv)),
            DataKind.Int64 => Get<long>(v => v.ToString(s_inv)),
            DataKind.UInt64 => Get<ulong>(v => v.ToString(s_inv)),
            _ => null,
        };
        return values is null ? null : new KeyValues(kind.ToString(), values);
    }

    /// <summary>
    /// Key values of the given item type with placeholder values, for output schemas computed before training (a
    /// <see cref="SchemaShape"/> carries an annotation's type, not its values).
    /// </summary>
    public static KeyValues? Placeholder(DataViewType itemType, int count)
        => KindOf(itemType) is { } kind
            ? new KeyValues(kind.ToString(), Enumerable.Repeat(PlaceholderValue(kind), count).ToArray())
            : null;

    private static string PlaceholderValue(DataKind kind) => kind switch { DataKind.String => "", DataKind.Boolean => "false", _ => "0" };

    // The item types key values can have here, by their raw .NET type (ML.NET keeps its own mapping internal).
    private static readonly Dictionary<Type, DataKind> s_kinds = new()
    {
        [typeof(ReadOnlyMemory<char>)] = DataKind.String,
        [typeof(bool)] = DataKind.Boolean,
        [typeof(float)] = DataKind.Single,
        [typeof(double)] = DataKind.Double,
        [typeof(sbyte)] = DataKind.SByte,
        [typeof(byte)] = DataKind.Byte,
        [typeof(short)] = DataKind.Int16,
        [typeof(ushort)] = DataKind.UInt16,
        [typeof(int)] = DataKind.Int32,
        [typeof(uint)] = DataKind.UInt32,
        [typeof(long)] = DataKind.Int64,
        [typeof(ulong)] = DataKind.UInt64,
    };

    private static DataKind? KindOf(DataViewType type)
        => type is not KeyDataViewType && s_kinds.TryGetValue(type.RawType, out var kind) ? kind : null;

    /// <summary>
    /// Adds the values as the annotation <paramref name="annotation"/> of a mapping's output column, typed as the training label's were.
    /// </summary>
    public void AddTo(SchemaDefinition.Column column, string annotation = MlNetAnnotations.KeyValues)
    {
        int n = Values.Length;
        void Add<T>(Func<string, T> parse, PrimitiveDataViewType type)
            => column.AddAnnotation(annotation, new VBuffer<T>(n, Values.Select(parse).ToArray()), new VectorDataViewType(type, n));
        switch (Enum.Parse<DataKind>(TypeName))
        {
            case DataKind.String: Add(s => s.AsMemory(), TextDataViewType.Instance); break;
            case DataKind.Boolean: Add(s => s == "true", BooleanDataViewType.Instance); break;
            case DataKind.Single: Add(s => float.Parse(s, s_inv), NumberDataViewType.Single); break;
            case DataKind.Double: Add(s => double.Parse(s, s_inv), NumberDataViewType.Double); break;
            case DataKind.SByte: Add(s => sbyte.Parse(s, s_inv), NumberDataViewType.SByte); break;
            case DataKind.Byte: Add(s => byte.Parse(s, s_inv), NumberDataViewType.Byte); break;
            case DataKind.Int16: Add(s => short.Parse(s, s_inv), NumberDataViewType.Int16); break;
            case DataKind.UInt16: Add(s => ushort.Parse(s, s_inv), NumberDataViewType.UInt16); break;
            case DataKind.Int32: Add(s => int.Parse(s, s_inv), NumberDataViewType.Int32); break;
            case DataKind.UInt32: Add(s => uint.Parse(s, s_inv), NumberDataViewType.UInt32); break;
            case DataKind.Int64: Add(s => long.Parse(s, s_inv), NumberDataViewType.Int64); break;
            case DataKind.UInt64: Add(s => ulong.Parse(s, s_inv), NumberDataViewType.UInt64); break;
        }
    }

    /// <summary>
    /// A value mapping, in place on "PredictedLabel", from cluster keys to the label's keys: class <c>c</c> (key c + 1)
    /// comes from cluster <paramref name="clusterKey"/>(c). The lookup's value column is a key built over these values in
    /// their order, so the output is that key type with these key values; a cluster not listed gives key 0, missing.
    /// (A value mapping that makes keys of plain values would take numeric values as the keys themselves.)
    /// </summary>
    public IEstimator<ITransformer> MapClusters(MLContext ml, Func<int, uint> clusterKey)
    {
        IEstimator<ITransformer> Map<T>(Func<string, T> parse)
        {
            var values = Values.Select(parse).ToArray();
            var keyData = ml.Data.LoadFromEnumerable(values.Select(v => new ValueRow<T> { Value = v }));
            var rows = ml.Data.LoadFromEnumerable(values.Select((v, c) => new LookupRow<T> { Cluster = clusterKey(c), Value = v }));
            var toKey = ml.Transforms.Conversion.MapValueToKey("Class", nameof(LookupRow<T>.Value), keyData: keyData);
            var lookup = toKey.Fit(rows).Transform(rows);
            var cluster = lookup.Schema[nameof(LookupRow<T>.Cluster)];
            return ml.Transforms.Conversion.MapValue("PredictedLabel", lookup, cluster, lookup.Schema["Class"], "PredictedLabel");
        }
        return Enum.Parse<DataKind>(TypeName) switch
        {
            DataKind.String => Map(s => s),
            DataKind.Boolean => Map(s => s == "true"),
            DataKind.Single => Map(s => float.Parse(s, s_inv)),
            DataKind.Double => Map(s => double.Parse(s, s_inv)),
            DataKind.SByte => Map(s => sbyte.Parse(s, s_inv)),
            DataKind.Byte => Map(s => byte.Parse(s, s_inv)),
            DataKind.Int16 => Map(s => short.Parse(s, s_inv)),
            DataKind.UInt16 => Map(s => ushort.Parse(s, s_inv)),
            DataKind.Int32 => Map(s => int.Parse(s, s_inv)),
            DataKind.UInt32 => Map(s => uint.Parse(s, s_inv)),
            DataKind.Int64 => Map(s => long.Parse(s, s_inv)),
            _ => Map(s => ulong.Parse(s, s_inv)),
        };
    }

    /// <summary>
    /// Key values for a label that has none: the class indices 0 .. classes - 1 (the ONNX form's PredictedLabel then
    /// carries them as its key values).
    /// </summary>
    public static KeyValues ClassIndices(int classes)
        => new(nameof(DataKind.UInt32), Enumerable.Range(0, classes).Select(c => c.ToString(s_inv)).ToArray());

    /// <summary>The key values, one per row (MapValueToKey's key data must have that one column).</summary>
    private sealed class ValueRow<T>
    {
        public T Value { get; set; } = default!;
    }

    /// <summary>A row of the cluster-to-class lookup.</summary>
    private sealed class LookupRow<T>
    {
        public uint Cluster { get; set; }
        public T Value { get; set; } = default!;
    }

    /// <summary>The values as text, as ML.NET's multiclass scorers give the <c>Score</c> column's slot names.</summary>
    public void AddAsSlotNames(SchemaDefinition.Column column)
    {
        var names = new VBuffer<ReadOnlyMemory<char>>(Values.Length, Values.Select(v => v.AsMemory()).ToArray());
        column.AddAnnotation(MlNetAnnotations.SlotNames, names, new VectorDataViewType(TextDataViewType.Instance, Values.Length));
    }
}

/// <summary>
/// The affine map between a regression label and the standardised target the network trains on: target =
/// (label - Mean) / Scale. Training on standardised targets makes the learning rate mean the same whatever the
/// label's units; scoring maps back with label = Mean + Scale * output.
/// </summary>
internal readonly record struct TargetScale(double Mean, double Scale)
{
    /// <summary>No change (classification, and models saved before targets were standardised).</summary>
    public static TargetScale Identity { get; } = new(0, 1);

    /// <summary>The mean and standard deviation of <paramref name="targets"/> (a scale of 1 for a constant target).</summary>
    public static TargetScale Of(ReadOnlySpan<float> targets)
    {
        double mean = 0, m2 = 0;
        for (int i = 0; i < targets.Length; i++)
        {
            double delta = targets[i] - mean;
            mean += delta / (i + 1);
            m2 += delta * (targets[i] - mean);
        }
        double sd = targets.Length > 1 ? Math.Sqrt(m2 / targets.Length) : 0;
        return new(mean, sd > 0 && double.IsFinite(sd) ? sd : 1);
    }

    /// <summary>The mean and standard deviation from a count, a sum and a sum of squares (targets spread over workers).</summary>
    public static TargetScale FromMoments(double count, double sum, double sumOfSquares)
    {
        if (!(count > 0)) return Identity;
        double mean = sum / count;
        double sd = Math.Sqrt(Math.Max(0, sumOfSquares / count - mean * mean));
        return new(mean, sd > 0 && double.IsFinite(sd) ? sd : 1);
    }

    public float ToTarget(float label) => (float)((label - Mean) / Scale);

    public float ToLabel(float output) => (float)(Mean + Scale * output);
}

/// <summary>What <see cref="DataLoading.Read"/> found in an <see cref="IDataView"/>.</summary>
/// <param name="Data">The rows kept, with their features and labels (standardised targets for regression).</param>
/// <param name="Classes">Number of classes (2 for binary, 1 for regression).</param>
/// <param name="KeyValues">The label's key values (multiclass), or null.</param>
/// <param name="Scale">The regression target's standardisation (identity for classification).</param>
/// <param name="SkippedRows">Rows left out because the label or a feature was missing (NaN, infinite, or key 0).</param>
internal sealed record LoadedData(TrainingData Data, int Classes, KeyValues? KeyValues, TargetScale Scale, long SkippedRows);

/// <summary>Reads an IDataView into the training layer's in-memory arrays.</summary>
internal static class DataLoading
{
    /// <summary>
    /// Reads the feature and label columns. Rows with a missing label or a non-finite feature are skipped, as ML.NET's
    /// trainers skip them. Regression targets are standardised with <paramref name="scale"/> when given (validation
    /// data uses the training data's), else with their own mean and standard deviation.
    /// </summary>
    /// <param name="view">The data.</param>
    /// <param name="featureColumn">Name of the feature column (known-size vector of Single, checked by the caller).</param>
    /// <param name="labelColumn">Name of the label column (type checked by the caller).</param>
    /// <param name="task">What the label means.</param>
    /// <param name="scale">The standardisation to apply to regression targets, or null to fit it on these rows.</param>
    /// <param name="isCanceled">Polled every few thousand rows, so a cancel does not wait for a large data set to be read.</param>
    /// <param name="shard">
    /// When given, only the rows whose position in the view is <c>Index</c> modulo <c>Count</c> are kept (this worker's shard);
    /// every row is still read.
    /// </param>
    /// <param name="fitScale">Fits the regression standardisation on the kept targets (default: their own mean and deviation).</param>
    public static LoadedData Read(IDataView view, string featureColumn, string labelColumn, TrainingTask task, TargetScale? scale,
        Func<bool> isCanceled, (int Index, int Count)? shard = null, Func<float[], TargetScale>? fitScale = null)
    {
        const int CancelCheckRows = 4096;
        var f = view.Schema[featureColumn];
        var l = view.Schema[labelColumn];
        int d = ((VectorDataViewType)f.Type).Size;
        var features = new List<float>();
        var classes = new List<int>();
        var targets = new List<float>();
        long skipped = 0, seen = 0;
        int classCount = task switch
        {
            TrainingTask.MulticlassClassification => (int)((KeyDataViewType)l.Type).Count,
            TrainingTask.BinaryClassification => 2,
            _ => 1,
        };
        using (var cursor = view.GetRowCursor([f, l]))
        {
            var getFeatures = cursor.GetGetter<VBuffer<float>>(f);
            var row = new float[d];
            VBuffer<float> buffer = default;
            ValueGetter<uint>? getKey = task == TrainingTask.MulticlassClassification ? cursor.GetGetter<uint>(l) : null;
            ValueGetter<bool>? getBool = task == TrainingTask.BinaryClassification ? cursor.GetGetter<bool>(l) : null;
            ValueGetter<float>? getTarget = task == TrainingTask.Regression ? cursor.GetGetter<float>(l) : null;
            uint key = 0; bool flag = false; float target = 0;
            while (cursor.MoveNext())
            {
                if (++seen % CancelCheckRows == 0 && isCanceled())
                    throw new OperationCanceledException("Training was canceled while the data was read.");
                if (shard is { } s && (seen - 1) % s.Count != s.Index) continue;
                int label = 0;
                if (getKey is not null) { getKey(ref key); label = (int)key - 1; }
                else if (getBool is not null) { getBool(ref flag); label = flag ? 1 : 0; }
                else getTarget!(ref target);
                getFeatures(ref buffer);
                buffer.CopyTo(row);
                if (label < 0 || !float.IsFinite(target) || !System.Numerics.Tensors.TensorPrimitives.IsFiniteAll<float>(row))
                {
                    skipped++;
                    continue;
                }
                features.AddRange(row);
                if (getTarget is null) classes.Add(label); else targets.Add(target);
            }
        }
        if (features.Count == 0 && shard is { } part && seen > 0)
        {
            throw new ArgumentException($"Worker {part.Index}'s shard of the training data holds no usable row ({seen} rows for "
                + $"{part.Count} workers): give more rows, or set Options.ShardData = false.", nameof(view));
        }
        if (features.Count == 0)
        {
            throw new ArgumentException(seen == 0
                ? "The training data has no rows."
                : $"All {seen} rows of the training data have a missing label (column '{labelColumn}', Options.LabelColumnName) "
                    + $"or a NaN or infinite feature (column '{featureColumn}', Options.FeatureColumnName).", nameof(view));
        }
        var fitted = TargetScale.Identity;
        float[]? standardised = null;
        if (task == TrainingTask.Regression)
        {
            var raw = targets.ToArray();
            fitted = scale ?? (fitScale is null ? TargetScale.Of(raw) : fitScale(raw));
            standardised = new float[raw.Length];
            for (int i = 0; i < raw.Length; i++) standardised[i] = fitted.ToTarget(raw[i]);
        }
        var data = new TrainingData(features.ToArray(), d, standardised is null ? classes.ToArray() : null, standardised)
        {
            IsShard = shard is not null,
        };
        return new LoadedData(data, classCount, task == TrainingTask.MulticlassClassification ? KeyValues.Read(l) : null, fitted, skipped);
    }
}
