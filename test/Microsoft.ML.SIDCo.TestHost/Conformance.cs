using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Samples;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.TestHost;

/// <summary>A row of the conformance data sets with a text label (multiclass), for prediction engines and data built row by row.</summary>
public sealed class MulticlassRow
{
    /// <summary>The first feature.</summary>
    public float F0;
    /// <summary>The other features.</summary>
    public float[] Rest = [];
    /// <summary>The class name.</summary>
    public string Label = "";
}

/// <summary>A row with a Boolean label (binary).</summary>
public sealed class BinaryRow
{
    /// <summary>The first feature.</summary>
    public float F0;
    /// <summary>The other features.</summary>
    public float[] Rest = [];
    /// <summary>The label.</summary>
    public bool Label;
}

/// <summary>A row with a Single label (regression).</summary>
public sealed class RegressionRow
{
    /// <summary>The first feature.</summary>
    public float F0;
    /// <summary>The other features.</summary>
    public float[] Rest = [];
    /// <summary>The label.</summary>
    public float Label;
}

/// <summary>What a multiclass pipeline that ends in MapKeyToValue("PredictedLabel") gives a prediction engine.</summary>
public sealed class MulticlassPrediction
{
    /// <summary>Class probabilities.</summary>
    public float[] Score = [];
    /// <summary>The predicted class name.</summary>
    public string PredictedLabel = "";
}

/// <summary>What a binary pipeline gives a prediction engine.</summary>
public sealed class BinaryPrediction
{
    /// <summary>The logit.</summary>
    public float Score;
    /// <summary>The probability of true.</summary>
    public float Probability;
    /// <summary>The predicted label.</summary>
    public bool PredictedLabel;
}

/// <summary>What a regression pipeline gives a prediction engine.</summary>
public sealed class RegressionPrediction
{
    /// <summary>The predicted value.</summary>
    public float Score;
}

/// <summary>A data set of the conformance suite: its task, its width and its train/test split.</summary>
public sealed record ConformanceCase(string Name, TrainingTask Task, int Features, Func<MLContext, (IDataView Train, IDataView Test)> Split)
{
    /// <summary>Fashion-MNIST rows the suite trains on (a subset keeps the suite quick).</summary>
    public const int FashionTrainRows = 3000, FashionTestRows = 1000;

    /// <summary>scikit-learn's iris, wine, digits, breast cancer and diabetes (80/20, seed 1), and a Fashion-MNIST subset.</summary>
    public static IReadOnlyList<ConformanceCase> All { get; } =
    [
        .. SklearnDataset.All.Select(d => new ConformanceCase(d.Name, d.Task, d.Features, ml => d.Split(ml))),
        new("fashion-mnist", TrainingTask.MulticlassClassification, FashionMnist.Pixels, ml =>
            (FashionRows(ml, true, FashionTrainRows), FashionRows(ml, false, FashionTestRows))),
    ];

    /// <summary>The case of a name.</summary>
    public static ConformanceCase Named(string name) => All.Single(c => c.Name == name);

    /// <summary>The input row schema: Rest is a vector of the features after the first.</summary>
    public SchemaDefinition RowSchema()
    {
        var type =
            Task switch
            {
                TrainingTask.MulticlassClassification => typeof(MulticlassRow),
                TrainingTask.BinaryClassification =>
            typeof(BinaryRow),
                _ => typeof(RegressionRow)
            };
        var schema = SchemaDefinition.Create(type);
        schema["Rest"].ColumnType = new VectorDataViewType(NumberDataViewType.Single, Features - 1);
        return schema;
    }

    // Fashion-MNIST images as rows of the suite's shape, labelled with their class names.
    private static IDataView FashionRows(MLContext ml, bool train, int limit)
    {
        var rows =
            FashionMnist.Load(train, limit).Select(e =>
            new MulticlassRow { F0 = e.Features[0], Rest = e.Features[1..], Label = FashionMnist.ClassNames[(int)e.Label] });
        var schema = SchemaDefinition.Create(typeof(MulticlassRow));
        schema["Rest"].ColumnType = new VectorDataViewType(NumberDataViewType.Single, FashionMnist.Pixels - 1);
        return ml.Data.Cache(ml.Data.LoadFromEnumerable(rows.ToArray(), schema));
    }
}

