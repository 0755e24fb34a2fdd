using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Training;

/// <summary>
/// Options.Device: the CPU trains as before; a CUDA device this machine cannot use (no CUDA build of libtorch here) is
/// refused before training with what to install. CUDA training itself is untested.
/// </summary>
[Collection(FashionMnistCollection.Name)]
public class DeviceTests(FashionMnistFixture data)
{
    [Theory]
    [Trait(Category.Name, Category.Unit)]
    [InlineData("cuda")]
    [InlineData("cuda:1")]
    public void ACudaDeviceWithoutCudaIsRefusedBeforeTrainingNamingWhatToInstall(string device)
    {
        Assert.False(TorchSharp.torch.cuda.is_available(), "this test expects a machine without a usable CUDA device");
        var o = new SIDCoTrainer.Options { Device = device, Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(8), Epochs = 1 };
        var keys = data.Ml.Transforms.Conversion.MapValueToKey("Label");
        var e = Assert.Throws<ArgumentException>(() => keys.Append(data.Ml.Extensions.SIDCoTrainer(o)).Fit(data.Train));
        Assert.Equal("Device", e.ParamName);
        Assert.Contains("TorchSharp-cuda-linux", e.Message);
    }

    [Theory]
    [Trait(Category.Name, Category.Unit)]
    [InlineData("gpu")]
    [InlineData("cuda:x")]
    [InlineData("")]
    public void AnUnknownDeviceIsRefusedNamingTheOption(string device)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            data.Ml.Extensions.SIDCoTrainer(new SIDCoTrainer.Options { Device = device }));
        Assert.Equal("Device", e.ParamName);
    }

    [Fact]
    [Trait(Category.Name, Category.Training)]
    public void TheCpuDeviceNamedExplicitlyTrainsAsTheDefaultDoes()
    {
        SIDCoTrainer.Options Options(string? device)
        {
            var o = new SIDCoTrainer.Options { Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(16), Epochs = 1, MaxStepsPerEpoch = 5 };
            if (device is not null) o.Device = device;
            return o;
        }
        var keyed = data.Ml.Transforms.Conversion.MapValueToKey("Label").Fit(data.Train).Transform(data.Train);
        using var byDefault = data.Ml.Extensions.SIDCoTrainer(Options(null)).Fit(keyed);
        using var cpu = data.Ml.Extensions.SIDCoTrainer(Options("cpu")).Fit(keyed);
        Assert.Equal(byDefault.WeightsFingerprint, cpu.WeightsFingerprint);
    }
}
