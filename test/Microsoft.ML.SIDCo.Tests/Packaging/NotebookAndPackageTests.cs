using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Tests.Support;
using Xunit.Abstractions;

namespace Microsoft.ML.SIDCo.Tests.Packaging;

/// <summary>Builds small separate programs the way users would: the notebook's cells, and an app that consumes the NuGet package.</summary>
[Trait(Category.Name, Category.Packaging)]
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
        // Polyglot directives become references: "#r nuget: X, V" a package (the SIDCo package this repository's project),
        // "#i" a source. The C# is compiled as one top-level program, where type declarations must follow the statements,
        // so cells that declare a type move to the end.
        var lines = cells.SelectMany(c => c.Split('\n')).ToList();
        var packages = lines.Where(l => l.StartsWith("#r \"nuget: ", StringComparison.Ordinal))
            .Select(l => l["#r \"nuget: ".Length..].TrimEnd('"').Split(',', StringSplitOptions.TrimEntries))
            .Where(p => p[0] != "Microsoft.ML.SIDCo")
            .Select(p => $"<PackageReference Include=\"{p[0]}\" Version=\"{p[1]}\" />");
        static bool DeclaresType(string cell) => cell.Split('\n').SkipWhile(l => l.StartsWith("//", StringComparison.Ordinal))
            .FirstOrDefault()?.StartsWith("public sealed class ", StringComparison.Ordinal) == true;
        var code = cells.Where(c => !DeclaresType(c)).Concat(cells.Where(DeclaresType)).SelectMany(c => c.Split('\n'))
            .Where(l => !l.StartsWith("#r ", StringComparison.Ordinal) && !l.StartsWith("#i ", StringComparison.Ordinal)).ToList();
        var usings = code.Where(l => l.StartsWith("using ", StringComparison.Ordinal)).Distinct();
        var body = code.Where(l => !l.StartsWith("using ", StringComparison.Ordinal));
        File.WriteAllText(Path.Combine(_work, "Program.cs"), string.Join('\n', usings.Concat(body)));
        File.WriteAllText(Path.Combine(_work, "Notebook.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings><Nullable>disable</Nullable>
                <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>
                <NoWarn>NU1603;CS8321</NoWarn><NuGetAudit>false</NuGetAudit>
              </PropertyGroup>
              <ItemGroup>
                <ProjectReference Include="{Path.Combine(MpiRunner.RepoRoot, "src/Microsoft.ML.SIDCo/Microsoft.ML.SIDCo.csproj")}" />
                {string.Join("\n    ", packages)}
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
        Assert.Contains("served accuracy", run.Output); // the deployment cell: Model.Save, Model.Load, scored
    }

    [Fact]
    public void PackedPackageServesAnExistingMlNetApp()
    {
        string feed = Path.Combine(_work, "feed");
        string version = "0.1.0-test." + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", System.Globalization.CultureInfo.InvariantCulture);
        // --no-build: pack what the test run already built (the library must not be rebuilt under a running test host).
        var pack =
            Dotnet($"pack {Path.Combine(MpiRunner.RepoRoot, "src/Microsoft.ML.SIDCo/Microsoft.ML.SIDCo.csproj")} -c " +
            $"{MpiRunner.Configuration} --no-build -o {feed} -p:PackageVersion={version}", TimeSpan.FromMinutes(5));
        Assert.True(pack.ExitCode == 0, pack.Output);
        string nupkg = Path.Combine(feed, $"Microsoft.ML.SIDCo.{version}.nupkg");
        Assert.True(File.Exists(nupkg), pack.Output);
        Assert.True(File.Exists(Path.Combine(feed, $"Microsoft.ML.SIDCo.{version}.snupkg")));
        using (var zip = System.IO.Compression.ZipFile.OpenRead(nupkg))
        {
            var names = zip.Entries.Select(e => e.FullName).ToList();
            Assert.Contains("lib/net10.0/Microsoft.ML.SIDCo.xml", names);
            var nuspec =
                new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open()).ReadToEnd();
            foreach (var dep in new[] { "Microsoft.ML", "TorchSharp", "ILGPU" }) Assert.Contains($"id=\"{dep}\"", nuspec);
            // The app chooses its native libtorch, as with Microsoft.ML.TorchSharp: no platform's build is forced on it.
            Assert.DoesNotContain("<dependency id=\"libtorch", nuspec, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("<dependency id=\"TorchSharp-", nuspec, StringComparison.OrdinalIgnoreCase);
            Assert.Contains("<readme>PACKAGE.md</readme>", nuspec);
            Assert.Contains("<license type=\"expression\">MIT</license>", nuspec);
            // The package's readme speaks to a NuGet user, not to this repository's build script.
            var readme = new StreamReader(zip.GetEntry("PACKAGE.md")!.Open()).ReadToEnd();
            Assert.DoesNotContain("build.sh", readme);
            Assert.Contains("TorchSharp-cpu", readme);
        }
        // The sample data reader is not part of the library.
        Assert.Null(typeof(SIDCoTrainer).Assembly.GetType("Microsoft.ML.SIDCo.Datasets.FashionMnist"));

        // The README's program, as written there, in an app that references the package.
        string program = ReadmeProgram();
        string iris = Path.Combine(TestHost.SklearnDataset.DataDirectory, "iris.csv");

        // Without a native libtorch the first Fit says which packages to add. The app restores into a package folder of its
        // own: TorchSharp otherwise finds a libtorch package in the machine's NuGet cache, as it does for notebooks.
        string bare = App("bare", version, feed, program, iris);
        var failed =
            Dotnet($"run -c Release --project {bare}", TimeSpan.FromMinutes(8), bare, ("NUGET_PACKAGES", Path.Combine(_work, "packages")));
        log.WriteLine(failed.Output);
        Assert.NotEqual(0, failed.ExitCode);
        Assert.Contains("TorchSharp's native library (libtorch) could not be loaded", failed.Output);
        Assert.Contains("TorchSharp-cpu", failed.Output);
        Assert.Contains("libtorch-cpu-win-x64", failed.Output);

        // With TorchSharp-cpu (every platform's CPU libtorch) it trains, evaluates and predicts.
        string app = App("app", version, feed, program, iris, """<PackageReference Include="TorchSharp-cpu" Version="0.107.0" />""");
        var run = Dotnet($"run -c Release --project {app}", TimeSpan.FromMinutes(8), app);
        log.WriteLine(run.Output);
        Assert.True(run.ExitCode == 0, run.Output);
        var line = run.Output.Split('\n').Single(l => l.StartsWith("accuracy ", StringComparison.Ordinal));
        Assert.True(double.Parse(line.Split(' ')[1].TrimEnd(';'), System.Globalization.CultureInfo.InvariantCulture) > 0.9, line);
        Assert.Contains("is class 2", line); // the README's flower is a virginica

        // A Windows publish of the same app carries the native torch library.
        string published = Path.Combine(_work, "win-x64");
        var publish = Dotnet($"publish {app} -c Release -r win-x64 --self-contained false -o {published}", TimeSpan.FromMinutes(8), app);
        Assert.True(publish.ExitCode == 0, publish.Output);
        var files = Directory.GetFiles(published).Select(Path.GetFileName).Order().ToList();
        log.WriteLine($"win-x64 publish ({Directory.GetFiles(published).Sum(f => new FileInfo(f).Length) / (1 << 20)} MiB): " +
            $"{string.Join(", ", files)}");
        Assert.Contains("torch_cpu.dll", files);
        Assert.Contains("LibTorchSharp.dll", files);
        Assert.Contains("Microsoft.ML.SIDCo.dll", files);
    }

    [Fact]
    public void AModelSavedByMlNetIsScoredByAnAppWithoutTorchSharpOrSidco()
    {
        // Train a ConvNet with SIDCo and save the whole pipeline the ML.NET way.
        var ml = new MLContext(seed: 1);
        var (train, test) = TestHost.Scenarios.LoadData(ml, 3000, 1000);
        var options =
            new SIDCoTrainer.Options
            {
                Model = Microsoft.ML.SIDCo.Models.SIDCoModels.ConvNet(conv1: 8, conv2: 16, hidden: 32),
                Workers = 2,
                Epochs = 3,
                BatchSize = 32,
                LearningRate = 0.05,
                Density = 0.01
            };
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Extensions.SIDCoTrainer(options)).Fit(train);
        string zip = Path.Combine(_work, "model.zip"), scores = Path.Combine(_work, "scores.bin");
        ml.Model.Save(model, train.Schema, zip);
        var expected = model.Transform(test);

        // The deployment sample references Microsoft.ML, Microsoft.ML.OnnxTransformer and Microsoft.ML.OnnxRuntime only.
        string app = MpiRunner.Dll("src/Samples/OnnxDeployment", "OnnxDeployment");
        string appDir = Path.GetDirectoryName(app)!;
        var files =
            Directory.GetFiles(appDir, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(appDir, f)).Order().ToList();
        long appBytes = Directory.GetFiles(appDir, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        string sampleDir = Path.GetDirectoryName(MpiRunner.Dll("src/Samples/FashionMnist", "FashionMnist"))!;
        long sampleBytes = Directory.GetFiles(sampleDir, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        log.WriteLine($"deployment app output: {files.Count} files, {appBytes >> 20} MiB (the training sample's: {sampleBytes >> 20} " +
            $"MiB):\n  {string.Join("\n  ", files.Where(f => !f.StartsWith("runtimes", StringComparison.Ordinal)))}\n  runtimes/...: " +
            $"{files.Count(f => f.StartsWith("runtimes", StringComparison.Ordinal))} native files");
        Assert.DoesNotContain(files, f =>
            f.Contains("torch", StringComparison.OrdinalIgnoreCase) || f.Contains("SIDCo", StringComparison.OrdinalIgnoreCase));

        var run = MpiRunner.RunPlain(app, $"{zip} --limit 1000 --scores {scores}", TimeSpan.FromMinutes(3));
        log.WriteLine(run.Output);
        Assert.True(run.ExitCode == 0, run.Output);
        var bytes = File.ReadAllBytes(scores);
        const int Classes = 10, RowBytes = Classes * sizeof(float) + sizeof(uint);
        Assert.Equal(1000 * RowBytes, bytes.Length);
        var expectedScores = expected.GetColumn<float[]>("Score").ToArray();
        var expectedKeys = expected.GetColumn<uint>("PredictedLabel").ToArray();
        double worst = 0;
        int keys = 0;
        for (int r = 0; r < 1000; r++)
        {
            var row = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes.AsSpan(r * RowBytes, Classes * sizeof(float)));
            for (int c = 0; c < Classes; c++) worst = Math.Max(worst, Math.Abs(row[c] - expectedScores[r][c]));
            if (BitConverter.ToUInt32(bytes, r * RowBytes + Classes * sizeof(float)) != expectedKeys[r]) keys++;
        }
        log.WriteLine($"1000 test images scored by the app: largest |Score difference| {worst:G3}, PredictedLabel differs on {keys}");
        Assert.True(worst <= TestHost.Conformance.OnnxTolerance, $"{worst}");
        Assert.Equal(0, keys);
    }

    // The first C# block of the README's "Using it from ML.NET" section.
    private static string ReadmeProgram()
    {
        var readme = File.ReadAllText(Path.Combine(MpiRunner.RepoRoot, "README.md"));
        int section = readme.IndexOf("## Using it from ML.NET", StringComparison.Ordinal);
        int start = readme.IndexOf("```csharp\n", section, StringComparison.Ordinal) + "```csharp\n".Length;
        return readme[start..readme.IndexOf("```", start, StringComparison.Ordinal)];
    }

    // A console app that references the package from the local feed (added to the machine's own sources) and the given packages.
    private string App(string name, string version, string feed, string program, string dataFile, string extraReferences = "")
    {
        string app = Path.Combine(_work, name);
        Directory.CreateDirectory(app);
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings><Nullable>enable</Nullable>
                <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>
                <NoWarn>NU1603</NoWarn><NuGetAudit>false</NuGetAudit>
              </PropertyGroup>
              <ItemGroup><PackageReference Include="Microsoft.ML.SIDCo" Version="{version}" />{extraReferences}</ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration><packageSources><add key="local-feed" value="{feed}" /></packageSources></configuration>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), program);
        File.Copy(dataFile, Path.Combine(app, Path.GetFileName(dataFile)));
        IsolateFromRepository(app);
        return app;
    }

    // Stop MSBuild from picking up the repository's Directory.*.props (the temp folder is outside it, but be explicit).
    private void IsolateFromRepository(string? dir = null)
    {
        dir ??= _work;
        File.WriteAllText(Path.Combine(dir, "Directory.Build.props"), "<Project></Project>");
        File.WriteAllText(Path.Combine(dir, "Directory.Packages.props"), "<Project></Project>");
    }

    private static (int ExitCode, string Output) Dotnet(string args, TimeSpan timeout, string? workingDirectory = null,
        params (string Name, string Value)[] environment)
    {
        var psi = new ProcessStartInfo("dotnet", args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false
        };
        if (workingDirectory is not null) psi.WorkingDirectory = workingDirectory;
        foreach (var (name, value) in environment) psi.Environment[name] = value;
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