/// <summary>
/// What an ML.NET user relies on, checked on a real data set with the exact pipeline shape of ML.NET's samples
/// (Concatenate, NormalizeMinMax, MapValueToKey, the trainer, MapKeyToValue) and the trainer's default options:
/// the output schema announced before training is the fitted one; every output column is consistent with the scores
/// on every test row; a prediction engine gives what batch scoring gives; Evaluate and CrossValidate work; rows with
/// missing values are skipped in training and score as missing; and the test metric is within a floor of ML.NET's own
/// trainer on the same split. Written once and run in-process by the tests and under mpirun by the test host.
/// </summary>
public static class Conformance
{
    /// <summary>How far below ML.NET's trainer the test metric may be: accuracy points, AUC, R squared.</summary>
    public const double AccuracyFloor = 0.03, AucFloor = 0.02, RSquaredFloor = 0.05;

    /// <summary>Runs every check on <paramref name="case"/>; <paramref name="configure"/> may change the trainer's options.</summary>
    public static IReadOnlyList<CheckResult> Run(ConformanceCase @case, Action<SIDCoTrainer.Options>? configure = null)
    {
        var results = new List<CheckResult>();
        void Check(string name, Func<(bool Ok, string Detail)> body)
        {
            try { var (ok, detail) = body(); results.Add(new($"{@case.Name}/{name}", ok, detail)); }
            catch (Exception e) { results.Add(new($"{@case.Name}/{name}", false, e.GetType().Name + ": " + e.Message)); }
        }
        var ml = new MLContext(seed: 1);
        var (train, test) = @case.Split(ml);
        SIDCoTrainer.Options Configured()
        {
            var o = new SIDCoTrainer.Options { Task = @case.Task };
            configure?.Invoke(o);
            return o;
        }
        var pipeline = Pipeline(ml, @case.Task, ml.Extensions.SIDCoTrainer(Configured()));
        // Two fits that must give the same weights use a fixed exchange: Auto decides from timings whether to compress.
        var fixedOptions = Configured();
        fixedOptions.ExchangeMode = ExchangeMode.Sparse;
        var repeatable = Pipeline(ml, @case.Task, ml.Extensions.SIDCoTrainer(fixedOptions));
        ITransformer model = null!;
        IDataView scored = null!;
        Check("fit", () =>
        {
            model = pipeline.Fit(train);
            scored = ml.Data.Cache(model.Transform(test));
            return (true, $"fingerprint {Sidco(model).WeightsFingerprint}");
        });
        if (model is null) return results;

        Check("schema", () => SameShape(pipeline.GetOutputSchema(Shapes.Of(train.Schema)), Shapes.Of(model.GetOutputSchema(train.Schema))));
        Check("metric-floor", () => MetricFloor(ml, @case, pipeline, model, train, test));
        Check("outputs", () => Outputs(ml, @case.Task, scored));
        Check("prediction-engine", () => PredictionEngine(ml, @case, model, test, scored));
        Check("cross-validate", () => CrossValidate(ml, @case, pipeline, train));
        Check("missing-values", () => MissingValues(ml, @case, repeatable, model, train, test));
        Check("save-load", () => SaveAndLoad(ml, @case.Task, model, train, test, scored));
        return results;
    }

    /// <summary>
    /// The largest difference allowed between a score of the TorchSharp model and of its ONNX form, relative to the score's
    /// size once it exceeds 1 (absolute below, where every probability lies): the two runtimes' matrix products differ in the
    /// last bits, and float32 itself cannot resolve 1e-5 on a regression target in the hundreds (its spacing at 150 is 1.5e-5).
    /// </summary>
    public const double OnnxTolerance = 1e-5;

