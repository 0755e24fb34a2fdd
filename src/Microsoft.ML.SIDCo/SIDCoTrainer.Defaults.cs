using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo;

public sealed partial class SIDCoTrainer
{
    /// <summary>
    /// The one source of every default: <see cref="Options"/>' field initialisers and the catalog overload's parameters
    /// read these, so a default is stated once (as ML.NET's trainers keep theirs).
    /// </summary>
    internal static class Defaults
    {
        public const string LabelColumnName = "Label";
        public const string FeatureColumnName = "Features";
        public const TrainingTask Task = TrainingTask.MulticlassClassification;
        public const int HiddenLayer = 128;
        public const CompressorKind Compressor = CompressorKind.SidcoExponential;
        public const double Density = CompressorOptions.DefaultDensity;
        public const int Stages = CompressorOptions.DefaultStages;
        public const double DensityWarmupStart = CompressionHookOptions.DefaultDensityWarmupStart;
        public const Communication.WirePrecision WirePrecision = Communication.WirePrecision.Float32;
        public const int Workers = 1;
        public const bool OverlapBackward = true;
        public const double BucketSizeMB = 25;
        public const int WorkersPerRank = 1;
        /// <summary>Fewest entries per worker and step under the automatic density (8 KiB of indices and values).</summary>
        public const long MinimumSelected = 1024;
        /// <summary>
        /// The automatic epochs give at least this many optimizer steps: under the cosine schedule, which decays to zero over
        /// the run, fewer left scikit-learn's digits 1.3 points less accurate (docs/conformance.md measures it).
        /// </summary>
        public const int MinimumSteps = 2000;
        public const int MinimumEpochs = 5;
        public const int MaximumEpochs = 1000;
        /// <summary>The automatic batch: at most <see cref="BatchSize"/> rows, and small enough for this many steps per epoch.</summary>
        public const int MinimumStepsPerEpoch = 16;
        public const int BatchSize = 64;
        public const OptimizerKind Optimizer = OptimizerKind.Sgd;
        public const double LearningRate = 0.01;
        public const LearningRateSchedule Schedule = LearningRateSchedule.Cosine;
        public const double Momentum = 0.9;
        public const int Seed = 1;
        public const int CheckpointInterval = 500;
        public const string Device = "cpu";
        /// <summary>Five minutes: longer than any start-up or checkpoint wait of a sound job, short beside a lost night.</summary>
        public const double CollectiveTimeoutSeconds = 300;
    }
}
