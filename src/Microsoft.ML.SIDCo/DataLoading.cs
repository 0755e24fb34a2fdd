using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo;

/// <summary>Label key values carried from the training data to the PredictedLabel column.</summary>
/// <param name="TypeName">"Text", "UInt32", "Int32", "Int64", "Single" or "Double".</param>
/// <param name="Values">The values, as invariant strings.</param>
internal sealed record KeyValues(string TypeName, string[] Values);

/// <summary>Reads an IDataView into the training layer's in-memory arrays.</summary>
internal static class DataLoading
{
    public static (TrainingData Data, int Classes, KeyValues? KeyValues) Read(IDataView view, string featureColumn, string labelColumn, TrainingTask task)
    {
        var f = view.Schema[featureColumn];
        var l = view.Schema[labelColumn];
        int d = ((VectorDataViewType)f.Type).Size;
        var features = new List<float>();
        var classes = new List<int>();
        var targets = new List<float>();
        int classCount = task == TrainingTask.MulticlassClassification ? (int)((KeyDataViewType)l.Type).Count : 1;
        using (var cursor = view.GetRowCursor([f, l]))
        {
            var getFeatures = cursor.GetGetter<VBuffer<float>>(f);
            var row = new float[d];
            VBuffer<float> buffer = default;
            ValueGetter<uint>? getKey = task == TrainingTask.MulticlassClassification ? cursor.GetGetter<uint>(l) : null;
            ValueGetter<float>? getTarget = task == TrainingTask.Regression ? cursor.GetGetter<float>(l) : null;
            uint key = 0; float target = 0;
            while (cursor.MoveNext())
            {
                if (getKey is not null) { getKey(ref key); if (key == 0) continue; } // missing label: skip the row, as ML.NET trainers do
                else { getTarget!(ref target); if (float.IsNaN(target)) continue; }
                getFeatures(ref buffer);
                buffer.CopyTo(row);
                features.AddRange(row);
                if (getKey is not null) classes.Add((int)key - 1); else targets.Add(target);
            }
        }
        if (features.Count == 0) throw new ArgumentException($"The training data has no rows with a label in column '{labelColumn}'.", nameof(view));
        var data = new TrainingData(features.ToArray(), d, task == TrainingTask.MulticlassClassification ? classes.ToArray() : null, task == TrainingTask.Regression ? targets.ToArray() : null);
        return (data, classCount, task == TrainingTask.MulticlassClassification ? ReadKeyValues(l) : null);
    }

    private static KeyValues? ReadKeyValues(DataViewSchema.Column label)
    {
        var kvColumn = label.Annotations.Schema.GetColumnOrNull("KeyValues");
        if (kvColumn is null || kvColumn.Value.Type is not VectorDataViewType vt) return null;
        var raw = vt.ItemType.RawType;
        string[] Get<T>(Func<T, string> show)
        {
            VBuffer<T> values = default;
            label.GetKeyValues(ref values);
            return values.DenseValues().Select(show).ToArray();
        }
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        if (raw == typeof(ReadOnlyMemory<char>)) return new KeyValues("Text", Get<ReadOnlyMemory<char>>(v => v.ToString()));
        if (raw == typeof(uint)) return new KeyValues("UInt32", Get<uint>(v => v.ToString(inv)));
        if (raw == typeof(int)) return new KeyValues("Int32", Get<int>(v => v.ToString(inv)));
        if (raw == typeof(long)) return new KeyValues("Int64", Get<long>(v => v.ToString(inv)));
        if (raw == typeof(float)) return new KeyValues("Single", Get<float>(v => v.ToString("R", inv)));
        if (raw == typeof(double)) return new KeyValues("Double", Get<double>(v => v.ToString("R", inv)));
        return null;
    }
}