    // mlContext.Model.Save writes one zip that mlContext.Model.Load reads back without a SIDCo transformer in it (the ONNX
    // form), scoring every test row as the TorchSharp model does: scores within OnnxTolerance, the same predicted labels.
    // Binary and regression columns come back as one-element vectors (ML.NET's OnnxTransformer makes only vectors).
    private static (bool, string) SaveAndLoad(MLContext ml, TrainingTask task, ITransformer model, IDataView train, IDataView test,
        IDataView scored)
    {
        var zip = new MemoryStream();
        ml.Model.Save(model, train.Schema, zip);
        zip.Position = 0;
        var loaded = ml.Model.Load(zip, out _);
        static IEnumerable<ITransformer> All(ITransformer t) => t is IEnumerable<ITransformer> chain ? chain.SelectMany(All) : [t];
        if (All(loaded).OfType<SIDCoTransformer>().Any()) return (false, "the loaded model still holds a SIDCo transformer");
        var again = loaded.Transform(test);
        double worst = 0, worstRelative = 0;
        int labels = 0, rows = 0;
        void Compare(IEnumerable<float> expected, IEnumerable<float> actual)
        {
            foreach (var (e, a) in expected.Zip(actual))
            {
                double d = float.IsNaN(e) && float.IsNaN(a) ? 0 : Math.Abs(e - a);
                worst = Math.Max(worst, d);
                worstRelative = Math.Max(worstRelative, d / Math.Max(1, Math.Abs(e)));
            }
        }
        switch (task)
        {
            case TrainingTask.MulticlassClassification:
                foreach (var (e, a) in scored.GetColumn<float[]>("Score").Zip(again.GetColumn<float[]>("Score"))) { Compare(e, a); rows++; }
                labels = scored.GetColumn<ReadOnlyMemory<char>>("PredictedLabel")
                    .Zip(again.GetColumn<ReadOnlyMemory<char>>("PredictedLabel"))
                    .Count(p => !p.First.Span.SequenceEqual(p.Second.Span));
                break;
            case TrainingTask.BinaryClassification:
                Compare(scored.GetColumn<float>("Score"), again.GetColumn<float[]>("Score").Select(v => v.Single()));
                Compare(scored.GetColumn<float>("Probability"), again.GetColumn<float[]>("Probability").Select(v => v.Single()));
                labels = scored.GetColumn<bool>("PredictedLabel").Zip(again.GetColumn<bool[]>("PredictedLabel")).Count(p =>
                    p.First != p.Second.Single());
                rows = (int)(scored.GetRowCount() ?? 0);
                break;
            default:
                Compare(scored.GetColumn<float>("Score"), again.GetColumn<float[]>("Score").Select(v => v.Single()));
                rows = (int)(scored.GetRowCount() ?? 0);
                break;
        }
        return (worstRelative <= OnnxTolerance && labels == 0 && rows > 0,
            $"{zip.Length} bytes; largest score difference {worst:G3} ({worstRelative:G3} of max(1, |score|)) over {rows} rows; " +
                $"predicted labels differ on {labels}");
    }

    /// <summary>The pipeline of ML.NET's samples around <paramref name="trainer"/>.</summary>
    public static IEstimator<ITransformer> Pipeline(MLContext ml, TrainingTask task, IEstimator<ITransformer> trainer)
    {
        var features =
            ml.Transforms.Concatenate("Features", SklearnDataset.FeatureColumns).Append(ml.Transforms.NormalizeMinMax("Features"));
        return task == TrainingTask.MulticlassClassification
            ? features.Append(ml.Transforms.Conversion.MapValueToKey("Label")).Append(trainer)
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            : features.Append(trainer);
    }

    /// <summary>The SIDCo transformer inside a fitted pipeline.</summary>
    public static SIDCoTransformer Sidco(ITransformer model) => ((IEnumerable<ITransformer>)model).OfType<SIDCoTransformer>().Single();

    /// <summary>ML.NET's own trainer for the task, the floor's reference: SDCA maximum entropy, L-BFGS logistic regression, SDCA
    /// regression.</summary>
    public static (string Name, IEstimator<ITransformer> Trainer) Reference(MLContext ml, TrainingTask task) => task switch
    {
        TrainingTask.MulticlassClassification => ("SdcaMaximumEntropy", ml.MulticlassClassification.Trainers.SdcaMaximumEntropy()),
        TrainingTask.BinaryClassification => ("LbfgsLogisticRegression", ml.BinaryClassification.Trainers.LbfgsLogisticRegression()),
        _ => ("Sdca", ml.Regression.Trainers.Sdca()),
    };

    /// <summary>The task's headline test metric: micro accuracy, AUC or R squared.</summary>
    public static double Metric(MLContext ml, TrainingTask task, IDataView scored) => task switch
    {
        TrainingTask.MulticlassClassification => ml.MulticlassClassification.Evaluate(scored).MicroAccuracy,
        TrainingTask.BinaryClassification => ml.BinaryClassification.Evaluate(scored).AreaUnderRocCurve,
        _ => ml.Regression.Evaluate(scored).RSquared,
    };

