using Microsoft.ML.SIDCo.Communication;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>Which route a step of <see cref="CompressionPayoff"/>'s run takes.</summary>
internal enum PayoffRoute
{
    /// <summary>Compress and exchange the selection (outside the calibration, the route once compression pays).</summary>
    Compress,
    /// <summary>A calibration step that compresses: its compress time and exchange (without the wait) are timed.</summary>
    ProbeCompressed,
    /// <summary>A calibration step that exchanges the whole gradient densely, after a barrier, and is timed.</summary>
    ProbeDense,
    /// <summary>Compression did not pay: the whole gradient (with any residual) is exchanged densely.</summary>
    Dense,
}

/// <summary>The workers' agreed timings of the two routes and what was chosen.</summary>
/// <param name="CompressedMs">Compressing plus the sparse exchange, without the wait for the slowest worker (the slowest
/// worker's median).</param>
/// <param name="DenseMs">The dense exchange of the whole gradient after a barrier (the slowest worker's median).</param>
/// <param name="SkipsCompression">True when the dense route was no slower: compression is off for the rest of the run.</param>
/// <param name="Step">The step at whose end the workers agreed.</param>
internal readonly record struct PayoffDecision(double CompressedMs, double DenseMs, bool SkipsCompression, long Step);

/// <summary>
/// <see cref="ExchangeMode.Auto"/>'s question before the per-step one: does compressing pay at all on these links? The
/// cost model answers which exchange moves a selection faster, but not whether selecting was worth its time: on a fast
/// link the dense exchange of the whole gradient can take less than the compression alone, and it loses nothing. So the
/// first <see cref="Rounds"/> pairs of steps at the target density alternate the two routes, timed as they run (the
/// compressed route without the wait for the slowest worker, the dense one after a barrier), the workers agree on the
/// slowest worker's medians, and the rest of the run exchanges densely when that is no slower. One decision per run
/// (a resumed run decides again); the window's steps are counted from the step number, so every worker reaches the
/// agreement at the same step.
/// </summary>
internal sealed class CompressionPayoff(ICommunicator comm, long firstStep)
{
    /// <summary>Pairs of calibration steps (one compressed, one dense): an odd median of each route.</summary>
    internal const int Rounds = 3;

    private readonly double[] _compressed = new double[Rounds];
    private readonly double[] _dense = new double[Rounds];
    private int _compressedCount, _denseCount;
    private long _windowStart = -1;

    /// <summary>The agreement, once made.</summary>
    public PayoffDecision? Decision { get; private set; }

    /// <summary>The route step <paramref name="step"/> takes (the window opens at the first step at or after the first
    /// compressed one that this run makes).</summary>
    public PayoffRoute RouteAt(long step)
    {
        if (Decision is { } d) return d.SkipsCompression ? PayoffRoute.Dense : PayoffRoute.Compress;
        if (step < firstStep) return PayoffRoute.Compress;
        if (_windowStart < 0) _windowStart = step;
        return (step - _windowStart) % 2 == 0 ? PayoffRoute.ProbeCompressed : PayoffRoute.ProbeDense;
    }

    /// <summary>
    /// Records a calibration step's timings (a dropped contribution records nothing) and, at the window's last step,
    /// agrees with the other workers (collective: every worker calls it for the same steps).
    /// </summary>
    public void Observe(long step, PayoffRoute route, in GradientHookStats stats)
    {
        if (route is not (PayoffRoute.ProbeCompressed or PayoffRoute.ProbeDense)) return;
        if (!stats.Skipped)
        {
            if (route == PayoffRoute.ProbeCompressed && _compressedCount < Rounds)
                _compressed[_compressedCount++] = stats.CompressMs + stats.CommunicateMs - stats.WaitMs;
            else if (route == PayoffRoute.ProbeDense && _denseCount < Rounds)
                _dense[_denseCount++] = stats.CommunicateMs;
        }
        if (step - _windowStart + 1 < 2 * Rounds) return;
        var all = new double[2 * comm.Size];
        comm.AllGather<double>([Median(_compressed, _compressedCount), Median(_dense, _denseCount)], all);
        double compressed = SlowestOf(all, 0), dense = SlowestOf(all, 1);
        // No timing of one route on any worker (every contribution dropped): keep compressing, as configured.
        bool skip = !double.IsNaN(compressed) && !double.IsNaN(dense) && dense <= compressed;
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
