using Microsoft.ML.SIDCo.Communication;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>Which route a step of <see cref="CompressionPayoff"/>'s run takes.</summary>
internal enum PayoffRoute
{
    /// <summary>Compress and exchange the selection (outside the calibration, the route once compression pays).</summary>
    Compress,
    /// <summary>A calibration step that compresses, timed whole.</summary>
    ProbeCompressed,
    /// <summary>A calibration step that exchanges the whole gradient densely (error feedback's residual waits), timed whole.</summary>
    ProbeDense,
    /// <summary>Compression did not pay: the whole gradient is exchanged densely.</summary>
    Dense,
}

/// <summary>The workers' agreed timings of the two routes and what was chosen.</summary>
/// <param name="CompressedMs">A compressed step's wall time (the slowest worker's median).</param>
/// <param name="DenseMs">A dense step's wall time (the slowest worker's median).</param>
/// <param name="SkipsCompression">True unless compressed steps were faster by more than
/// <see cref="CompressionPayoff.TieMargin"/>: compression is off for the rest of the run.</param>
/// <param name="Step">The step at whose end the workers agreed.</param>
internal readonly record struct PayoffDecision(double CompressedMs, double DenseMs, bool SkipsCompression, long Step);

/// <summary>
/// <see cref="ExchangeMode.Auto"/>'s question before the per-step one: does compressing pay at all on these links? The
/// cost model answers which exchange moves a selection faster, but not whether selecting was worth its time: on a fast
/// link the dense exchange of the whole gradient can cost less than the compression, and it loses nothing. So, after
/// <see cref="DefaultDelaySteps"/> steps at the target density, <see cref="Rounds"/> pairs of steps alternate the two
/// routes and each step is timed whole (from the end of the previous step's exchange to the end of its own: compute,
/// compression, exchange and the wait for the slowest worker, which is what a user's step costs); the workers agree on
/// the slowest worker's medians, and the rest of the run exchanges densely unless compressed steps were faster by more
/// than <see cref="TieMargin"/>. One decision per run (a resumed run decides again); the window's steps are counted
/// from the step number, so every worker reaches the agreement at the same step.
/// </summary>
internal sealed class CompressionPayoff(ICommunicator comm, long firstStep)
{
    /// <summary>Pairs of calibration steps (one compressed, one dense): an odd median of each route.</summary>
    internal const int Rounds = 3;

    /// <summary>
    /// Steps at the target density before the calibration: a process's first steps time its start-up (code compiled and
    /// then recompiled by tiered compilation, first touches of memory, connections opened, other workers still starting on
    /// shared cores), which slowed the compression tens of times over on the emulated cluster (docs/distributed.md).
    /// </summary>
    internal const int DefaultDelaySteps = 50;

    /// <summary>
    /// How much faster compressed steps must be for compression to stay. A tie goes to the dense exchange: it loses no
    /// information, where each compressed step makes less progress (docs/distributed.md), and three timed steps of each
    /// route on shared cores do not resolve a few per cent.
    /// </summary>
    internal const double TieMargin = 0.05;

    private readonly double[] _compressed = new double[Rounds];
    private readonly double[] _dense = new double[Rounds];
    private int _compressedCount, _denseCount;
    private long _windowStart = -1;

    /// <summary>The agreement, once made.</summary>
    public PayoffDecision? Decision { get; private set; }

    /// <summary>The route step <paramref name="step"/> takes: the window opens at the first step this run makes at or after
    /// the first step given to the constructor (where the run starts, or resumes, later).</summary>
    public PayoffRoute RouteAt(long step)
    {
        if (Decision is { } d) return d.SkipsCompression ? PayoffRoute.Dense : PayoffRoute.Compress;
        if (step < firstStep) return PayoffRoute.Compress;
        if (_windowStart < 0) _windowStart = step;
        return (step - _windowStart) % 2 == 0 ? PayoffRoute.ProbeCompressed : PayoffRoute.ProbeDense;
    }

    /// <summary>
    /// Records a calibration step's wall time <paramref name="stepMs"/> (NaN when unknown; a dropped contribution records
    /// nothing) and, at the window's last step, agrees with the other workers (collective: every worker calls it for the
    /// same steps).
    /// </summary>
    public void Observe(long step, PayoffRoute route, bool skipped, double stepMs)
    {
        if (route is not (PayoffRoute.ProbeCompressed or PayoffRoute.ProbeDense)) return;
        if (!skipped && double.IsFinite(stepMs))
        {
            if (route == PayoffRoute.ProbeCompressed && _compressedCount < Rounds) _compressed[_compressedCount++] = stepMs;
            else if (route == PayoffRoute.ProbeDense && _denseCount < Rounds) _dense[_denseCount++] = stepMs;
        }
        if (step - _windowStart + 1 < 2 * Rounds) return;
        var all = new double[2 * comm.Size];
        comm.AllGather<double>([Median(_compressed, _compressedCount), Median(_dense, _denseCount)], all);
        double compressed = SlowestOf(all, 0), dense = SlowestOf(all, 1);
        // No timing of one route on any worker (every contribution dropped): keep compressing, as configured.
        bool skip = !double.IsNaN(compressed) && !double.IsNaN(dense) && compressed * (1 + TieMargin) >= dense;
        Decision = new PayoffDecision(compressed, dense, skip, step);
    }

    // The largest of every worker's figure at position `at` of its pair, ignoring workers without one (NaN).
    private static double SlowestOf(double[] all, int at)
    {
        double slowest = double.NaN;
        for (int i = at; i < all.Length; i += 2)
            if (!double.IsNaN(all[i]) && !(all[i] <= slowest)) slowest = all[i];
        return slowest;
    }

    private static double Median(double[] values, int count)
    {
        if (count == 0) return double.NaN;
        var sorted = values[..count];
        Array.Sort(sorted);
        return count % 2 == 1 ? sorted[count / 2] : (sorted[count / 2 - 1] + sorted[count / 2]) / 2;
    }
}
