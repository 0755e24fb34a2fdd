using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;
using TorchSharp;

namespace Microsoft.ML.SIDCo.Tests.Training;

[Trait(Category.Name, Category.Unit)]
public class ParameterSetTests
{
    [Fact]
    public void GatheringGradientsLeavesNoTensorAlive()
    {
        using var model = SIDCoModels.Mlp(16).Build(20, 3);
        var ps = new ParameterSet(model);
        using (var scope = torch.NewDisposeScope())
        {
            var loss = model.forward(torch.randn(8, 20)).sum();
            loss.backward();
        }
        var bucket = new float[ps.Length];
        ps.GatherGradients(bucket);
        long before = torch.Tensor.TotalCount;
        for (int i = 0; i < 50; i++) ps.GatherGradients(bucket);
        // Every call reads 4 gradients; a wrapper left undisposed would keep its step's native gradient alive.
        Assert.Equal(before, torch.Tensor.TotalCount);
        Assert.Contains(bucket, v => v != 0);
    }
}