    private static (bool, string) MetricFloor(MLContext ml, ConformanceCase c, IEstimator<ITransformer> pipeline, ITransformer model,
        IDataView train, IDataView test)
    {
        var (name, trainer) = Reference(ml, c.Task);
        double ours = Metric(ml, c.Task, model.Transform(test));
        double reference = Metric(ml, c.Task, Pipeline(ml, c.Task, trainer).Fit(train).Transform(test));
        double floor =
            c.Task switch
            {
                TrainingTask.MulticlassClassification => AccuracyFloor,
                TrainingTask.BinaryClassification => AucFloor,
                _ =>
            RSquaredFloor
            };
        string metric =
            c.Task switch { TrainingTask.MulticlassClassification => "accuracy", TrainingTask.BinaryClassification => "AUC", _ => "R2" };
        return (ours >= reference - floor, $"{metric} sidco {ours:F4} {name} {reference:F4} floor {reference - floor:F4}");
    }

    // Every output column against the scores, on every test row.
    private static (bool, string) Outputs(MLContext ml, TrainingTask task, IDataView scored)
    {
        switch (task)
        {
            case TrainingTask.MulticlassClassification:
                {
                    // Label is the MapValueToKey key here; its key values are the class names in key order.
                    VBuffer<ReadOnlyMemory<char>> names = default;
                    scored.Schema["Label"].GetKeyValues(ref names);
                    var classes = names.DenseValues().Select(n => n.ToString()).ToArray();
                    VBuffer<ReadOnlyMemory<char>> slots = default;
                    scored.Schema["Score"].GetSlotNames(ref slots);
                    if (!slots.DenseValues().Select(s => s.ToString()).SequenceEqual(classes)) return (false,
                        "Score's slot names are not the label's key values");
                    var labels = scored.GetColumn<uint>("Label").ToArray();
                    var scores = scored.GetColumn<float[]>("Score").ToArray();
                    var predicted = scored.GetColumn<ReadOnlyMemory<char>>("PredictedLabel").Select(p => p.ToString()).ToArray();
                    int wrong = 0, correct = 0;
                    for (int i = 0; i < scores.Length; i++)
                    {
                        if (predicted[i] != classes[ArgMax(scores[i])]) wrong++;
                        if (labels[i] > 0 && predicted[i] == classes[labels[i] - 1]) correct++;
                    }
                    double accuracy = ml.MulticlassClassification.Evaluate(scored).MicroAccuracy;
                    return (wrong == 0 && Math.Abs(accuracy - (double)correct / scores.Length) < 1e-12,
                        $"PredictedLabel != class of argmax(Score) on {wrong} of {scores.Length} rows; PredictedLabel == Label on " +
                            $"{correct}, " +
                            $"Evaluate accuracy {accuracy:F4}");
                }
            case TrainingTask.BinaryClassification:
                {
                    var labels = scored.GetColumn<bool>("Label").ToArray();
                    var score = scored.GetColumn<float>("Score").ToArray();
                    var probability = scored.GetColumn<float>("Probability").ToArray();
                    var predicted = scored.GetColumn<bool>("PredictedLabel").ToArray();
                    int wrong = 0, correct = 0;
                    for (int i = 0; i < score.Length; i++)
                    {
                        if (predicted[i] != score[i] > 0 || Math.Abs(probability[i] - 1 / (1 + Math.Exp(-score[i]))) > 1e-6) wrong++;
                        if (predicted[i] == labels[i]) correct++;
                    }
                    var metrics = ml.BinaryClassification.Evaluate(scored);
                    return (wrong == 0 && Math.Abs(metrics.Accuracy - (double)correct / score.Length) < 1e-12,
                        $"PredictedLabel/Probability inconsistent with Score on {wrong} of {score.Length} rows; Evaluate accuracy " +
                            $"{metrics.Accuracy:F4}, AUC {metrics.AreaUnderRocCurve:F4}");
                }
            default:
                {
                    var labels = scored.GetColumn<float>("Label").ToArray();
                    var score = scored.GetColumn<float>("Score").ToArray();
                    double mean = labels.Average(l => (double)l);
                    double residual = labels.Zip(score, (l, s) => (double)(l - s) * (l - s)).Sum();
                    double total = labels.Sum(l => (l - mean) * (l - mean));
                    double r2 = 1 - residual / total, reported = ml.Regression.Evaluate(scored).RSquared;
                    return (score.All(float.IsFinite) && Math.Abs(r2 - reported) < 1e-6, $"R2 from Score {r2:F6}, Evaluate {reported:F6}");
                }
        }
    }

