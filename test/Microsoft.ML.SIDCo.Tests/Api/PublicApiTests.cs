using System.Reflection;
using Microsoft.ML.SIDCo.Tests.Support;
using Xunit.Abstractions;

namespace Microsoft.ML.SIDCo.Tests.Api;

/// <summary>
/// The package's public surface against the approved listing, PublicApi.approved.txt beside this file: a change to it fails
/// here until the listing is regenerated on purpose (<c>SIDCO_UPDATE_PUBLIC_API=1 ./build.sh test --fast</c>), so the
/// diff shows the API change in review.
/// </summary>
[Trait(Category.Name, Category.Unit)]
public class PublicApiTests(ITestOutputHelper log)
{
    private const BindingFlags Declared =
        BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    [Fact]
    public void ThePublicApiIsTheApprovedOne()
    {
        string approvedPath = Path.Combine(MpiRunner.RepoRoot, "test", "Microsoft.ML.SIDCo.Tests", "Api", "PublicApi.approved.txt");
        var listing = Listing(typeof(SIDCoTrainer).Assembly);
        int types = listing.Count(l => !l.StartsWith(' ')), members = listing.Count - types;
        log.WriteLine($"{types} public types, {members} public or protected members");
        if (Environment.GetEnvironmentVariable("SIDCO_UPDATE_PUBLIC_API") == "1") File.WriteAllLines(approvedPath, listing);
        var approved = File.ReadAllLines(approvedPath);
        var added = listing.Except(approved).ToList();
        var removed = approved.Except(listing).ToList();
        Assert.True(added.Count == 0 && removed.Count == 0,
            $"The public API changed. Added:\n  {string.Join("\n  ", added)}\nRemoved:\n  {string.Join("\n  ", removed)}\n"
            + "If intended, regenerate PublicApi.approved.txt with SIDCO_UPDATE_PUBLIC_API=1 and review its diff.");
    }

    // One line per public type, then its public and protected members (indented), in a stable order. The compiler's
    // unspeakable types (C# 14 extension blocks) are left out: their members appear on the static classes that declare them.
    internal static List<string> Listing(Assembly assembly)
    {
        var lines = new List<string>();
        foreach (var type in assembly.GetExportedTypes().Where(t => !t.Name.StartsWith('<')).OrderBy(t => t.FullName,
            StringComparer.Ordinal))
        {
            lines.Add($"{Kind(type)} {type.FullName}"
                + (type.BaseType is { } b && b != typeof(object) && b != typeof(ValueType) && b != typeof(Enum) ? $" : {b.Name}" : ""));
            var members = type.GetMembers(Declared)
                .Where(m => m switch
                {
                    MethodBase mb =>
                        (mb.IsPublic || mb.IsFamily || mb.IsFamilyOrAssembly)
                        && !(mb.IsSpecialName
                        && mb.Name.StartsWith("get_", StringComparison.Ordinal) | mb.Name.StartsWith("set_",
                        StringComparison.Ordinal) | mb.Name.StartsWith("add_", StringComparison.Ordinal) | mb.Name.StartsWith("remove_",
                        StringComparison.Ordinal)),
                    FieldInfo f => (f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly) && !f.IsSpecialName,
                    PropertyInfo p => p.GetAccessors(nonPublic: true).Any(a => a.IsPublic || a.IsFamily || a.IsFamilyOrAssembly),
                    EventInfo e => e.AddMethod is { } add && (add.IsPublic || add.IsFamily),
                    _ => false, // nested types are listed as types of their own
                })
                .Select(m => "    " + m.ToString())
                .Order(StringComparer.Ordinal);
            lines.AddRange(members);
        }
        return lines;
    }

    private static string Kind(Type t) => t.IsInterface ? "interface" : t.IsEnum ? "enum" : t.IsValueType ? "struct"
        : typeof(Delegate).IsAssignableFrom(t) ? "delegate" : t.IsAbstract && t.IsSealed ? "static class" : "class";
}
