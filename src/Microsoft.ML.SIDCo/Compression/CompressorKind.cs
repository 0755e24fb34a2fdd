namespace Microsoft.ML.SIDCo.Compression;

/// <summary>The gradient compressors this library ships. <see cref="CompressorNames"/> gives each a stable command-line name.</summary>
public enum CompressorKind
{
    /// <summary>No compression: the dense gradient is exchanged (name <c>none</c>).</summary>
    None,
    /// <summary>SIDCo with double-exponential fits at every stage (name <c>sidco-e</c>).</summary>
    SidcoExponential,
    /// <summary>SIDCo with a double-gamma first stage and generalized-Pareto later stages (name <c>sidco-gp</c>).</summary>
    SidcoGammaPareto,
    /// <summary>SIDCo with generalized-Pareto fits at every stage (name <c>sidco-p</c>).</summary>
    SidcoPareto,
    /// <summary>Exact top-k by magnitude (name <c>topk</c>).</summary>
    TopK,
    /// <summary>Deep Gradient Compression's sampled threshold (name <c>dgc</c>).</summary>
    Dgc,
    /// <summary>RedSync's binary search on a mean-to-max threshold (name <c>redsync</c>).</summary>
    RedSync,
    /// <summary>GaussianKSGD's normal-fit threshold with corrections (name <c>gaussiank</c>).</summary>
    GaussianK,
    /// <summary>k uniformly random entries (name <c>randomk</c>).</summary>
    RandomK,
}

/// <summary>Stable names of the compressors, as used on command lines and in benchmark JSON.</summary>
public static class CompressorNames
{
    private static readonly (CompressorKind Kind, string Name)[] s_names =
    [
        (CompressorKind.None, "none"), (CompressorKind.SidcoExponential, "sidco-e"), (CompressorKind.SidcoGammaPareto, "sidco-gp"),
        (CompressorKind.SidcoPareto, "sidco-p"), (CompressorKind.TopK, "topk"), (CompressorKind.Dgc, "dgc"),
        (CompressorKind.RedSync, "redsync"), (CompressorKind.GaussianK, "gaussiank"), (CompressorKind.RandomK, "randomk"),
    ];

    /// <summary>All compressors in a stable order.</summary>
    public static IReadOnlyList<CompressorKind> All { get; } = s_names.Select(n => n.Kind).ToArray();

    /// <summary>The stable name of <paramref name="kind"/>.</summary>
    public static string ToName(this CompressorKind kind)
    {
        foreach (var (k, name) in s_names) if (k == kind) return name;
        throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown compressor kind.");
    }

    /// <summary>Parses a stable name (case-insensitive); throws with the list of valid names otherwise.</summary>
    public static CompressorKind Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var (k, n) in s_names) if (string.Equals(n, name.Trim(), StringComparison.OrdinalIgnoreCase)) return k;
        throw new ArgumentException($"Unknown compressor '{name}'. Valid names: {string.Join(", ", s_names.Select(s => s.Name))}.",
            nameof(name));
    }

    /// <summary>True for the three SIDCo variants.</summary>
    public static bool IsSidco(this CompressorKind kind) =>
        kind is CompressorKind.SidcoExponential or CompressorKind.SidcoGammaPareto or CompressorKind.SidcoPareto;
}
