namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// Keeps SIDCo's achieved/target density near 1 by moving the number of estimation stages.
/// </summary>
/// <remarks>
/// Every <c>interval</c> calls it averages achieved/target; outside [1 - tol, 1 + tol] it moves the stage count by one.
/// The direction that helps depends on the tail: on heavy tails more stages lower the achieved density,
/// on light tails they raise it. So the controller does not assume a direction: it starts with the
/// heavy-tail guess and then learns the sign from the measured effect of its own last move, and it
/// bounces off the stage limits instead of getting stuck there.
/// </remarks>
public sealed class AdaptiveStageController
{
    private readonly int _interval;
    private readonly double _tolerance;
    private readonly int _maxStages;
    private double _windowSum;
    private int _windowCount;
    private int _lastMove;
    private double _lastLogRatio = double.NaN;

    /// <summary>Creates a controller starting at <paramref name="initialStages"/>.</summary>
    public AdaptiveStageController(int initialStages, int maxStages, int interval = 5, double tolerance = 0.2)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxStages, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(interval, 1);
        Stages = Math.Clamp(initialStages, 1, maxStages);
        _maxStages = maxStages;
        _interval = interval;
        _tolerance = tolerance;
    }

    /// <summary>The stage count to use for the next call.</summary>
    public int Stages { get; private set; }

    /// <summary>+1 when more stages lower the achieved density (heavy tails), -1 when they raise it (light tails).</summary>
    public int MoreStagesLowerDensity { get; private set; } = 1;

    /// <summary>Number of times the stage count changed.</summary>
    public int Adjustments { get; private set; }

    /// <summary>Records one call's achieved/target ratio; every interval calls, may move <see cref="Stages"/>.</summary>
    public void Observe(double achievedOverTarget)
    {
        if (!double.IsFinite(achievedOverTarget)) return;
        _windowSum += achievedOverTarget;
        if (++_windowCount < _interval) return;
        double mean = _windowSum / _windowCount;
        _windowSum = 0; _windowCount = 0;
        double logRatio = Math.Log(Math.Max(mean, 1e-9));

        // Learn the direction from what the previous move did to the ratio.
        if (_lastMove != 0 && !double.IsNaN(_lastLogRatio))
        {
            double change = logRatio - _lastLogRatio;
            if (Math.Abs(change) > 0.02) MoreStagesLowerDensity = _lastMove * change < 0 ? 1 : -1;
        }
        _lastLogRatio = logRatio;
        _lastMove = 0;
        if (mean >= 1 - _tolerance && mean <= 1 + _tolerance) return;

        int wanted = mean > 1 ? MoreStagesLowerDensity : -MoreStagesLowerDensity;
        int next = Stages + wanted;
        if (next < 1 || next > _maxStages)
        {
            // At a limit the assumed direction cannot be followed: try the other one (it may be the right one).
            MoreStagesLowerDensity = -MoreStagesLowerDensity;
            wanted = -wanted;
            next = Stages + wanted;
            if (next < 1 || next > _maxStages) return;
        }
        Stages = next;
        _lastMove = wanted;
        Adjustments++;
    }

    /// <summary>Writes the full controller state.</summary>
    public void Save(BinaryWriter w)
    {
        w.Write(Stages); w.Write(MoreStagesLowerDensity); w.Write(Adjustments);
        w.Write(_windowSum); w.Write(_windowCount); w.Write(_lastMove); w.Write(_lastLogRatio);
    }

    /// <summary>Restores state written by <see cref="Save"/>.</summary>
    public void Load(BinaryReader r)
    {
        int stages = r.ReadInt32(), dir = r.ReadInt32(), adj = r.ReadInt32();
        double sum = r.ReadDouble(); int count = r.ReadInt32(), move = r.ReadInt32(); double last = r.ReadDouble();
        if (stages < 1 || stages > _maxStages) throw new InvalidDataException($"Saved stage count {stages} is outside [1, {_maxStages}].");
        (Stages, MoreStagesLowerDensity, Adjustments, _windowSum, _windowCount, _lastMove, _lastLogRatio) = (stages, dir, adj, sum, count, move, last);
    }

    /// <summary>Forgets the window (keeps the stage count and learned direction).</summary>
    public void ResetWindow() { _windowSum = 0; _windowCount = 0; }
}
