using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Compression;

public class AdaptiveStageTests
{
    private static readonly float[][] s_heavy = [Samples.StudentT3(400_000, 1), Samples.StudentT3(400_000, 2)];
    private static readonly float[][] s_light = [Samples.Normal(400_000, 3), Samples.Normal(400_000, 4)];

    [Theory]
    [InlineData("sidco-e", "heavy", 0.001)]
    [InlineData("sidco-e", "heavy", 0.01)]
    [InlineData("sidco-e", "light", 0.001)]
    [InlineData("sidco-e", "light", 0.01)]
    [InlineData("sidco-p", "heavy", 0.001)]
    [InlineData("sidco-p", "heavy", 0.01)]
    [InlineData("sidco-p", "light", 0.001)]
    [InlineData("sidco-p", "light", 0.01)]
    public void ControllerReachesTargetWithin30Calls(string compressor, string tail, double density)
    {
        var data = tail == "heavy" ? s_heavy : s_light;
        var c = (SidcoCompressor)Compressors.Create(compressor, new CompressorOptions { Density = density, AdaptiveStages = true });
        var output = new SparseGradient();
        var ratios = new List<double>();
        for (int call = 0; call < 30; call++) ratios.Add(c.Compress(data[call % 2], output).AchievedOverTarget);
        // The last window the controller settled on (calls 26..30) must be within [0.8, 1.25].
        double last = ratios.Skip(25).Average();
        Assert.True(last >= 0.8 && last <= 1.25,
            $"{compressor} on {tail} at {density}: last-window ratio {last:F3}, stages {c.CurrentStages}, ratios {string.Join(", ", ratios.Select(r => r.ToString("F2")))}");
    }

    [Fact]
    public void ControllerLearnsThatMoreStagesRaiseDensityOnLightTails()
    {
        var c = (SidcoCompressor)Compressors.Create("sidco-e", new CompressorOptions { Density = 0.01 });
        var output = new SparseGradient();
        for (int call = 0; call < 30; call++) c.Compress(s_light[call % 2], output);
        Assert.Equal(-1, c.Controller!.MoreStagesLowerDensity);
        Assert.True(c.CurrentStages > 1);
    }

    [Fact]
    public void FixedStagesNeverMove()
    {
        var c = (SidcoCompressor)Compressors.Create("sidco-e", new CompressorOptions { Density = 0.001, AdaptiveStages = false, Stages = 2 });
        var output = new SparseGradient();
        for (int call = 0; call < 12; call++) Assert.Equal(2, c.Compress(s_heavy[0], output).Stages);
        Assert.Null(c.Controller);
    }
}
