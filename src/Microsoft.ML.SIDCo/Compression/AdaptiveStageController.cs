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
/// Stages are coarse: the ratios of neighbouring stage counts can straddle the band or sit on the same side of it.
/// Once a move would go back to a stage count already seen out of band, or no move is possible, the controller keeps M
/// and calibrates the density the estimator targets instead (delta_eff = delta x <see cref="Calibration"/>, corrected by
/// the window's ratio); thresholds fall monotonically with delta, so this converges.
/// Once a calibrated window lands in the band the controller switches to <see cref="Tracking"/>: every call then nudges
/// the calibration by a small step against its own excess (achieved/target - 1). Small steps, because under error
/// feedback unsent entries pile up just below the threshold and a window-sized step releases the pile in one call; and
/// proportional to the excess, so the long-run mean of achieved/target (what the bytes follow) settles at 1.
/// On large buffers a stage beyond <see cref="FreeStages"/> costs a pass while the calibration costs nothing, so there
/// small misses are calibrated (<see cref="StageMoveFactor"/>); windows never span a change of the target
/// (<see cref="TargetMoved"/>). docs/method.md ("Adaptive stages") gives the measurements behind each rule.
/// </remarks>
internal sealed class AdaptiveStageController
{
    private readonly int _interval;
    private readonly double _tolerance;
    private readonly int _maxStages;
    private double _windowSum;
    private int _windowCount;
    private int _lastMove;
    private double _lastLogRatio = double.NaN;
    private readonly Dictionary<int, double> _seen = new();
    private bool _passesCostly = true;
    private double _calLow = double.NaN, _calHigh = double.NaN; // calibrations seen below / above the band at the current stage count
    // The last calibrated window (log calibration, log ratio, stage count), for the secant step.
    private double _secantLogCal = double.NaN, _secantLogRatio = double.NaN;
    private int _secantStages;

    /// <summary>The calibration stays within [1 / this, this]: a larger factor would mean the fit, not the target, is wrong.</summary>
    public const double MaxCalibration = 64;

    /// <summary>A stage move that changes the window's ratio by less than this (in log) did nothing useful.</summary>
    public const double IneffectiveMove = 0.05;

    /// <summary>
    /// On a large buffer a stage beyond <see cref="FreeStages"/> is added only while the window misses the target by more
    /// than this factor; a smaller miss is calibrated. Both reach the band, but each such stage is another pass over the
    /// gradient while the calibration is free, and a threshold at the same achieved density selects the same entries
    /// however many stages estimated it. Stages are for a fit that is far off (a heavy tail at one stage); the factor sits
    /// above the misses two-stage SIDCo-GP and SIDCo-P show after a density warm-up (docs/method.md).
    /// </summary>
    public const double StageMoveFactor = 8;

    /// <summary>Stage counts up to this cost no pass of their own (the second stage reuses the measuring pass).</summary>
    public const int FreeStages = 2;

    /// <summary>Calibration change per call in tracking, as a fraction of that call's excess: ln c -= gain x (ratio - 1).</summary>
    public const double TrackingGain = 0.05;

    /// <summary>The excess used by one tracking step is clamped to [-1, this], so that one burst cannot swing the calibration.</summary>
    public const double TrackingMaxExcess = 3;

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

    /// <summary>Factor applied to the target density once stage moves alone cannot reach the band (1 until then), in [1 /
    /// <see cref="MaxCalibration"/>, <see cref="MaxCalibration"/>].</summary>
    public double Calibration { get; private set; } = 1;

    /// <summary>True once the calibration has reached the band: the stage count is fixed and every call adjusts the calibration a
    /// little.</summary>
    public bool Tracking { get; private set; }

