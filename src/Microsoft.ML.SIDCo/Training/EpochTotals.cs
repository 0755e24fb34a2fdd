using System.Runtime.InteropServices;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>
/// A worker's running totals of the epoch in progress. They are summed over the worker's steps, then over the workers when
/// the epoch closes (one allreduce of <see cref="AsSpan"/>). A checkpoint keeps each rank's, so a resumed epoch reports all
/// its steps.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct EpochTotals
{
    /// <summary>How many values the totals hold (a checkpoint stores this many per rank, in declaration order).</summary>
    public const int Length = 16;

    public double LossTimesExamples;
    public double Correct;
    public double Examples;
    public double ComputeMs;
    public double CompressMs;
    public double CommunicateMs;
    public double PredictedCommunicateMs;
    public double Selected;
    public double BytesSent;
    public double AchievedOverTarget;
    public double SparseSteps;
    public double SkippedContributions;
    public double Steps;
    public double StepMs;
    public double Stages;
    public double WaitMs;

    /// <summary>The totals as one span in declaration order, for the allreduce and the checkpoint.</summary>
    public Span<double> AsSpan() => MemoryMarshal.CreateSpan(ref LossTimesExamples, Length);

    /// <summary>Adds one step of <paramref name="examples"/> rows.</summary>
    public void Add(double loss, long correct, int examples, double computeMs, double stepMs, in GradientHookStats hook)
    {
        LossTimesExamples += loss * examples;
        Correct += correct;
        Examples += examples;
        ComputeMs += computeMs;
        CompressMs += hook.CompressMs;
        CommunicateMs += hook.CommunicateMs;
        PredictedCommunicateMs += hook.PredictedCommunicateMs;
        Selected += hook.Selected;
        BytesSent += hook.BytesSent;
        AchievedOverTarget += hook.AchievedOverTarget;
        SparseSteps += hook.Mode == Communication.ExchangeMode.Sparse ? 1 : 0;
        SkippedContributions += hook.Skipped ? 1 : 0;
        Steps += 1;
        StepMs += stepMs;
        Stages += hook.Stages;
        WaitMs += hook.WaitMs;
    }

    /// <summary>The mean training loss so far.</summary>
    public readonly double MeanLoss => LossTimesExamples / Examples;
}
