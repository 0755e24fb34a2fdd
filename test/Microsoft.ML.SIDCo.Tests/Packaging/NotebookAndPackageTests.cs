using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.SIDCo.Tests.Support;
using Xunit.Abstractions;

namespace Microsoft.ML.SIDCo.Tests.Packaging;

/// <summary>Builds small separate programs the way users would: the notebook's cells, and an app that consumes the NuGet package.</summary>
public sealed class NotebookAndPackageTests(ITestOutputHelper log) : IDisposable
{
    private readonly string _work = Directory.CreateTempSubdirectory("sidco-consumer-").FullName;

    [Fact]
    public void NotebookCodeCellsCompileAndRunAgainstTheLibrary()
    {
        var nb = JsonDocument.Parse(File.ReadAllText(Path.Combine(MpiRunner.RepoRoot, "src/Samples/Notebook/SIDCo.ipynb")));
        var cells = nb.RootElement.GetProperty("cells").EnumerateArray()
            .Where(c => c.GetProperty("cell_type").GetString() == "code")
            .Select(c => string.Concat(c.GetProperty("source").EnumerateArray().Select(s => s.GetString())))
            .ToList();
        Assert.True(cells.Count >= 4);
        // Polyglot directives (#r, #i) become project references; the C# is compiled as one program.
        var lines = cells.SelectMany(c => c.Split('\n')).Where(l => !l.StartsWith("#r ", StringComparison.Ordinal) && !l.StartsWith("#i ", StringComparison.Ordinal)).ToList();
        var usings = lines.Where(l => l.StartsWith("using ", StringComparison.Ordinal)).Distinct();
        var body = lines.Where(l => !l.StartsWith("using ", StringComparison.Ordinal));
        File.WriteAllText(Path.Combine(_work, "Program.cs"), string.Join('\n', usings.Concat(body)));
        File.WriteAllText(Path.Combine(_work, "Notebook.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup><OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework><ImplicitUsings>enable</ImplicitUsings><Nullable>disable</Nullable>
                <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally><NoWarn>NU1603;CS8321</NoWarn><NuGetAudit>false</NuGetAudit></PropertyGroup>
              <ItemGroup>
                <ProjectReference Include="{Path.Combine(MpiRunner.RepoRoot, "src/Microsoft.ML.SIDCo/Microsoft.ML.SIDCo.csproj")}" />
                <PackageReference Include="ScottPlot" Version="5.1.59" />
                <PackageReference Include="SkiaSharp.NativeAssets.Linux" Version="3.119.4" />
              </ItemGroup>
            </Project>
            """);
        IsolateFromRepository();
        var run = Dotnet($"run -c {MpiRunner.Configuration} --project {_work}", TimeSpan.FromMinutes(8));
        log.WriteLine(run.Output);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("test accuracy", run.Output);
        Assert.Contains("sidco-e", run.Output);
        Assert.Contains("plot written to", run.Output);
    }

    [Fact]
    public void PackedPackageServesASeparateMlNetApp()
    {
        string feed = Path.Combine(_work, "feed");
        string version = "0.1.0-test." + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", System.Globalization.CultureInfo.InvariantCulture);
        // --no-build: pack what the test run already built (the library must not be rebuilt under a running test host).
        var pack = Dotnet($"pack {Path.Combine(MpiRunner.RepoRoot, "src/Microsoft.ML.SIDCo/Microsoft.ML.SIDCo.csproj")} -c {MpiRunner.Configuration} --no-build -o {feed} -p:PackageVersion={version}", TimeSpan.FromMinutes(5));
        Assert.True(pack.ExitCode == 0, pack.Output);
        string nupkg = Path.Combine(feed, $"Microsoft.ML.SIDCo.{version}.nupkg");
        Assert.True(File.Exists(nupkg), pack.Output);
        Assert.True(File.Exists(Path.Combine(feed, $"Microsoft.ML.SIDCo.{version}.snupkg")));
        using (var zip = System.IO.Compression.ZipFile.OpenRead(nupkg))
        {
            var names = zip.Entries.Select(e => e.FullName).ToList();
            Assert.Contains("README.md", names);
            Assert.Contains("lib/net10.0/Microsoft.ML.SIDCo.xml", names);
            var nuspec = new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open()).ReadToEnd();
            foreach (var dep in new[] { "Microsoft.ML", "TorchSharp", "libtorch-cpu-linux-x64", "ILGPU" }) Assert.Contains($"id=\"{dep}\"", nuspec);
            Assert.Contains("<license type=\"expression\">MIT</license>", nuspec);
        }

        string app = Path.Combine(_work, "app");
        Directory.CreateDirectory(app);
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup><OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework><ImplicitUsings>enable</ImplicitUsings><Nullable>enable</Nullable>
                <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally><NoWarn>NU1603</NoWarn><NuGetAudit>false</NuGetAudit></PropertyGroup>
              <ItemGroup><PackageReference Include="Microsoft.ML.SIDCo" Version="{version}" /></ItemGroup>
            </Project>
            """);
        // The local folder is added to the machine's own sources (no host named here).
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration><packageSources><add key="local-feed" value="{feed}" /></packageSources></configuration>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using Microsoft.ML;
            using Microsoft.ML.Data;
            using Microsoft.ML.SIDCo.Models;

            var ml = new MLContext(seed: 1);
            var rng = new Random(3);
            var rows = Enumerable.Range(0, 2000).Select(_ =>
            {
                var x = new float[] { (float)rng.NextDouble(), (float)rng.NextDouble() };
                return new Row { Features = x, Label = x[0] + x[1] > 1 ? "high" : "low" };
            }).ToArray();
            var data = ml.Data.LoadFromEnumerable(rows);
            var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(ml.Extensions.SIDCoTrainer(model: SIDCoModels.Mlp(16), density: 0.1, workers: 2, epochs: 15));
            var model = pipeline.Fit(data);
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(data));
            Console.WriteLine($"accuracy {metrics.MicroAccuracy:F3}");

            public sealed class Row
            {
                [VectorType(2)] public float[] Features { get; set; } = [];
                public string Label { get; set; } = "";
            }
            """);
        IsolateFromRepository(app);
        var run = Dotnet($"run -c Release --project {app}", TimeSpan.FromMinutes(8));
        log.WriteLine(run.Output);
        Assert.True(run.ExitCode == 0, run.Output);
        var line = run.Output.Split('\n').Single(l => l.StartsWith("accuracy ", StringComparison.Ordinal));
        Assert.True(double.Parse(line[9..], System.Globalization.CultureInfo.InvariantCulture) > 0.9, line);
    }

    // Stop MSBuild from picking up the repository's Directory.*.props (the temp folder is outside it, but be explicit).
    private void IsolateFromRepository(string? dir = null)
    {
        dir ??= _work;
        File.WriteAllText(Path.Combine(dir, "Directory.Build.props"), "<Project></Project>");
        File.WriteAllText(Path.Combine(dir, "Directory.Packages.props"), "<Project></Project>");
    }

    private static (int ExitCode, string Output) Dotnet(string args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo("dotnet", args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["TERM"] = "dumb";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(entireProcessTree: true); return (-1, "timed out\n" + stdout.Result + stderr.Result); }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    public void Dispose() { try { Directory.Delete(_work, recursive: true); } catch (IOException) { } }
}