    // A prediction engine over the whole pipeline gives batch scoring's outputs, bit for bit, on every test row. Engines are
    // not disposed here: ML.NET disposes the model with its engine, and the model is used after these checks.
    private static (bool, string) PredictionEngine(MLContext ml, ConformanceCase c, ITransformer model, IDataView test, IDataView scored)
    {
        var schema = c.RowSchema();
        int rows = 0, differ = 0;
        switch (c.Task)
        {
            case TrainingTask.MulticlassClassification:
                {
                    var engine = ml.Model.CreatePredictionEngine<MulticlassRow, MulticlassPrediction>(model, inputSchemaDefinition: schema);
                    var batch = ml.Data.CreateEnumerable<MulticlassPrediction>(scored, reuseRowObject: false).ToArray();
                    foreach (var (row, expected) in ml.Data.CreateEnumerable<MulticlassRow>(test, false,
                        schemaDefinition: schema).Zip(batch))
                    {
                        var p = engine.Predict(row);
                        rows++;
                        if (!p.Score.SequenceEqual(expected.Score) || p.PredictedLabel != expected.PredictedLabel) differ++;
                    }
                    break;
                }
            case TrainingTask.BinaryClassification:
                {
                    var engine = ml.Model.CreatePredictionEngine<BinaryRow, BinaryPrediction>(model, inputSchemaDefinition: schema);
                    var batch = ml.Data.CreateEnumerable<BinaryPrediction>(scored, reuseRowObject: false).ToArray();
                    foreach (var (row, expected) in ml.Data.CreateEnumerable<BinaryRow>(test, false, schemaDefinition: schema).Zip(batch))
                    {
                        var p = engine.Predict(row);
                        rows++;
                        if (p.Score != expected.Score || p.Probability != expected.Probability
                            || p.PredictedLabel != expected.PredictedLabel) differ++;
                    }
                    break;
                }
            default:
                {
                    var engine = ml.Model.CreatePredictionEngine<RegressionRow, RegressionPrediction>(model, inputSchemaDefinition: schema);
                    var batch = ml.Data.CreateEnumerable<RegressionPrediction>(scored, reuseRowObject: false).ToArray();
                    foreach (var (row, expected) in ml.Data.CreateEnumerable<RegressionRow>(test, false,
                        schemaDefinition: schema).Zip(batch))
                    {
                        rows++;
                        if (engine.Predict(row).Score != expected.Score) differ++;
                    }
                    break;
                }
        }
        return (rows > 0 && differ == 0, $"{differ} of {rows} rows differ from batch scoring");
    }

    private static (bool, string) CrossValidate(MLContext ml, ConformanceCase c, IEstimator<ITransformer> pipeline, IDataView train)
    {
        const int Folds = 3;
        double[] metrics = c.Task switch
        {
            TrainingTask.MulticlassClassification =>
                ml.MulticlassClassification.CrossValidate(train, pipeline, Folds).Select(f => f.Metrics.MicroAccuracy).ToArray(),
            TrainingTask.BinaryClassification =>
                ml.BinaryClassification.CrossValidate(train, pipeline, Folds).Select(f => f.Metrics.AreaUnderRocCurve).ToArray(),
            _ => ml.Regression.CrossValidate(train, pipeline, Folds).Select(f => f.Metrics.RSquared).ToArray(),
        };
        // Each fold learned: well above chance (accuracy over a uniform guess, AUC over 0.5, R squared over 0).
        double chance = c.Task switch { TrainingTask.MulticlassClassification => 0.5, TrainingTask.BinaryClassification => 0.75, _ => 0.1 };
        return (metrics.Length == Folds && metrics.All(m => m > chance),
            $"folds {string.Join(" ", metrics.Select(m => m.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)))}");
    }

