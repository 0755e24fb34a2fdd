using System.Globalization;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.ML.SIDCo.Communication;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>A checkpoint is missing, corrupt, or does not fit the run that tries to resume from it.</summary>
public sealed class CheckpointException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Checkpoints of a data-parallel run: model weights, optimizer state, every worker's hook state
/// (error-feedback residuals, compressor state), every worker's running totals of the epoch in progress,
/// the step counter and the history. Written into
/// <c>step-N.tmp/</c> and renamed to <c>step-N/</c> once complete, so a crash never leaves a checkpoint
/// that looks whole; the manifest holds a checksum of every file, verified before anything is loaded.
/// </summary>
internal static class TrainingCheckpoint
{
    /// <summary>What a checkpoint restores beyond the weights, optimizer and hook state.</summary>
    /// <param name="Step">Steps done when it was written.</param>
    /// <param name="Workers">Workers that wrote it (another number than now: an elastic resume).</param>
    /// <param name="History">The epochs done.</param>
    /// <param name="EpochTotals">This worker's running totals of the epoch in progress.</param>
    public sealed record Resumed(long Step, int Workers, TrainingHistory History, double[] EpochTotals);

    // 2: the stage controller saves its tracking flag; 3: SIDCo saves its peaks bound; 4: and SIDCo-GP its last gamma fit;
    // 5: every rank's running totals of the epoch in progress, so a run resumed mid-epoch reports that epoch whole.
    // 6: the totals hold the wait for the slowest worker. 7: the manifest holds the options a resumed run must keep.
    private const int Format = 7;
    private const string ManifestName = "manifest.json";

    private sealed record Manifest(int Format, long Step, long Settings, long Layout, int Workers, Dictionary<string, string> Files,
        Dictionary<string, string>? Options = null);

    public static void Save(string directory, ICommunicator comm, long step, long settingsFingerprint,
        Dictionary<string, string> options, ParameterSet parameters,
        FlatOptimizer optimizer, IGradientHook hook,
        TrainingHistory history, ReadOnlySpan<double> epochTotals)
    {
        string final = Path.Combine(directory, $"step-{step:D10}");
        string temp = final + ".tmp";
        if (comm.Rank == 0)
        {
            Directory.CreateDirectory(directory);
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            Directory.CreateDirectory(temp);
        }
        comm.Barrier();
        using (var f = File.Create(Path.Combine(temp, $"hook-rank{comm.Rank}.bin"))) hook.SaveState(f);
        File.WriteAllBytes(Path.Combine(temp, $"epoch-rank{comm.Rank}.bin"), MemoryMarshal.AsBytes(epochTotals).ToArray());
        comm.Barrier();
        if (comm.Rank == 0)
        {
            using (var f = File.Create(Path.Combine(temp, "model.bin"))) parameters.Save(f);
            using (var f = File.Create(Path.Combine(temp, "optimizer.bin")))
            using (var w = new BinaryWriter(f)) optimizer.Save(w);
            File.WriteAllText(Path.Combine(temp, "history.json"), history.ToJson());
            var files = Directory.GetFiles(temp).Select(Path.GetFileName).OfType<string>().Order()
                .ToDictionary(n => n, n => Hash(Path.Combine(temp, n)));
            var manifest = new Manifest(Format, step, settingsFingerprint, parameters.LayoutFingerprint(), comm.Size, files, options);
            File.WriteAllText(Path.Combine(temp, ManifestName), JsonSerializer.Serialize(manifest));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(temp, final);
            // Keep the two newest complete checkpoints.
            foreach (var old in Complete(directory).SkipLast(2)) Directory.Delete(old, recursive: true);
        }
        comm.Barrier();
    }

    /// <summary>The newest complete checkpoint directory, or null.</summary>
    public static string? Latest(string directory) => Directory.Exists(directory) ? Complete(directory).LastOrDefault() : null;

