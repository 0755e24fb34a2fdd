using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Architecture;

/// <summary>
/// The line limit of .editorconfig (<c>max_line_length</c>), which <c>dotnet format</c> does not enforce, checked on every C#
/// source of the repository.
/// </summary>
[Trait(Category.Name, Category.Unit)]
public class SourceStyleTests
{
    [Fact]
    public void NoSourceLineIsLongerThanTheEditorConfigLimit()
    {
        int limit = ReadLimit();
        Assert.Equal(140, limit);
        var files = new[] { "src", "test" }
            .SelectMany(d => Directory.EnumerateFiles(Path.Combine(MpiRunner.RepoRoot, d), "*.cs", SearchOption.AllDirectories))
            .Where(f => !IsBuildOutput(f))
            .ToList();
        Assert.True(files.Count > 50, $"only {files.Count} sources found");
        var longLines = LongLines(files, limit);
        Assert.True(longLines.Count == 0, string.Join("\n", longLines));
    }

    [Fact]
    public void TheCheckFindsALongLineAndSkipsBuildOutput()
    {
        string file = Path.Combine(Path.GetTempPath(), $"sidco-style-{Guid.NewGuid():N}.cs");
        try
        {
            File.WriteAllLines(file, ["short", new string('x', ReadLimit()), new string('y', ReadLimit() + 1)]);
            string expected = $"{Path.GetRelativePath(MpiRunner.RepoRoot, file)}:3 has {ReadLimit() + 1} characters";
            Assert.Equal([expected], LongLines([file], ReadLimit()));
        }
        finally { File.Delete(file); }
        Assert.False(IsBuildOutput(Path.Combine("src", "Microsoft.ML.SIDCo", "SIDCoTrainer.cs")));
        Assert.True(IsBuildOutput(Path.Combine("src", "Microsoft.ML.SIDCo", "obj", "Release", "x.cs")));
    }

    private static List<string> LongLines(IEnumerable<string> files, int limit) => files
        .SelectMany(f => File.ReadLines(f).Select((line, i) => (File: f, Line: i + 1, line.Length)))
        .Where(x => x.Length > limit)
        .Select(x => $"{Path.GetRelativePath(MpiRunner.RepoRoot, x.File)}:{x.Line} has {x.Length} characters")
        .ToList();

    private static bool IsBuildOutput(string path)
    {
        var parts = path.Split(Path.DirectorySeparatorChar);
        return parts.Contains("obj") || parts.Contains("bin");
    }

    // max_line_length of the [*.cs] section.
    private static int ReadLimit()
    {
        bool inCs = false;
        foreach (var raw in File.ReadLines(Path.Combine(MpiRunner.RepoRoot, ".editorconfig")))
        {
            string line = raw.Trim();
            if (line.StartsWith('[')) inCs = line == "[*.cs]";
            else if (inCs && line.StartsWith("max_line_length", StringComparison.Ordinal)) return int.Parse(line.Split('=')[1].Trim());
        }
        throw new InvalidDataException(".editorconfig has no max_line_length in its [*.cs] section");
    }
}