    // A training row with a NaN feature is skipped (the model is bitwise the one trained without it), and a test row with
    // a NaN feature scores as missing: NaN scores, an empty class name (multiclass), false (binary).
    private static (bool, string) MissingValues(MLContext ml, ConformanceCase c, IEstimator<ITransformer> pipeline, ITransformer model,
        IDataView train, IDataView test)
    {
        var schema = c.RowSchema();
        IDataView WithNaN<TRow>(Func<TRow, TRow> spoil) where TRow : class, new()
        {
            var rows = ml.Data.CreateEnumerable<TRow>(train, reuseRowObject: false, schemaDefinition: schema).ToList();
            rows.Insert(rows.Count / 2, spoil(rows[0]));
            return ml.Data.LoadFromEnumerable(rows, schema);
        }
        var spoiled = c.Task switch
        {
            TrainingTask.MulticlassClassification => WithNaN<MulticlassRow>(r => new() { F0 = float.NaN, Rest = r.Rest, Label = r.Label }),
            TrainingTask.BinaryClassification => WithNaN<BinaryRow>(r => new() { F0 = float.NaN, Rest = r.Rest, Label = r.Label }),
            _ => WithNaN<RegressionRow>(r => new() { F0 = float.NaN, Rest = r.Rest, Label = r.Label }),
        };
        long clean = Sidco(pipeline.Fit(train)).WeightsFingerprint, withNaN = Sidco(pipeline.Fit(spoiled)).WeightsFingerprint;
        string missing;
        bool scoresMissing;
        switch (c.Task)
        {
            case TrainingTask.MulticlassClassification:
                {
                    var row = ml.Data.CreateEnumerable<MulticlassRow>(test, false, schemaDefinition: schema).First();
                    row.F0 = float.NaN;
                    var engine = ml.Model.CreatePredictionEngine<MulticlassRow, MulticlassPrediction>(model, inputSchemaDefinition: schema);
                    var p = engine.Predict(row);
                    scoresMissing = p.Score.All(float.IsNaN) && p.PredictedLabel.Length == 0;
                    missing = $"Score [{string.Join(",", p.Score)}], PredictedLabel '{p.PredictedLabel}'";
                    break;
                }
            case TrainingTask.BinaryClassification:
                {
                    var row = ml.Data.CreateEnumerable<BinaryRow>(test, false, schemaDefinition: schema).First();
                    row.F0 = float.NaN;
                    var engine = ml.Model.CreatePredictionEngine<BinaryRow, BinaryPrediction>(model, inputSchemaDefinition: schema);
                    var p = engine.Predict(row);
                    scoresMissing = float.IsNaN(p.Score) && float.IsNaN(p.Probability) && !p.PredictedLabel;
                    missing = $"Score {p.Score}, Probability {p.Probability}, PredictedLabel {p.PredictedLabel}";
                    break;
                }
            default:
                {
                    var row = ml.Data.CreateEnumerable<RegressionRow>(test, false, schemaDefinition: schema).First();
                    row.F0 = float.NaN;
                    var engine = ml.Model.CreatePredictionEngine<RegressionRow, RegressionPrediction>(model, inputSchemaDefinition: schema);
                    var p = engine.Predict(row);
                    scoresMissing = float.IsNaN(p.Score);
                    missing = $"Score {p.Score}";
                    break;
                }
        }
        return (clean == withNaN && scoresMissing,
            $"fingerprint with a NaN row {(clean == withNaN ? "equal" : $"differs ({withNaN} against {clean})")}; a NaN row scores " +
            $"{missing}");
    }

    // Columns, kinds, item types, keys and annotation names of two schema shapes.
    private static (bool, string) SameShape(SchemaShape announced, SchemaShape fitted)
    {
        static string Describe(SchemaShape.Column c) =>
            $"{c.Name}:{c.Kind}:{c.ItemType}:{(c.IsKey ? "key" : "")}[{string.Join(",", c.Annotations.Select(a => a.Name).Order())}]";
        var a = announced.Select(Describe).ToArray();
        var f = fitted.Select(Describe).ToArray();
        var missing = f.Except(a).Concat(a.Except(f)).ToArray();
        return (missing.Length == 0, missing.Length == 0 ? $"{f.Length} columns" : "differ: " + string.Join("; ", missing));
    }

    private static int ArgMax(float[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