    /// <summary>
    /// Verifies and loads the newest checkpoint; returns its step, its history and this rank's running totals of the
    /// epoch in progress (<paramref name="epochTotalsLength"/> values). Nothing is modified unless every check passes.
    /// </summary>
    public static Resumed? TryLoad(string directory, ICommunicator comm,
        long settingsFingerprint, IReadOnlyDictionary<string, string> options, ParameterSet parameters, FlatOptimizer optimizer,
            IGradientHook hook,
        int epochTotalsLength)
    {
        string? dir = Latest(directory);
        comm.VerifyAgreement("whether a checkpoint exists", dir is null ? 0 : 1);
        if (dir is null) return null;
        Manifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<Manifest>(File.ReadAllText(Path.Combine(dir, ManifestName)))
                ?? throw new InvalidDataException("empty manifest");
        }
        catch (Exception e) when (e is JsonException or InvalidDataException or IOException)
        {
            throw new CheckpointException(
                $"Checkpoint '{dir}' has an unreadable manifest ({e.Message}). Delete the directory to start over.", e);
        }
        if (manifest.Format != Format)
            throw new CheckpointException($"Checkpoint '{dir}' has format {manifest.Format}; this version reads format {Format}.");
        bool elastic = manifest.Workers != comm.Size;
        if (elastic && hook is not IElasticHook)
        {
            throw new CheckpointException($"Checkpoint '{dir}' was written by {manifest.Workers} workers; this run has {comm.Size}, "
                + $"and its gradient hook ({hook.GetType().Name}) cannot spread its state over another number of workers. "
                + "Resume with the same number of workers.");
        }
        if (manifest.Workers < 1)
            throw new CheckpointException($"Checkpoint '{dir}' has an unreadable manifest (Workers {manifest.Workers}).");
        if (manifest.Layout != parameters.LayoutFingerprint())
            throw new CheckpointException($"Checkpoint '{dir}' holds a different model architecture.");
        const string NotSet = "(not set)";
        var saved = manifest.Options ?? [];
        var changed = options.Keys.Union(saved.Keys).Order(StringComparer.Ordinal)
            .Where(k => saved.GetValueOrDefault(k, NotSet) != options.GetValueOrDefault(k, NotSet))
            .Select(k => $"{k} = {saved.GetValueOrDefault(k, NotSet)} there, {options.GetValueOrDefault(k, NotSet)} now")
            .ToList();
        if (changed.Count > 0)
        {
            throw new CheckpointException($"Checkpoint '{dir}' was written with other training options: {string.Join("; ", changed)}. "
                + $"Resume with the options it was written with, or delete '{directory}' to start over.");
        }
        if (manifest.Settings != settingsFingerprint)
            throw new CheckpointException($"Checkpoint '{dir}' was written with different training options (model, optimizer, learning " +
            $"rate, batch size, epochs or seed).");
        foreach (var (name, hash) in manifest.Files)
        {
            string path = Path.Combine(dir, name);
            if (!File.Exists(path)) throw new CheckpointException($"Checkpoint '{dir}' is missing '{name}'.");
            if (Hash(path) != hash)
                throw new CheckpointException($"Checkpoint file '{path}' is corrupt (checksum mismatch). Delete '{dir}' to resume from " +
                $"the previous checkpoint or start over.");
        }
        // The saved workers whose state this worker takes: its own, or, resuming with another number of workers, every saved
        // worker r with r mod (workers now) = this rank, so that sums over workers (residuals, epoch totals) are kept.
        var sources = Enumerable.Range(0, manifest.Workers).Where(r => elastic ? r % comm.Size == comm.Rank : r == comm.Rank).ToList();
        foreach (int r in elastic ? Enumerable.Range(0, manifest.Workers) : sources)
        {
            if (!manifest.Files.ContainsKey($"hook-rank{r}.bin") || !manifest.Files.ContainsKey($"epoch-rank{r}.bin"))
                throw new CheckpointException($"Checkpoint '{dir}' has no state for rank {r}.");
        }

        // All checks passed: load. Stage into copies first where a partial failure would be possible.
        var weights = new MemoryStream(File.ReadAllBytes(Path.Combine(dir, "model.bin")));
        var optimizerBytes = File.ReadAllBytes(Path.Combine(dir, "optimizer.bin"));
        var history = TrainingHistory.FromJson(File.ReadAllText(Path.Combine(dir, "history.json")));
        var epochTotals = new double[epochTotalsLength];
        foreach (int r in sources)
        {
            var totalsBytes = File.ReadAllBytes(Path.Combine(dir, $"epoch-rank{r}.bin"));
            if (totalsBytes.Length != epochTotalsLength * sizeof(double))
            {
                throw new CheckpointException($"Checkpoint '{dir}' holds {totalsBytes.Length} bytes of epoch totals for rank {r}; "
                    + $"this version writes {epochTotalsLength * sizeof(double)}.");
            }
            var totals = MemoryMarshal.Cast<byte, double>(totalsBytes);
            for (int i = 0; i < epochTotalsLength; i++) epochTotals[i] += totals[i];
        }
        try
        {
            parameters.Load(weights);
            using (var r = new BinaryReader(new MemoryStream(optimizerBytes))) optimizer.Load(r);
            if (!elastic) hook.LoadState(new MemoryStream(File.ReadAllBytes(Path.Combine(dir, $"hook-rank{comm.Rank}.bin"))));
            else
            {
                var states = Enumerable.Range(0, manifest.Workers)
                    .Select(r => (Stream)new MemoryStream(File.ReadAllBytes(Path.Combine(dir, $"hook-rank{r}.bin")))).ToList();
                ((IElasticHook)hook).LoadRedistributed(states, comm.Rank, comm.Size);
            }
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
        {
            throw new CheckpointException($"Checkpoint '{dir}' does not fit this run: {e.Message}", e);
        }
        comm.VerifyAgreement("the checkpoint step", manifest.Step);
        return new Resumed(manifest.Step, manifest.Workers, history, epochTotals);
    }

    private static IEnumerable<string> Complete(string directory) => Directory.GetDirectories(directory, "step-*")
        .Where(d => !d.EndsWith(".tmp", StringComparison.Ordinal) && File.Exists(Path.Combine(d, ManifestName)))
        .Order(StringComparer.Ordinal);

    private static string Hash(string path)
    {
        using var f = File.OpenRead(path);
        var h = new XxHash64();
        h.Append(f);
        return h.GetCurrentHashAsUInt64().ToString("x16", CultureInfo.InvariantCulture);
    }
}
