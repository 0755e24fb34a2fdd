using System.Diagnostics;

namespace Microsoft.ML.SIDCo.Tests.Support;

/// <summary>Result of one mpirun.</summary>
public sealed record MpiRun(int ExitCode, string Output, TimeSpan Elapsed, bool TimedOut)
{
    /// <summary>The CHECK lines: (rank, name, ok, detail).</summary>
    public IReadOnlyList<(int Rank, string Name, bool Ok, string Detail)> Checks => Output.Split('\n')
        .Select(l => l.IndexOf("CHECK ", StringComparison.Ordinal) is int at and >= 0 ? l[at..] : null)
        .OfType<string>()
        .Select(l => l.TrimEnd().Split(' ', 5))
        .Select(p => (int.Parse(p[1]), p[2], p[3] == "OK", p.Length > 4 ? p[4] : ""))
        .ToList();

    /// <summary>Asserts that the job ended by itself with exit code 0 (the output is the message otherwise).</summary>
    public MpiRun AssertCompleted()
    {
        Xunit.Assert.False(TimedOut, Output);
        Xunit.Assert.True(ExitCode == 0, Output);
        return this;
    }
}

/// <summary>Starts programs of this repository under the real mpirun.</summary>
public static class MpiRunner
{
    /// <summary>The repository root (where SIDCo.ML.sln is).</summary>
    public static string RepoRoot { get; } = FindRoot();

    /// <summary>Build configuration of the running tests (Release or Debug).</summary>
    public static string Configuration { get; } = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Parent!.Name;

    /// <summary>Path of a project's built dll, e.g. ("test/Microsoft.ML.SIDCo.TestHost", "Microsoft.ML.SIDCo.TestHost").</summary>
    public static string Dll(string projectDir, string name) =>
        Path.Combine(RepoRoot, projectDir, "bin", Configuration, "net10.0", name + ".dll");

    public static string TestHost => Dll("test/Microsoft.ML.SIDCo.TestHost", "Microsoft.ML.SIDCo.TestHost");

    /// <summary>
    /// Runs <c>mpirun -np ranks [mpirunOptions] dotnet dll args</c>, killing the whole job after <paramref name="timeout"/>.
    /// </summary>
    public static MpiRun Run(int ranks, string dll, string args, TimeSpan timeout, params string[] mpirunOptions)
        => Start("mpirun",
            ["-np", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture), "--oversubscribe", "--bind-to", "none",
            .. mpirunOptions, "dotnet", dll], args, timeout);

    /// <summary>Runs <c>mpiexec.mpich -n ranks dotnet dll args</c> (MPICH, for the MPI.NET binding).</summary>
    public static MpiRun RunMpich(int ranks, string dll, string args, TimeSpan timeout)
        => Start("mpiexec.mpich", ["-n", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture), "dotnet", dll], args, timeout);

    /// <summary>Runs <c>dotnet dll args</c> as a plain new process (no mpirun).</summary>
    public static MpiRun RunPlain(string dll, string args, TimeSpan timeout) => Start("dotnet", [dll], args, timeout);

    /// <summary>Runs <paramref name="program"/> with <paramref name="arguments"/> as given (no splitting), with the same environment as the
    /// MPI runs.</summary>
    public static MpiRun RunCommand(string program, string[] arguments, TimeSpan timeout) => Start(program, arguments, "", timeout);

    private static MpiRun Start(string program, string[] prefix, string args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        foreach (var a in args.Split(' ', StringSplitOptions.RemoveEmptyEntries)) psi.ArgumentList.Add(a);
        psi.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        psi.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        psi.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        // Oversubscribed ranks must yield while they wait, or spinning ranks starve the others.
        psi.Environment["OMPI_MCA_mpi_yield_when_idle"] = "1";
        psi.Environment["TERM"] = "dumb"; // no terminal control sequences in captured output
        var sw = Stopwatch.StartNew();
        using var process = Process.Start(psi)!;
        var output = new System.Text.StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        bool exited = process.WaitForExit(timeout);
        if (!exited) { try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } process.WaitForExit(); }
        else process.WaitForExit(); // drain the output
        lock (output) return new MpiRun(exited ? process.ExitCode : -1, output.ToString(), sw.Elapsed, !exited);
    }

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "SIDCo.ML.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("SIDCo.ML.sln not found above the test directory.");
    }
}
