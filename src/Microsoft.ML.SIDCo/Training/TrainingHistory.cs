using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>Metrics of one epoch, averaged over workers and steps.</summary>
public sealed record EpochMetrics
{
    /// <summary>Epoch number (1-based).</summary>
    public int Epoch { get; init; }
    /// <summary>Steps in the epoch.</summary>
    public int Steps { get; init; }
    /// <summary>Mean training loss.</summary>
    public double Loss { get; init; }
    /// <summary>Training accuracy (classification only).</summary>
    public double? Accuracy { get; init; }
    /// <summary>Validation loss, when a validation set was given.</summary>
    public double? ValidationLoss { get; init; }
    /// <summary>Validation accuracy, when a validation set was given (classification only).</summary>
    public double? ValidationAccuracy { get; init; }
    /// <summary>Mean fraction of gradient entries each worker sent.</summary>
    public double AchievedDensity { get; init; }
    /// <summary>Mean compression estimation quality (achieved / target density).</summary>
    public double AchievedOverTarget { get; init; }
    /// <summary>Mean bytes one worker sent per step.</summary>
    public double BytesPerStep { get; init; }
    /// <summary>Bytes one worker would send per step with a dense ring allreduce.</summary>
    public double DenseBytesPerStep { get; init; }
    /// <summary>Mean forward + backward + optimizer time per step (ms).</summary>
    public double ComputeMs { get; init; }
    /// <summary>Mean compression time per step (ms).</summary>
    public double CompressMs { get; init; }
    /// <summary>
    /// Median compression time per step (ms): the median of each worker's steps in this epoch (those this
    /// process ran, after a resume), averaged over the workers. <see cref="CompressMs"/> is the mean of the same
    /// times; where workers share cores, a step on which the scheduler runs another worker inside the
    /// compression counts that worker's time slice too, and a few such steps move the mean more than the median.
    /// </summary>
    public double CompressMsMedian { get; init; }
    /// <summary>Mean exchange time per step (ms).</summary>
    public double CommunicateMs { get; init; }
    /// <summary>Mean exchange time per step predicted by the cost model (ms).</summary>
    public double PredictedCommunicateMs { get; init; }
    /// <summary>
    /// The part of <see cref="CommunicateMs"/> spent waiting for the slowest worker to reach the exchange (ms): the
    /// time in the counts allgather that opens a sparse exchange. It comes from uneven compute, not from the link,
    /// so the cost model leaves it out; dense steps hold their wait inside the allreduce and add nothing here.
    /// </summary>
    public double WaitMs { get; init; }
    /// <summary>Mean wall time per step (ms).</summary>
    public double StepMs { get; init; }
    /// <summary>Steps on which a sparse exchange was used, as a fraction.</summary>
    public double SparseFraction { get; init; }
    /// <summary>Mean number of threshold-estimation stages per step (SIDCo's adaptive stages; 1 for the other compressors and for dense
    /// steps).</summary>
    public double Stages { get; init; }
    /// <summary>Worker contributions dropped for non-finite values.</summary>
    public int SkippedContributions { get; init; }
    /// <summary>Wall time of the epoch (s).</summary>
    public double Seconds { get; init; }
}

/// <summary>The per-epoch record of a training run, exportable as JSON.</summary>
public sealed class TrainingHistory
{
    private static readonly JsonSerializerOptions s_json =
        new()
        {
            WriteIndented = true,
            PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull
        };

    /// <summary>Creates a history.</summary>
    public TrainingHistory(IEnumerable<EpochMetrics>? epochs = null) => Epochs = (epochs ?? []).ToList();

    /// <summary>One entry per completed epoch.</summary>
    public List<EpochMetrics> Epochs { get; }

    /// <summary>The history as JSON (camelCase fields).</summary>
    public string ToJson() => JsonSerializer.Serialize(Epochs, s_json);

    /// <summary>Parses JSON written by <see cref="ToJson"/>.</summary>
    public static TrainingHistory FromJson(string json) => new(JsonSerializer.Deserialize<List<EpochMetrics>>(json, s_json) ?? []);
}
