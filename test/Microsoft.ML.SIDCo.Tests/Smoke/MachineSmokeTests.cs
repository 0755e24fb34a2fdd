using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using Microsoft.ML.Data;
using Microsoft.ML.SIDCo.Samples;
using Microsoft.ML.SIDCo.Tests.Support;
using TorchSharp;

namespace Microsoft.ML.SIDCo.Tests.Smoke;

/// <summary>Proves each real part works on this machine.</summary>
[Trait(Category.Name, Category.Unit)]
public class MachineSmokeTests
{
    [Fact]
    public void TorchSharpBackwardMatchesHandComputedGradient()
    {
        using var scope = torch.NewDisposeScope();
        // y = sum((w * x)^2) with w = [1, 2, 3], x = [4, 5, 6]: dy/dw = 2 w x^2 = [32, 100, 216].
        var w = torch.tensor(new float[] { 1, 2, 3 }).requires_grad_();
        var x = torch.tensor(new float[] { 4, 5, 6 });
        var y = (w * x).pow(2).sum();
        y.backward();
        Assert.Equal(16 + 100 + 324, y.item<float>());
        Assert.Equal(new float[] { 32, 100, 216 }, w.grad!.data<float>().ToArray());
    }

    private sealed class Row { public float A { get; set; } public string B { get; set; } = ""; }

    [Fact]
    public void MlNetLoadsAnInMemoryDataView()
    {
        var ml = new MLContext(seed: 1);
        var view = ml.Data.LoadFromEnumerable(new[] { new Row { A = 1.5f, B = "x" }, new Row { A = -2, B = "y" } });
        Assert.Equal(2, view.Schema.Count);
        Assert.Equal(new[] { 1.5f, -2f }, view.GetColumn<float>("A").ToArray());
    }

    private static void Saxpy(Index1D i, float a, ArrayView<float> x, ArrayView<float> y) => y[i] = a * x[i] + y[i];

    [Fact]
    public void IlgpuKernelRunsOnTheCpuAccelerator()
    {
        using var context = Context.Create(b => b.CPU());
        using var accelerator = context.CreateCPUAccelerator(0);
        var kernel = accelerator.LoadAutoGroupedStreamKernel<Index1D, float, ArrayView<float>, ArrayView<float>>(Saxpy);
        using var x = accelerator.Allocate1D(new float[] { 1, 2, 3, 4 });
        using var y = accelerator.Allocate1D(new float[] { 10, 20, 30, 40 });
        kernel(4, 2f, x.View, y.View);
        accelerator.Synchronize();
        Assert.Equal(new float[] { 12, 24, 36, 48 }, y.GetAsArray1D());
    }

    [Theory]
    [InlineData("train", 60000)]
    [InlineData("t10k", 10000)]
    public void FashionMnistFilesHaveTheExpectedIdxHeaders(string prefix, int count)
    {
        using var images = FashionMnist.Open(FashionMnist.Find(FashionMnist.DefaultDirectory, $"{prefix}-images-idx3-ubyte"));
        using var labels = FashionMnist.Open(FashionMnist.Find(FashionMnist.DefaultDirectory, $"{prefix}-labels-idx1-ubyte"));
        var ih = FashionMnist.ReadHeader(images);
        var lh = FashionMnist.ReadHeader(labels);
        Assert.Equal(0x08, ih.DataType); // unsigned bytes
        Assert.Equal(new[] { count, 28, 28 }, ih.Dimensions);
        Assert.Equal(new[] { count }, lh.Dimensions);
    }

    [Fact]
    public void FashionMnistLoadsLabelsInRange()
    {
        var test = FashionMnist.Load(train: false, limit: 500);
        Assert.Equal(500, test.Length);
        Assert.All(test, e => { Assert.Equal(784, e.Features.Length); Assert.InRange(e.Label, 0u, 9u); });
        Assert.True(test.Select(e => e.Label).Distinct().Count() == 10);
        Assert.InRange(test.Average(e => e.Features.Average()), 0.2, 0.4); // mean intensity of Fashion-MNIST ~0.29
    }
}