    /// <summary>Records one call's achieved/target ratio: in <see cref="Tracking"/>, adjusts the calibration; otherwise, every interval
    /// calls, may move <see cref="Stages"/> or the calibration.</summary>
    /// <param name="achievedOverTarget">The call's selected count over its target count.</param>
    /// <param name="passesCostly">
    /// Whether a pass over the buffer costs more than the call's fixed work: then a stage beyond
    /// <see cref="FreeStages"/> is added only for a miss beyond <see cref="StageMoveFactor"/>.
    /// </param>
    public void Observe(double achievedOverTarget, bool passesCostly = true)
    {
        if (!double.IsFinite(achievedOverTarget)) return;
        _passesCostly = passesCostly;
        if (Tracking)
        {
            double excess = Math.Clamp(achievedOverTarget - 1, -1, TrackingMaxExcess);
            Calibration = Math.Clamp(Calibration * Math.Exp(-TrackingGain * excess), 1 / MaxCalibration, MaxCalibration);
            return;
        }
        _windowSum += achievedOverTarget;
        if (++_windowCount < _interval) return;
        double mean = _windowSum / _windowCount;
        _windowSum = 0; _windowCount = 0;
        double logRatio = Math.Log(Math.Max(mean, 1e-9));

        // Learn the direction from what the previous move did to the ratio.
        bool ineffective = false;
        if (_lastMove != 0 && !double.IsNaN(_lastLogRatio))
        {
            double change = logRatio - _lastLogRatio;
            if (Math.Abs(change) > 0.02) MoreStagesLowerDensity = _lastMove * change < 0 ? 1 : -1;
            ineffective = Math.Abs(change) < IneffectiveMove
                // a costly stage that left a gross miss
                || (_lastMove > 0 && _passesCostly && Stages > FreeStages && !WithinStageMoveFactor(mean));
        }
        int moved = _lastMove;
        _lastLogRatio = logRatio;
        _lastMove = 0;
        if (Calibration == 1) _seen[Stages] = mean;
        if (mean >= 1 - _tolerance && mean <= 1 + _tolerance)
        {
            Tracking = Calibration != 1;
            return;
        }

        // A stage move that left the ratio where it was will not be helped by the next one either (seen
        // while the density warm-up moves the target, where a first stage that over-selects sets the
        // ratio whatever M is): undo an added stage, since each costs a pass, and calibrate instead. The
        // same for a costly stage that left a gross miss: the calibration closes what it did not.
        if (Calibration == 1 && ineffective)
        {
            if (moved > 0) { Stages--; Adjustments++; }
        }
        else if (Calibration == 1)
        {
            int wanted = mean > 1 ? MoreStagesLowerDensity : -MoreStagesLowerDensity;
            int next = Stages + wanted;
            if (next < 1 || next > _maxStages)
            {
                // At a limit the assumed direction cannot be followed: try the other one (it may be the right one).
                MoreStagesLowerDensity = -MoreStagesLowerDensity;
                wanted = -wanted;
                next = Stages + wanted;
            }
            // A stage count already seen out of band cannot help: on the other side it brackets the
            // target, on this side it was no better (moving back would oscillate between two misses).
            bool known = _seen.TryGetValue(next, out double there) && (there < 1 - _tolerance || there > 1 + _tolerance);
            // A stage beyond the free ones is another pass over the gradient: on a large buffer worth it for a gross miss only.
            bool worthIt = !_passesCostly || next <= FreeStages || next < Stages || !WithinStageMoveFactor(mean);
            if (next >= 1 && next <= _maxStages && !known && worthIt)
            {
                Stages = next;
                _lastMove = wanted;
                Adjustments++;
                return;
            }
        }
        // Fine control: the achieved ratio rises with the targeted density, so bisect the calibration
        // in log space between the latest values seen below and above the band; until both are known,
        // step by the measured ratio (at most 4x per window). Gradients drift during training: a
        // bracket that has crossed, or has shrunk to nothing while the ratio is still out of band, no
        // longer holds the target, so its stale side is dropped or widened.
        if (mean < 1) _calLow = Calibration; else _calHigh = Calibration;
        bool both = !double.IsNaN(_calLow) && !double.IsNaN(_calHigh);
        if (both && _calLow >= _calHigh)
        {
            if (mean < 1) _calHigh = double.NaN; else _calLow = double.NaN;
            both = false;
        }
        else if (both && _calHigh / _calLow < CollapsedBracket)
        {
            if (mean < 1) _calHigh *= BracketWidening; else _calLow /= BracketWidening;
        }
        double calibrated = both ? Math.Sqrt(_calLow * _calHigh) : Calibration * Math.Exp(CalibrationStep(logRatio));
        _secantLogCal = Math.Log(Calibration); _secantLogRatio = logRatio; _secantStages = Stages;
        Calibration = Math.Clamp(calibrated, 1 / MaxCalibration, MaxCalibration);
    }

