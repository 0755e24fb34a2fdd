using System.Reflection;
using Microsoft.ML;

namespace Microsoft.ML.SIDCo.TestHost;

/// <summary>ML.NET keeps SchemaShape.Create internal; its pipelines call it for us. Tests that check GetOutputSchema directly reach it this
/// way.</summary>
public static class Shapes
{
    private static readonly MethodInfo s_create =
        typeof(SchemaShape).GetMethod("Create", BindingFlags.NonPublic | BindingFlags.Public | BindingFlags.Static,
        [typeof(DataViewSchema)])!;

    public static SchemaShape Of(DataViewSchema schema) => (SchemaShape)s_create.Invoke(null, [schema])!;
}
