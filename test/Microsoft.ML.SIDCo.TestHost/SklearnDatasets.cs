using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.TestHost;

/// <summary>
/// One of scikit-learn's bundled data sets, as Debian's <c>python3-sklearn</c> installs them (./build.sh setup installs
/// the package): read with ML.NET's <c>TextLoader</c>, the way an ML.NET user loads a CSV, into the first feature as a
/// Single column "F0", the others as a vector column "Rest" (so pipelines concatenate two columns, and typed rows for a
/// prediction engine fit any feature count) and a "Label" column: text (multiclass), Boolean (binary) or Single (regression).
/// </summary>
public sealed record SklearnDataset(string Name, TrainingTask Task, int Features, string File, string? TargetFile, char Separator,
    bool Header)
{
    /// <summary>Where Debian's python3-sklearn keeps the CSVs; <c>SIDCO_SKLEARN_DATA_DIR</c> overrides it.</summary>
    public static string DataDirectory => Environment.GetEnvironmentVariable("SIDCO_SKLEARN_DATA_DIR") is { Length: > 0 } d ? d
        : "/usr/lib/python3/dist-packages/sklearn/datasets/data";

    /// <summary>150 irises, 4 features, 3 species.</summary>
    public static SklearnDataset Iris { get; } = new("iris", TrainingTask.MulticlassClassification, 4, "iris.csv", null, ',', true);

    /// <summary>178 wines, 13 features, 3 cultivars.</summary>
    public static SklearnDataset Wine { get; } = new("wine", TrainingTask.MulticlassClassification, 13, "wine_data.csv", null, ',', true);

    /// <summary>1,797 8x8 digits, 64 features, 10 classes.</summary>
    public static SklearnDataset Digits { get; } =
        new("digits", TrainingTask.MulticlassClassification, 64, "digits.csv.gz", null, ',', false);

    /// <summary>569 breast tumours, 30 features; the label is true for malignant (scikit-learn's target 0).</summary>
    public static SklearnDataset BreastCancer { get; } =
        new("breast-cancer", TrainingTask.BinaryClassification, 30, "breast_cancer.csv", null, ',', true);

    /// <summary>442 diabetes patients, 10 features, a disease-progression score.</summary>
    public static SklearnDataset Diabetes { get; } =
        new("diabetes", TrainingTask.Regression, 10, "diabetes_data_raw.csv.gz", "diabetes_target.csv.gz", ' ', false);

    /// <summary>Every data set, in a stable order.</summary>
    public static IReadOnlyList<SklearnDataset> All { get; } = [Iris, Wine, Digits, BreastCancer, Diabetes];

    /// <summary>The data set of a name.</summary>
    public static SklearnDataset Named(string name) => All.Single(d => d.Name == name);

    /// <summary>The feature columns an ML.NET pipeline concatenates: "F0" (Single) and "Rest" (vector of the other features).</summary>
    public static string[] FeatureColumns { get; } = ["F0", "Rest"];

    /// <summary>Loads every row; the label column is "Label".</summary>
    public IDataView Load(MLContext ml)
    {
        string path = Plain(Path.Combine(DataDirectory, File));
        if (TargetFile is not null) path = Join(path, Plain(Path.Combine(DataDirectory, TargetFile)));
        var label = Task switch
        {
            TrainingTask.MulticlassClassification => new TextLoader.Column("Label", DataKind.String, Features),
            TrainingTask.BinaryClassification => new TextLoader.Column("Label", DataKind.Boolean, Features),
            _ => new TextLoader.Column("Label", DataKind.Single, Features),
        };
        TextLoader.Column[] columns = [new("F0", DataKind.Single, 0), new("Rest", DataKind.Single, 1, Features - 1), label];
        var view = ml.Data.LoadFromTextFile(path, columns, Separator, Header);
        if (this == BreastCancer)
        {
            // scikit-learn's target is 0 for malignant: the positive class of the Boolean label.
            view = ml.Transforms.CustomMapping<FlagRow, FlagRow>((i, o) => o.Label = !i.Label,
                contractName: null).Fit(view).Transform(view);
        }
        return view;
    }

    /// <summary>80/20 train/test split with a seed, as ML.NET's samples make it.</summary>
    public (IDataView Train, IDataView Test) Split(MLContext ml, int seed = 1)
    {
        var split = ml.Data.TrainTestSplit(Load(ml), testFraction: 0.2, seed: seed);
        // Cached, so that every trainer and every pass reads the same rows without re-parsing the file.
        return (ml.Data.Cache(split.TrainSet), ml.Data.Cache(split.TestSet));
    }

    /// <summary>The row type of the Boolean label flip.</summary>
    public sealed class FlagRow
    {
        /// <summary>The label.</summary>
        public bool Label { get; set; }
    }

    // TextLoader reads plain files: the gzipped CSVs are unpacked once into a cache directory.
    private static string Plain(string path)
    {
        if (!path.EndsWith(".gz", StringComparison.Ordinal)) return path;
        string target = Path.Combine(CacheDirectory, Path.GetFileNameWithoutExtension(path));
        if (!System.IO.File.Exists(target))
        {
            string temp = $"{target}.{Environment.ProcessId}.tmp";
            using (var input = new GZipStream(System.IO.File.OpenRead(path), CompressionMode.Decompress))
            using (var output = System.IO.File.Create(temp))
                input.CopyTo(output);
            System.IO.File.Move(temp, target, overwrite: true);
        }
        return target;
    }

    // Diabetes keeps its target in a file of its own: one line each, appended as the last column.
    private string Join(string data, string targets)
    {
        string target = Path.Combine(CacheDirectory, Name + ".joined.csv");
        if (!System.IO.File.Exists(target))
        {
            var lines =
                System.IO.File.ReadAllLines(data).Zip(System.IO.File.ReadAllLines(targets), (d, t) => $"{d.Trim()}{Separator}{t.Trim()}");
            string temp = $"{target}.{Environment.ProcessId}.tmp";
            System.IO.File.WriteAllLines(temp, lines);
            System.IO.File.Move(temp, target, overwrite: true);
        }
        return target;
    }

    private static string CacheDirectory
    {
        get
        {
            string dir = Path.Combine(Path.GetTempPath(), "sidco-sklearn-data");
            Directory.CreateDirectory(dir);
            return dir;
        }
    }
}
