using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Kernels;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Compression;

[Trait(Category.Name, Category.Unit)]
public class MagnitudeSelectionTests
{
    // Reference: a full sort by magnitude, ties by lower index, zeros never sent, then back in index order.
    private static int[] SortedTopK(float[] g, int k) => Enumerable.Range(0, g.Length).Where(i => g[i] != 0)
        .OrderByDescending(i => MathF.Abs(g[i])).ThenBy(i => i).Take(k).Order().ToArray();

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (string d in new[] { "laplace", "t3", "normal", "ties", "zeros", "constant", "tiny" })
            foreach (int k in new[] { 1, 37, 1000, 20_000 }) data.Add(d, k);
        return data;
    }

    private static float[] Data(string name)
    {
        const int n = 50_000;
        switch (name)
        {
            case "laplace": return SyntheticGradients.Laplace(n, seed: 1);
            case "t3": return SyntheticGradients.StudentT3(n, seed: 2);
            case "normal": return SyntheticGradients.Normal(n, seed: 3);
            case "ties": return SyntheticGradients.Laplace(n, seed: 4).Select(v => MathF.Round(v * 4) / 4).ToArray();
            case "zeros":
                var z = SyntheticGradients.Laplace(n, seed: 5);
                for (int i = 0; i < n; i++) if (i % 97 != 0) z[i] = 0; // 516 non-zeros: k above that sends only them
                return z;
            case "constant": return Enumerable.Range(0, n).Select(i => i % 2 == 0 ? 0.5f : -0.5f).ToArray();
            case "tiny": return SyntheticGradients.Normal(n, seed: 6).Select(v => v * 1e-40f).ToArray(); // subnormals
            default: throw new ArgumentException(name);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SelectEqualsAFullSort(string data, int k)
    {
        var g = Data(data);
        var output = new SparseGradient();
        new MagnitudeSelection().Select(g, k, output, new CpuGradientKernels());
        var expected = SortedTopK(g, k);
        Assert.Equal(expected, output.Indices.ToArray());
        Assert.Equal(expected.Select(i => g[i]).ToArray(), output.Values.ToArray());
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void KthLargestEqualsAFullSort(string data, int k)
    {
        var g = Data(data);
        float expected = g.Select(MathF.Abs).OrderDescending().ElementAt(k - 1);
        Assert.Equal(expected, new MagnitudeSelection().KthLargest(g, k));
    }

    [Fact]
    public void ASteadyCallAllocatesNothing()
    {
        var g = SyntheticGradients.Laplace(200_000, seed: 9);
        var selection = new MagnitudeSelection();
        var kernels = new CpuGradientKernels(maxThreads: 1);
        var output = new SparseGradient(1000);
        selection.Select(g, 200, output, kernels);
        long before = GC.GetAllocatedBytesForCurrentThread();
        selection.Select(g, 200, output, kernels);
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
    }
}
