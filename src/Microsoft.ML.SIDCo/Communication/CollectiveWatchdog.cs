using System.Diagnostics;
using System.Globalization;

namespace Microsoft.ML.SIDCo.Communication;

/// <summary>Tells a watched communicator where training stands, so that its deadline and its report follow the steps.</summary>
internal interface IWatchedCommunicator
{
    /// <summary>Called after each step with the step's number and duration.</summary>
    void AtStep(long step, double stepSeconds);
}

/// <summary>How <see cref="WatchedCommunicator"/> treats a collective that does not complete.</summary>
/// <param name="Timeout">The deadline of one collective; it grows to <see cref="StepScale"/> times the longest step seen.</param>
/// <param name="BoardDirectory">
/// Where the waiting ranks write what they wait in, so that each can tell which ranks have not arrived: a directory every rank
/// reaches (the checkpoint directory on a shared file system, or a local one when all ranks share a machine).
/// </param>
/// <param name="AbortAdvice">Appended to the final report (for example, where the newest checkpoint is).</param>
internal sealed record StallSettings(TimeSpan Timeout, string BoardDirectory, string AbortAdvice)
{
    /// <summary>A warning is printed once a collective has waited this fraction of the deadline (as Horovod's stall inspector
    /// warns).</summary>
    public double WarnFraction { get; init; } = 0.5;

    /// <summary>The deadline is at least this many times the longest step, so that slow steps do not count as stalls.</summary>
    public double StepScale { get; init; } = 20;

    /// <summary>How often the watchdog looks.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>The job's exit code when a deadline passes.</summary>
    public int ExitCode { get; init; } = 14;
}

/// <summary>
/// A communicator whose every collective has a deadline. A rank that stops (a stopped or swapped-out process, a hung
/// device) leaves its peers blocked in a collective for good; here a watchdog thread sees the wait, warns at half the
/// deadline, and at the deadline every live rank reports which ranks have not arrived at which collective and step and
/// ends the job (MPI_Abort). The collectives themselves pass through unchanged.
/// </summary>
internal sealed class WatchedCommunicator : ICommunicator, ISharesLinks, IWatchedCommunicator
{
    private readonly ICommunicator _inner;
    private readonly StallSettings _settings;
    private readonly Action<int> _abort;
    private readonly TextWriter _log;
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _stopped = new();
    private readonly DateTime _started = DateTime.UtcNow;
    private long _sequence;          // collectives entered so far
    private long _entered;           // Stopwatch timestamp of the current collective's entry, 0 outside one
    private string _operation = "";  // the current collective's name (a literal: no allocation per call)
    private long _elements;
    private long _step = -1;
    private double _longestStepSeconds;

    public WatchedCommunicator(ICommunicator inner, StallSettings settings, Action<int> abort, TextWriter log)
    {
        _inner = inner;
        _settings = settings;
        _abort = abort;
        _log = log;
        Directory.CreateDirectory(settings.BoardDirectory);
        File.Delete(BoardFile(inner.Rank));
        _thread = new Thread(Watch) { IsBackground = true, Name = "sidco-collective-watchdog" };
        _thread.Start();
    }

    /// <inheritdoc />
    public int Rank => _inner.Rank;

    /// <inheritdoc />
    public int Size => _inner.Size;

    /// <inheritdoc />
    public string Transport => _inner.Transport;

    /// <inheritdoc />
    public object Links => _inner is ISharesLinks shared ? shared.Links : _inner;

    /// <inheritdoc />
    public void AtStep(long step, double stepSeconds)
    {
        Volatile.Write(ref _step, step);
        if (stepSeconds > _longestStepSeconds) _longestStepSeconds = stepSeconds;
    }

    /// <inheritdoc />
    public void Barrier()
    {
        Enter(nameof(Barrier), 0);
        try { _inner.Barrier(); }
        finally { Exit(); }
    }

    /// <inheritdoc />
    public void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged
    {
        Enter(nameof(Broadcast), buffer.Length);
        try { _inner.Broadcast(buffer, root); }
        finally { Exit(); }
    }

    /// <inheritdoc />
    public void AllReduceSum<T>(Span<T> buffer) where T : unmanaged
    {
        Enter(nameof(AllReduceSum), buffer.Length);
        try { _inner.AllReduceSum(buffer); }
        finally { Exit(); }
    }