    /// <summary>
    /// The achieved ratio does not follow the calibration one for one (on heavy tails the fitted threshold moves less than
    /// the targeted density), so once two windows at this stage count were calibrated differently, the step divides the
    /// miss by the response they measured (a secant in log space), within a plausible range.
    /// </summary>
    private double CalibrationStep(double logRatio)
    {
        double maxStep = Math.Log(MaxCalibrationStep);
        double step = Math.Clamp(-logRatio, -maxStep, maxStep);
        double logCal = Math.Log(Calibration);
        if (_secantStages == Stages && double.IsFinite(_secantLogCal) && Math.Abs(logCal - _secantLogCal) > 1e-3)
        {
            double response = (logRatio - _secantLogRatio) / (logCal - _secantLogCal);
            if (response is >= MinCalibrationResponse and < 1) step = Math.Clamp(-logRatio / response, -maxStep, maxStep);
        }
        return step;
    }

    // A bracket narrower than this ratio that still misses the band no longer holds the target: its stale side widens by
    // the factor below.
    private const double CollapsedBracket = 1.05, BracketWidening = 2;

    /// <summary>The most the calibration moves in one window before the band is bracketed.</summary>
    public const double MaxCalibrationStep = 4;

    /// <summary>A measured response (d ln ratio / d ln calibration) below this is taken as noise: the step is then the plain
    /// ratio.</summary>
    public const double MinCalibrationResponse = 0.1;

    private static bool WithinStageMoveFactor(double ratio) => ratio >= 1 / StageMoveFactor && ratio <= StageMoveFactor;

    /// <summary>Writes the full controller state.</summary>
    public void Save(BinaryWriter w)
    {
        w.Write(Stages); w.Write(MoreStagesLowerDensity); w.Write(Adjustments);
        w.Write(_windowSum); w.Write(_windowCount); w.Write(_lastMove); w.Write(_lastLogRatio);
        w.Write(Calibration); w.Write(_calLow); w.Write(_calHigh); w.Write(Tracking);
        w.Write(_secantLogCal); w.Write(_secantLogRatio); w.Write(_secantStages);
        w.Write(_seen.Count);
        foreach (var (m, r) in _seen) { w.Write(m); w.Write(r); }
    }

    /// <summary>Restores state written by <see cref="Save"/>.</summary>
    public void Load(BinaryReader r)
    {
        int stages = r.ReadInt32(), dir = r.ReadInt32(), adj = r.ReadInt32();
        double sum = r.ReadDouble(); int count = r.ReadInt32(), move = r.ReadInt32(); double last = r.ReadDouble(),
            calibration = r.ReadDouble(), calLow = r.ReadDouble(), calHigh = r.ReadDouble();
        bool tracking = r.ReadBoolean();
        double secantLogCal = r.ReadDouble(), secantLogRatio = r.ReadDouble(); int secantStages = r.ReadInt32();
        var seen = new Dictionary<int, double>();
        for (int i = r.ReadInt32(); i > 0; i--) seen[r.ReadInt32()] = r.ReadDouble();
        if (stages < 1 || stages > _maxStages) throw new InvalidDataException($"Saved stage count {stages} is outside [1, {_maxStages}].");
        (Stages, MoreStagesLowerDensity, Adjustments, _windowSum, _windowCount, _lastMove, _lastLogRatio, Calibration) =
            (stages, dir, adj, sum, count, move, last, calibration);
        (_calLow, _calHigh, Tracking) = (calLow, calHigh, tracking);
        (_secantLogCal, _secantLogRatio, _secantStages) = (secantLogCal, secantLogRatio, secantStages);
        _seen.Clear();
        foreach (var (m, v) in seen) _seen[m] = v;
    }

    /// <summary>
    /// Tells the controller that the target density changed (a density warm-up changes it every call).
    /// A window averages calls made at one target only: while the target moves, the ratio also carries the
    /// move itself (error feedback holds what the previous, higher target left unsent, and releases it over
    /// the next calls), which says nothing about the stage count. Stage moves made on such windows went
    /// one way only (up to 8 stages at a density of 0.001, each an extra pass, where 2 or 3 reach the band
    /// once the target settles). So the window restarts and the effect of the last move is not judged;
    /// in <see cref="Tracking"/> the per-call calibration steps go on, since they are made to follow drift.
    /// </summary>
    public void TargetMoved()
    {
        ResetWindow();
        _secantLogCal = double.NaN; // windows at another target say nothing about the response at this one
        _lastMove = 0;
        _lastLogRatio = double.NaN;
    }

    /// <summary>Forgets the window (keeps the stage count and learned direction).</summary>
    public void ResetWindow() { _windowSum = 0; _windowCount = 0; }
}
