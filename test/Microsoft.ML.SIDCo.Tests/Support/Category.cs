namespace Microsoft.ML.SIDCo.Tests.Support;

/// <summary>
/// Test categories, as <c>[Trait(Category.Name, Category.Unit)]</c>. <c>./build.sh test --fast</c> runs the unit tests (the
/// inner loop, under a minute); CI runs every category.
/// </summary>
public static class Category
{
    /// <summary>The trait's name.</summary>
    public const string Name = "Category";

    /// <summary>In-process, no training run of more than a few steps, no child process.</summary>
    public const string Unit = "unit";

    /// <summary>Starts programs under the real mpirun.</summary>
    public const string Mpi = "mpi";

    /// <summary>The emulated multi-host cluster (network namespaces, rate-limited links).</summary>
    public const string Cluster = "cluster";

    /// <summary>Trains models on real data end to end.</summary>
    public const string Training = "training";

    /// <summary>Builds, packs, publishes and runs separate apps (the consumer, the notebook, the deployment app).</summary>
    public const string Packaging = "packaging";
}