    /// <inheritdoc />
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all) where T : unmanaged
    {
        Enter(nameof(AllGather), all.Length);
        try { _inner.AllGather(mine, all); }
        finally { Exit(); }
    }

    /// <inheritdoc />
    public void AllGatherV<T>(ReadOnlySpan<T> mine, Span<T> all, ReadOnlySpan<int> counts) where T : unmanaged
    {
        Enter(nameof(AllGatherV), all.Length);
        try { _inner.AllGatherV(mine, all, counts); }
        finally { Exit(); }
    }

    /// <inheritdoc />
    public void AllToAll<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged
    {
        Enter(nameof(AllToAll), receive.Length);
        try { _inner.AllToAll(send, receive); }
        finally { Exit(); }
    }

    private void Enter(string operation, long elements)
    {
        _operation = operation;
        _elements = elements;
        Interlocked.Increment(ref _sequence);
        Volatile.Write(ref _entered, Stopwatch.GetTimestamp());
    }

    private void Exit() => Volatile.Write(ref _entered, 0);

    /// <summary>The deadline now: the configured one, or longer after long steps.</summary>
    internal TimeSpan Deadline => TimeSpan.FromSeconds(Math.Max(_settings.Timeout.TotalSeconds, _settings.StepScale * _longestStepSeconds));

    private void Watch()
    {
        long posted = 0, warned = 0;
        while (!_stopped.Wait(_settings.PollInterval))
        {
            long entered = Volatile.Read(ref _entered);
            if (entered == 0) continue;
            long sequence = Volatile.Read(ref _sequence);
            double waited = Stopwatch.GetElapsedTime(entered).TotalSeconds;
            double deadline = Deadline.TotalSeconds, warnAt = _settings.WarnFraction * deadline;
            // Post this rank's wait first; read the others' a moment later, once every waiting rank has posted.
            if (waited >= warnAt && posted != sequence)
            {
                posted = sequence;
                WriteBoard(sequence);
            }
            if (waited >= warnAt + BoardSettleSeconds && warned != sequence && waited < deadline)
            {
                warned = sequence;
                Report(waited, sequence, $"The deadline is {deadline:F0} s.");
            }
            if (waited >= deadline && Volatile.Read(ref _entered) == entered)
            {
                if (posted != sequence) WriteBoard(sequence);
                Report(waited, sequence, $"Past the deadline of {deadline:F0} s: ending the job with exit code {_settings.ExitCode}. "
                    + _settings.AbortAdvice);
                // The other live ranks reach their deadline within a poll: let them print theirs before the job is torn down.
                Thread.Sleep(TimeSpan.FromSeconds(BoardSettleSeconds));
                _abort(_settings.ExitCode);
                return;
            }
        }
    }

    // Every waiting rank posts within a poll of the others.
    private const double BoardSettleSeconds = 1;

    // What this rank waits in, which ranks have not reached it, and what follows.
    private void Report(double waited, long sequence, string then)
    {
        string line = $"SIDCo watchdog: rank {Rank} has waited {waited:F0} s in collective #{sequence} ({_operation} of {_elements} "
            + $"values) in step {Volatile.Read(ref _step) + 1}. {Missing(sequence)} {then}";
        lock (_log)
        {
            _log.WriteLine(line);
            _log.Flush();
        }
    }

    // The ranks whose board shows no wait in this collective: they have not reached it (stopped, hung or still computing).
    internal string Missing(long sequence)
    {
        var absent = new List<string>();
        for (int r = 0; r < Size; r++)
        {
            if (r == Rank) continue;
            var seen = ReadBoard(r);
            if (seen is { } s && s.Sequence == sequence) continue;
            absent.Add(seen is { } last
                ? $"rank {r} (last seen waiting in collective #{last.Sequence} at step {last.Step + 1})"
                : $"rank {r}");
        }
        return absent.Count == 0
            ? "Every other rank waits in the same collective."
            : $"Not arrived: {string.Join(", ", absent)}.";
    }

    private string BoardFile(int rank) => Path.Combine(_settings.BoardDirectory, $"rank{rank}.txt");

    private void WriteBoard(long sequence)
    {
        try
        {
            string temp = BoardFile(Rank) + ".tmp";
            File.WriteAllText(temp, string.Create(CultureInfo.InvariantCulture, $"{sequence} {Volatile.Read(ref _step)}"));
            File.Move(temp, BoardFile(Rank), overwrite: true);
        }
        catch (IOException) { } // the report still names this rank's own wait
        catch (UnauthorizedAccessException) { }
    }

    private (long Sequence, long Step)? ReadBoard(int rank)
    {
        try
        {
            var file = new FileInfo(BoardFile(rank));
            if (!file.Exists || file.LastWriteTimeUtc < _started) return null; // a board from an earlier run
            var parts = File.ReadAllText(file.FullName).Split(' ');
            return (long.Parse(parts[0], CultureInfo.InvariantCulture), long.Parse(parts[1], CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Stops the watchdog (the inner communicator stays the caller's).</summary>
    public void Dispose()
    {
        _stopped.Set();
        _thread.Join();
        _stopped.Dispose();
        try { File.Delete(BoardFile(Rank)); }
        catch (IOException) { }
    }
}
