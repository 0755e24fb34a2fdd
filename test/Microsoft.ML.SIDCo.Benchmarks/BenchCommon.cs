using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.SIDCo.Models;

namespace Microsoft.ML.SIDCo.Benchmarks;

/// <summary>Command-line options shared by the benchmarks: "--name value" pairs with comma-separated lists.</summary>
internal sealed class BenchArgs
{
    private readonly Dictionary<string, string> _values = new();

    public BenchArgs(string[] args)
    {
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"unexpected argument '{args[i]}'");
            _values[args[i][2..]] = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : "true";
        }
    }

    public string? Get(string name) => _values.GetValueOrDefault(name);
    public string Get(string name, string fallback) => _values.GetValueOrDefault(name) ?? fallback;
    public int Int(string name, int fallback) =>
        _values.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public double Double(string name, double fallback) =>
        _values.TryGetValue(name, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public string[] List(string name, string fallback) =>
        Get(name, fallback).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    public int[] Ints(string name, string fallback) =>
        List(name, fallback).Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
    public double[] Doubles(string name, string fallback) =>
        List(name, fallback).Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
    public bool Has(string name) => _values.ContainsKey(name);
}

internal static class Bench
{
    /// <summary>
    /// The benchmarks' models by name: "convnet", the sample's ConvNet (317,066 parameters; "convnet-wide" is its
    /// older name); "convnet-small", the library's default <see cref="SIDCoModels.ConvNet"/> (quick runs in tests);
    /// "wide-mlp", the 5.8M-parameter MLP of <c>bench cluster</c>.
    /// </summary>
    public static ModelDefinition Model(string name) => name switch
    {
        "convnet" or "convnet-wide" => SIDCoModels.ConvNet(conv1: 32, conv2: 64, hidden: 256),
        "convnet-small" => SIDCoModels.ConvNet(),
        "wide-mlp" => SIDCoModels.Mlp(2048, 2048),
        _ => throw new ArgumentException($"unknown model '{name}' (convnet, convnet-small, wide-mlp)"),
    };

    public static readonly JsonSerializerOptions Json =
        new()
        {
            WriteIndented = true,
            PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull
        };
    public static readonly JsonSerializerOptions JsonLine =
        new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>Median wall time (ms) of <paramref name="runs"/> calls after <paramref name="warmup"/> untimed ones;
    /// <paramref name="before"/> runs untimed before each call.</summary>
    public static double MedianMs(Action body, int runs, int warmup = 2, Action? before = null)
    {
        for (int i = 0; i < warmup; i++) { before?.Invoke(); body(); }
        var t = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            before?.Invoke();
            long start = Stopwatch.GetTimestamp();
            body();
            t[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(t);
        return Median(t);
    }

    /// <summary>The median of ascending <paramref name="sorted"/> (the mean of the middle two for an even count).</summary>
    public static double Median(IReadOnlyList<double> sorted) =>
        sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : 0.5 * (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]);

    /// <summary>Writes {"results":[...]} (and "comparisons" when given) to <paramref name="path"/> and a markdown table beside it
    /// (.md).</summary>
    public static void WriteResults<T>(string? path, IReadOnlyList<T> rows, string table, object? comparisons = null)
    {
        Console.WriteLine(table);
        if (path is null) return;
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, JsonSerializer.Serialize(new { results = rows, comparisons }, Json));
        File.WriteAllText(Path.ChangeExtension(path, ".md"), table);
        Console.WriteLine($"wrote {path} and {Path.ChangeExtension(path, ".md")}");
    }

    /// <summary>The rows of a JSON-lines file (<c>--rows FILE</c>: one object per line, as the ranks print after RESULT).</summary>
    public static List<T> ReadRows<T>(BenchArgs a) =>
        [.. File.ReadAllLines(a.Get("rows") ?? throw new ArgumentException("--rows FILE"))
            .Where(l => l.Length > 0).Select(l => JsonSerializer.Deserialize<T>(l, JsonLine)!)];

    public static string Table(IEnumerable<string> header, IEnumerable<IEnumerable<string>> rows)
    {
        var sb = new StringBuilder();
        var h = header.ToList();
        sb.AppendLine("| " + string.Join(" | ", h) + " |");
        sb.AppendLine("|" + string.Join("|", h.Select(_ => " --- ")) + "|");
        foreach (var r in rows) sb.AppendLine("| " + string.Join(" | ", r) + " |");
        return sb.ToString();
    }

    public static string F(double v, string format = "F2") => v.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>Runs this benchmark program under mpirun and returns the JSON lines rank 0 printed after "RESULT ".</summary>
    public static List<string> RunUnderMpirun(int ranks, string args, string[]? extraMpiArgs = null)
    {
        string self = typeof(Bench).Assembly.Location;
        var psi = new ProcessStartInfo("mpirun") { RedirectStandardOutput = true, RedirectStandardError = false, UseShellExecute = false };
        foreach (var a in new[] { "-np", ranks.ToString(CultureInfo.InvariantCulture), "--oversubscribe", "--bind-to",
            "none" }.Concat(extraMpiArgs ?? []).Concat(["dotnet", self])) psi.ArgumentList.Add(a);
        foreach (var a in args.Split(' ', StringSplitOptions.RemoveEmptyEntries)) psi.ArgumentList.Add(a);
        psi.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        psi.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        psi.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        psi.Environment["OMPI_MCA_mpi_yield_when_idle"] = "1";
        psi.Environment["TERM"] = "dumb";
        using var p = Process.Start(psi)!;
        var results = new List<string>();
        string? line;
        while ((line = p.StandardOutput.ReadLine()) is not null)
        {
            int at = line.IndexOf("RESULT ", StringComparison.Ordinal);
            if (at >= 0) results.Add(line[(at + 7)..]);
            else Console.WriteLine("  " + line);
        }
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"mpirun -np {ranks} {args} exited with {p.ExitCode}");
        return results;
    }
}
