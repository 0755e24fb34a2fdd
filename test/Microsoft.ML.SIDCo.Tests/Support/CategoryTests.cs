using System.Reflection;

namespace Microsoft.ML.SIDCo.Tests.Support;

[Trait(Category.Name, Category.Unit)]
public class CategoryTests
{
    [Fact]
    public void EveryTestHasACategory()
    {
        // A test without one would drop out of `./build.sh test --fast` and of any category filter unnoticed.
        // xunit's TraitAttribute keeps its name and value only as constructor arguments in the metadata.
        static IEnumerable<string> Categories(MemberInfo member) => member.GetCustomAttributesData()
            .Where(a => a.AttributeType == typeof(TraitAttribute) && (string?)a.ConstructorArguments[0].Value == Category.Name)
            .Select(a => (string)a.ConstructorArguments[1].Value!);
        var tests = typeof(CategoryTests).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods().Select(m => (Type: t, Method: m)))
            .Where(x => x.Method.GetCustomAttributes<FactAttribute>().Any())
            .ToList();
        string[] known = [Category.Unit, Category.Mpi, Category.Cluster, Category.Training, Category.Packaging];
        var missing =
            tests.Where(x => !Categories(x.Method).Concat(Categories(x.Type)).Any(known.Contains)).Select(x =>
            $"{x.Type.Name}.{x.Method.Name}").ToList();
        Assert.True(tests.Count > 100, $"{tests.Count} tests found");
        Assert.Empty(missing);
    }
}
