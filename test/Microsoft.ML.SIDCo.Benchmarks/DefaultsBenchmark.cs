using System.Globalization;
using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>
/// The trainer with its default options on every conformance data set, beside ML.NET's own trainer on the same 80/20
/// split: the pipeline of ML.NET's samples, 1 and 2 in-process workers, several seeds of the model (the split's seed
/// stays 1). Accuracy for multiclass, AUC for binary, R squared for regression; the floor is the conformance suite's.
///   defaults [--datasets iris,wine,digits,breast-cancer,diabetes,fashion-mnist] [--workers 1,2] [--seeds 1,2,3,4,5] [--json FILE]
/// </summary>
internal static class DefaultsBenchmark
{
    private sealed record Row(string Dataset, string Metric, string Reference, double ReferenceValue, double Floor, int Workers, int Seed,
        double Value, int Epochs, int Steps, double Seconds);

    public static int Run(BenchArgs a)
    {
        var results = new List<Row>();
        foreach (var name in a.List("datasets", "iris,wine,digits,breast-cancer,diabetes,fashion-mnist"))
        {
            var c = ConformanceCase.Named(name);
            var ml = new MLContext(seed: 1);
            var (train, test) = c.Split(ml);
            var (referenceName, reference) = Conformance.Reference(ml, c.Task);
            double referenceValue = Conformance.Metric(ml, c.Task, Conformance.Pipeline(ml, c.Task, reference).Fit(train).Transform(test));
            double floor =
                referenceValue - (c.Task switch
                {
                    TrainingTask.MulticlassClassification => Conformance.AccuracyFloor,
                    TrainingTask.BinaryClassification => Conformance.AucFloor,
                    _ => Conformance.RSquaredFloor
                });
            string metric =
                c.Task switch
                {
                    TrainingTask.MulticlassClassification => "accuracy",
                    TrainingTask.BinaryClassification => "AUC",
                    _ =>
                "R2"
                };
            foreach (int workers in a.Ints("workers", "1,2"))
                foreach (int seed in a.Ints("seeds", "1,2,3,4,5"))
                {
                    var watch = System.Diagnostics.Stopwatch.StartNew();
                    var model =
                        Conformance.Pipeline(ml, c.Task,
                        ml.Extensions.SIDCoTrainer(new SIDCoTrainer.Options { Task = c.Task, Workers = workers, Seed = seed })).Fit(train);
                    double value = Conformance.Metric(ml, c.Task, model.Transform(test));
                    var history = Conformance.Sidco(model).History.Epochs;
                    results.Add(new Row(name, metric, referenceName, referenceValue, floor, workers, seed, value, history.Count,
                        history.Sum(e => e.Steps), watch.Elapsed.TotalSeconds));
                    Console.WriteLine($"{name} workers {workers} seed {seed}: {metric} {value:F4} ({referenceName} {referenceValue:F4}, " +
                        $"floor {floor:F4})");
                }
        }
        static string F(double v) => v.ToString("F4", CultureInfo.InvariantCulture);
        var table =
            Bench.Table(["data set", "metric", "ML.NET trainer", "its value", "floor", "workers",
            "SIDCo, defaults (min / median / max over seeds)", "runs at or above the floor", "epochs x steps"],
            results.GroupBy(r => (r.Dataset, r.Workers)).Select(g =>
            {
                var v = g.Select(r => r.Value).Order().ToArray();
                var first = g.First();
                return new[]
                {
                    first.Dataset, first.Metric, first.Reference, F(first.ReferenceValue), F(first.Floor),
                        first.Workers.ToString(CultureInfo.InvariantCulture),
                    $"{F(v[0])} / {F(v[v.Length / 2])} / {F(v[^1])}", $"{g.Count(r => r.Value >= r.Floor)} of {v.Length}",
                        $"{first.Epochs} x {first.Steps / first.Epochs}",
                };
            }));
        Bench.WriteResults(a.Get("json"), results, table);
        return 0;
    }
}
