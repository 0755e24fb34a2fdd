using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Samples;

namespace Microsoft.ML.SIDCo.TestHost;

/// <summary>Training scenarios shared by the in-process tests and the mpirun host, so both run the same code.</summary>
public static class Scenarios
{
    /// <summary>The settings of the acceptance test: ConvNet, SIDCo-E at density 0.01, 3,000 training images.</summary>
    /// <summary>
    /// The dense baseline (compressor none) on the sample's ConvNet, with or without the exchange overlapped with backward
    /// (8 KiB buckets, so that the 80k-parameter model has several): the weights' fingerprint.
    /// </summary>
    public static long TrainDense(MLContext ml, IDataView train, int workers, bool overlap) =>
        TrainOverlapped(ml, train, workers, overlap, perBucket: false).Fingerprint;

    /// <summary>
    /// The sample's ConvNet with 8 KiB buckets: the dense baseline, or SIDCo-E compressed per bucket; with or without overlap.
    /// </summary>
    public static (long Fingerprint, SIDCoTransformer Model) TrainOverlapped(MLContext ml, IDataView train, int workers, bool overlap,
        bool perBucket)
    {
        var options = SmallFashionMnist(workers);
        if (!perBucket)
        {
            options.Compressor = CompressorKind.None;
            options.ExchangeMode = Microsoft.ML.SIDCo.Communication.ExchangeMode.Dense;
        }
        options.CompressPerBucket = perBucket;
        options.Epochs = 2;
        options.OverlapBackward = overlap;
        options.BucketSizeMB = 8.0 / 1024;
        options.ReplicaCheckInterval = 1;
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Extensions.SIDCoTrainer(options)).Fit(train);
        return (model.LastTransformer.WeightsFingerprint, model.LastTransformer);
    }

    public static SIDCoTrainer.Options SmallFashionMnist(int workers) => new()
    {
        Model = SIDCoModels.ConvNet(),
        Compressor = CompressorKind.SidcoExponential,
        Density = 0.01,
        // The sparse path is what these tests exercise; Auto may rightly pick dense for an
        // 80k-parameter model on shared memory, where latency dominates.
        ExchangeMode = Microsoft.ML.SIDCo.Communication.ExchangeMode.Sparse,
        Workers = workers,
        Epochs = 8,
        BatchSize = 32,
        LearningRate = 0.05,
        Momentum = 0.9,
        Schedule = Microsoft.ML.SIDCo.Training.LearningRateSchedule.Constant,
        Seed = 7,
        ReplicaCheckInterval = 1,
    };

    public static (IDataView Train, IDataView Test) LoadData(MLContext ml, int train, int test)
        => (ml.Data.LoadFromEnumerable(FashionMnist.Load(train: true, limit: train)),
            ml.Data.LoadFromEnumerable(FashionMnist.Load(train: false, limit: test)));

    /// <summary>
    /// The Transformer on 4,000 generated topic documents with SIDCo-E at density 0.01 and a sparse exchange (so that MPI ranks
    /// and in-process workers add in the same order); returns the accuracy on 1,000 others and the weights' fingerprint.
    /// </summary>
    public static (double Accuracy, long Fingerprint) TrainTopicTransformer(MLContext ml, int workers)
    {
        var train = ml.Data.LoadFromEnumerable(TopicSequences.Generate(4000, seed: 1));
        var test = ml.Data.LoadFromEnumerable(TopicSequences.Generate(1000, seed: 2));
        var options = new SIDCoTrainer.Options
        {
            Model = Models.SIDCoModels.Transformer(TopicSequences.Steps, TopicSequences.Vocabulary, width: 32, heads: 4, layers: 2),
            Compressor = Compression.CompressorKind.SidcoExponential,
            Density = 0.01,
            ExchangeMode = Communication.ExchangeMode.Sparse,
            Workers = workers,
            Epochs = 4,
            BatchSize = 32,
            LearningRate = 0.05,
        };
        var (_, accuracy, sidco) = TrainAndEvaluate(ml, options, train, test);
        return (accuracy, sidco.WeightsFingerprint);
    }

    /// <summary>MapValueToKey(Label) then the trainer: what an ML.NET user writes.</summary>
    public static (ITransformer Model, double Accuracy, SIDCoTransformer Sidco) TrainAndEvaluate(MLContext ml,
        SIDCoTrainer.Options options, IDataView train, IDataView test)
    {
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Extensions.SIDCoTrainer(options));
        var model = pipeline.Fit(train);
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        return (model, metrics.MacroAccuracy >= 0 ? metrics.MicroAccuracy : double.NaN, model.LastTransformer);
    }

    /// <summary>Scores of the first <paramref name="rows"/> test images, in row order.</summary>
    public static float[] Scores(MLContext ml, ITransformer keyMapper, SIDCoTransformer model, IDataView test, int rows)
    {
        var scored = model.Transform(keyMapper.Transform(test));
        return scored.GetColumn<float[]>("Score").Take(rows).SelectMany(s => s).ToArray();
    }
}
