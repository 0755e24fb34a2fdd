using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Tests.Training;

[Trait(Category.Name, Category.Unit)]
public class GradientHookTests
{
    [Fact]
    public void DenseThenDensityWarmupFollowTheScheduleThenTheTarget()
    {
        const int n = 100_000;
        var gradient = SyntheticGradients.Laplace(n, 11);
        var options = new CompressionHookOptions
        {
            Compressor = CompressorKind.TopK, // exact counts, so the schedule is visible in the selection sizes
            Compression = new CompressorOptions { Density = 0.001 },
            Exchange = ExchangeMode.Sparse,
            DenseWarmupSteps = 2,
            DensityWarmupSteps = 10,
        };
        using var group = new InProcessGroup(1);
        var selected = new List<(long Selected, ExchangeMode Mode)>();
        group.Run(comm =>
        {
            using var hook = new CompressionHook(options);
            hook.Initialize(new GradientHookContext(comm, n, [new ParameterSlice("w", 0, n, [n])]));
            for (long step = 0; step < 15; step++)
            {
                var g = (float[])gradient.Clone();
                var s = hook.Reduce(g, step);
                selected.Add((s.Selected, s.Mode));
                double expected = hook.DensityAt(step);
                if (step >= 2) Assert.Equal((long)Math.Ceiling(expected * n - 1e-9), s.Selected);
            }
            Assert.Equal(1.0, hook.DensityAt(1));
            Assert.Equal(0.25, hook.DensityAt(2), 12);
            Assert.Equal(0.25 * Math.Pow(0.001 / 0.25, 0.5), hook.DensityAt(7), 12);
            Assert.Equal(0.001, hook.DensityAt(12));
            Assert.Equal(0.001, hook.DensityAt(1_000_000));
        });
        Assert.All(selected.Take(2), s => Assert.Equal((n, ExchangeMode.Dense), s));
        // Strictly falling during the warm-up, then flat at k = 100.
        for (int i = 3; i < 12; i++) Assert.True(selected[i].Selected < selected[i - 1].Selected,
            $"step {i}: {selected[i].Selected} !< {selected[i - 1].Selected}");
        Assert.All(selected.Skip(12), s => Assert.Equal(100, s.Selected));
    }

    [Theory]
    [InlineData(CompressorKind.SidcoGammaPareto, 0)]
    [InlineData(CompressorKind.SidcoExponential, 200)]
    [InlineData(CompressorKind.TopK, 200)]
    public void StartUpCompilesTheCompressorWithoutTouchingItsState(CompressorKind kind, long densityWarmup)
    {
        // Initialize rehearses the run on throwaway instances (the density warm-up's start and the target;
        // for SIDCo also fixed two and three stages), so that compiling the code is not timed in the first
        // steps. The hook's own compressor and the caller's options must come out of it untouched: no calls,
        // the target density, an empty residual, and a first step equal to a fresh compressor's.
        const int n = 300_000;
        var gradient = SyntheticGradients.Laplace(n, 12);
        var options = new CompressionHookOptions
        {
            Compressor = kind,
            Compression = new CompressorOptions { Density = 0.001 },
            Exchange = ExchangeMode.Sparse,
            DensityWarmupSteps = densityWarmup,
        };
        using var group = new InProcessGroup(1);
        group.Run(comm =>
        {
            using var hook = new CompressionHook(options);
            hook.Initialize(new GradientHookContext(comm, n, [new ParameterSlice("w", 0, n, [n])]));
            Assert.Equal(0, hook.Compressor.Calls);
            Assert.Equal(0.001, hook.Compressor.Options.Density);
            Assert.Equal(0.001, options.Compression.Density);
            Assert.True(options.Compression.AdaptiveStages);
            Assert.All(hook.Feedback!.Residual.ToArray(), r => Assert.Equal(0f, r));

            var reduced = (float[])gradient.Clone();
            hook.Reduce(reduced, 0);
            var fresh = Compressors.Create(options.Compressor, options.Compression);
            fresh.SetDensity(hook.DensityAt(0)); // 0.25 with the warm-up
            var sparse = new SparseGradient();
            var feedback = new ErrorFeedback(n);
            fresh.Compress(gradient, sparse, feedback);
            var expected = new float[n];
            sparse.ToDense(expected);
            Assert.Equal(expected, reduced);
            Assert.Equal(feedback.Residual.ToArray(), hook.Feedback.Residual.ToArray());
        });
    }

    [Theory]
    [InlineData(-1, 0.25, "DensityWarmupSteps")]
    [InlineData(10, 0.0005, "DensityWarmupStart")]
    [InlineData(10, 1.5, "DensityWarmupStart")]
    public void InvalidWarmupSettingsAreRejectedByName(long steps, double start, string name)
    {
        var options =
            new CompressionHookOptions
            {
                Compression = new CompressorOptions { Density = 0.001 },
                DensityWarmupSteps = steps,
                DensityWarmupStart = start
            };
        using var group = new InProcessGroup(1);
        group.Run(comm =>
        {
            using var hook = new CompressionHook(options);
            var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
                hook.Initialize(new GradientHookContext(comm, 10, [new ParameterSlice("w", 0, 10, [10])])));
            Assert.Equal(name, e.ParamName);
        });
    }
}
