using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Kernels;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Compression;

[Trait(Category.Name, Category.Unit)]
public class CompressorTests
{
    private static readonly float[] s_laplace = SyntheticGradients.Laplace(1_000_000, seed: 21);

    public static TheoryData<string> AllNames() => new(CompressorNames.All.Select(k => k.ToName()));

    [Theory]
    [MemberData(nameof(AllNames))]
    public void NamesRoundTrip(string name) => Assert.Equal(name, CompressorNames.Parse(name.ToUpperInvariant()).ToName());

    [Fact]
    public void UnknownNameListsTheValidOnes()
    {
        var e = Assert.Throws<ArgumentException>(() => CompressorNames.Parse("top-k"));
        Assert.Contains("sidco-e", e.Message);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-0.1)]
    [InlineData(1.5)]
    [InlineData(double.NaN)]
    public void DensityOutsideRangeNamesTheOption(double density)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            Compressors.Create("sidco-e", new CompressorOptions { Density = density }));
        Assert.Equal("Density", e.ParamName);
    }

    [Fact]
    public void TopKEqualsFullSort()
    {
        var g = SyntheticGradients.Laplace(50_000, seed: 3);
        g[10] = g[20] = 100f; g[30] = -100f; // ties at the top
        var c = Compressors.Create("topk", new CompressorOptions { Density = 0.01 });
        var output = new SparseGradient();
        c.Compress(g, output);
        var expected = Enumerable.Range(0, g.Length).OrderByDescending(i => MathF.Abs(g[i])).ThenBy(i => i).Take(500).Order().ToArray();
        Assert.Equal(expected, output.Indices.ToArray());
        Assert.Equal(expected.Select(i => g[i]).ToArray(), output.Values.ToArray());
    }

    // Documented bands (docs/method.md, "Baselines") for achieved/target on 1M Laplace draws:
    // DGC's sample estimate is within sampling error below (at 0.001 only the 10 largest of a 10,000-entry
    // sample set the threshold, a relative error of about 1/sqrt(10)) and capped at 4k/3 above; RedSync stops
    // once its interval is narrower than 0.2 and its last probe may lie below k; GaussianK's normal fit is far off
    // on Laplace tails and selects at its third count, whatever it is (0.06x k at 0.001: BaselineFidelityTests).
    [Theory]
    [InlineData("dgc", 0.01, 0.75, 1.34)]
    [InlineData("dgc", 0.001, 0.3, 1.34)]
    [InlineData("redsync", 0.01, 0.2, 2.0)]
    [InlineData("redsync", 0.001, 0.2, 5.0)]
    [InlineData("gaussiank", 0.01, 0.02, 10.0)]
    [InlineData("gaussiank", 0.001, 0.02, 10.0)]
    public void BaselinesLandInTheirBands(string name, double density, double low, double high)
    {
        var c = Compressors.Create(name, new CompressorOptions { Density = density, Seed = 1 });
        var stats = c.Compress(s_laplace, new SparseGradient());
        Assert.InRange(stats.AchievedDensity / density, low, high);
    }

    [Theory]
    [InlineData(0.01)]
    [InlineData(0.001)]
    public void GaussianKStopsInsideItsWindowOrAfterThreeCounts(double density)
    {
        var stats = Compressors.Create("gaussiank", new CompressorOptions { Density = density }).Compress(s_laplace, new SparseGradient());
        double ratio = stats.AchievedOverTarget;
        Assert.True(stats.Stages == 3 || (ratio >= 2.0 / 3 && ratio <= 4.0 / 3), $"ratio {ratio}, passes {stats.Stages}");
    }

    [Fact]
    public void RandomKSendsExactlyKDistinctAscendingIndices()
    {
        var c = Compressors.Create("randomk", new CompressorOptions { Density = 0.01, Seed = 7 });
        var output = new SparseGradient();
        c.Compress(s_laplace.AsSpan(0, 10_000), output);
        Assert.Equal(100, output.Count);
        Assert.True(output.Indices.ToArray().Zip(output.Indices.ToArray().Skip(1)).All(p => p.First < p.Second));
    }

    [Theory]
    [MemberData(nameof(AllNames))]
    public void SelectionsAreAscendingAndCarryTheirValues(string name)
    {
        var g = s_laplace.AsSpan(0, 100_000).ToArray();
        var c = Compressors.Create(name, new CompressorOptions { Density = 0.01, Seed = 2 });
        var output = new SparseGradient();
        var stats = c.Compress(g, output);
        Assert.Equal(stats.Selected, output.Count);
        var idx = output.Indices.ToArray();
        for (int j = 1; j < idx.Length; j++) Assert.True(idx[j - 1] < idx[j]);
        for (int j = 0; j < idx.Length; j++) Assert.Equal(g[idx[j]], output.Values[j]);
    }

    [Theory]
    [MemberData(nameof(AllNames))]
    public void ErrorFeedbackLosesNothing(string name)
    {
        var g = SyntheticGradients.Laplace(20_000, seed: 4);
        var feedback = new ErrorFeedback(g.Length);
        var c = Compressors.Create(name, new CompressorOptions { Density = 0.01, Seed = 3 });
        var output = new SparseGradient();
        c.Compress(g, output, feedback); // builds a non-trivial residual
        var old = feedback.Residual.ToArray();
        var g2 = SyntheticGradients.Laplace(20_000, seed: 5);
        c.Compress(g2, output, feedback);
        var sent = new float[g.Length];
        output.ToDense(sent);
        for (int i = 0; i < g.Length; i++)
        {
            float acc = g2[i] + old[i];
            Assert.Equal(acc, sent[i] + feedback.Residual[i]); // exactly: one of the two is zero
            Assert.True(sent[i] == 0 || feedback.Residual[i] == 0);
        }
    }

    [Fact]
    public void NonFiniteGradientThrowsNamingBufferAndIndexAndLosesNothing()
    {
        var g = SyntheticGradients.Laplace(10_000, seed: 6);
        var feedback = new ErrorFeedback(g.Length, "layer1.weight");
        var c = Compressors.Create("sidco-e", new CompressorOptions { Density = 0.01 });
        c.Compress(g, new SparseGradient(), feedback);
        var before = feedback.Residual.ToArray();
        g[1234] = float.NaN; g[5000] = float.PositiveInfinity;
        var e = Assert.Throws<NonFiniteGradientException>(() => c.Compress(g, new SparseGradient(), feedback));
        Assert.Equal(1234, e.Index);
        Assert.Contains("layer1.weight", e.Message);
        // Nothing was sent; the finite part of the rejected gradient waits in the residual, the bad entries kept their old residual.
        for (int i = 0; i < g.Length; i++)
            Assert.Equal(float.IsFinite(g[i]) ? g[i] + before[i] : before[i], feedback.Residual[i]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void CandidatePrefilterSelectsExactlyWhatAFullPassSelects(int stages)
    {
        var x1 = SyntheticGradients.Laplace(600_000, seed: 41);
        var x2 = SyntheticGradients.Laplace(600_000, seed: 42);
        var options = new CompressorOptions { Density = 0.001, AdaptiveStages = false, Stages = stages };
        var warmed = Compressors.Create("sidco-e", options);
        warmed.Compress(x1, new SparseGradient()); // its threshold arms the prefilter for the next call
        var viaCandidates = new SparseGradient();
        var a = warmed.Compress(x2, viaCandidates);
        var viaFullPass = new SparseGradient();
        var b = Compressors.Create("sidco-e", options).Compress(x2, viaFullPass);
        if (stages == 1) Assert.Equal(b.Threshold, a.Threshold);
        else
        {
            // The warmed compressor's second stage fits the peaks over the first call's bound.
            double firstStage =
                DefinitionThreshold(CompressorKind.SidcoExponential, x1, options.Density, stages, options.GammaQuantile).FirstStage;
            double expectedThreshold =
                DefinitionThreshold(CompressorKind.SidcoExponential, x2, options.Density, stages, options.GammaQuantile,
                firstStage).Threshold;
            // later-stage sums add the same entries in another order
            Assert.Equal(expectedThreshold, a.Threshold, expectedThreshold * 1e-5);
        }
        var expected = Enumerable.Range(0, x2.Length).Where(i => MathF.Abs(x2[i]) > a.Threshold).ToArray();
        Assert.Equal(expected, viaCandidates.Indices.ToArray());
        if (stages == 1) Assert.Equal(viaFullPass.Indices.ToArray(), viaCandidates.Indices.ToArray());
    }

    [Theory]
    [InlineData("sidco-e")]
    [InlineData("sidco-gp")]
    [InlineData("sidco-p")]
    public void ManyStagesFollowTheDefinitionWhateverTheyRead(string name)
    {
        // Eight stages at density 0.001, twice: on the second call the stages whose starting threshold lies
        // above the first pass's candidate bound read only the candidates. Each threshold must still be the
        // method's own (every stage fitted on all the exceedances of the whole vector, computed here in
        // double), and the selection everything above it.
        var options = new CompressorOptions { Density = 0.001, AdaptiveStages = false, Stages = 8 };
        var c = Compressors.Create(name, options);
        var output = new SparseGradient();
        double? peaksBound = null;
        for (int call = 0; call < 2; call++)
        {
            var x = SyntheticGradients.StudentT3(400_000, seed: 70 + call);
            var stats = c.Compress(x, output);
            (double expected, double firstStage) =
                DefinitionThreshold(c.Kind, x, options.Density, options.Stages, options.GammaQuantile, peaksBound);
            // the second call really fits the peaks of the first's bound
            if (peaksBound is { } b) Assert.InRange(x.Count(v => MathF.Abs(v) > (float)b) / (double)x.Length, 0.125, 0.5);
            peaksBound = firstStage;
            Assert.Equal(8, stats.Stages);
            Assert.Equal(expected, stats.Threshold, expected * 1e-4);
            Assert.Equal(Enumerable.Range(0, x.Length).Where(i => MathF.Abs(x[i]) > stats.Threshold).ToArray(), output.Indices.ToArray());
        }
    }

    [Theory]
    [InlineData("sidco-e")]
    [InlineData("sidco-gp")]
    [InlineData("sidco-p")]
    public void SecondStageReusesTheFirstPassUnlessTheScaleJumps(string name)
    {
        // From the second call on, the second stage fits the peaks the first pass collected over the
        // previous call's bound: no exceedance pass over the whole buffer. When the gradient's scale jumps
        // (here it drops to 0.3x), the old bound cuts a few per cent and the stage measures its own, as on call one.
        const int n = 300_000;
        var kernels = new CountingKernels();
        var options = new CompressorOptions { Density = 0.001, AdaptiveStages = false, Stages = 2 };
        var c = Compressors.Create(name, options, kernels);
        var output = new SparseGradient();
        double? peaksBound = null;
        var fullPasses = new List<int>();
        for (int call = 0; call < 4; call++)
        {
            var g = SyntheticGradients.StudentT3(n, seed: 90 + call);
            if (call == 3) for (int i = 0; i < n; i++) g[i] *= 0.3f;
            kernels.FullExceedancePasses = 0;
            var stats = c.Compress(g, output);
            fullPasses.Add(kernels.FullExceedancePasses);
            (double expected, double firstStage) =
                DefinitionThreshold(c.Kind, g, options.Density, options.Stages, options.GammaQuantile, peaksBound);
            peaksBound = firstStage;
            Assert.Equal(expected, stats.Threshold, expected * 1e-4);
            Assert.Equal(g.Count(v => MathF.Abs(v) > stats.Threshold), output.Count);
            Assert.InRange(output.Count, 1, n / 20);
        }
        Assert.Equal([1, 0, 0, 1], fullPasses);
    }

    [Theory]
    [InlineData("sidco-gp", (int)StatisticsKinds.LogMagnitudes)] // the gamma shape, from the mean log
    [InlineData("sidco-p", (int)StatisticsKinds.Squares)] // the generalized-Pareto shape, from the variance
    public void TheFirstStageShapeIsRefittedOnOneCallInFourWhileThePeaksSetTheThreshold(string name, int shapeStatisticFlags)
    {
        var shapeStatistic = (StatisticsKinds)shapeStatisticFlags; // (the kernels' types are internal; a test's parameters are public)
        // While the second stage fits the peaks, the first stage of SIDCo-GP and SIDCo-P only places the next
        // call's bound: the statistic its shape needs is measured on one call in four, and in between the
        // bound is the last fit rescaled by the call's mean. The gradient's scale changes every call, so a
        // bound that was not rescaled (or one refitted every call) would cut other peaks and give other
        // thresholds. On the last
        // call the scale drops to a quarter: the bound then cuts too few peaks to use, and the call measures
        // that statistic with a pass of its own and fits its first stage after all.
        const int n = 300_000;
        var kernels = new CountingKernels();
        var options = new CompressorOptions { Density = 0.001, AdaptiveStages = false, Stages = 2 };
        var c = Compressors.Create(name, options, kernels);
        var output = new SparseGradient();
        float[] scales = [1f, 1.2f, 0.9f, 1.1f, 1f, 0.85f, 1.15f, 0.95f, 1.05f, 0.25f];
        double? bound = null;
        double boundPerMean = double.NaN;
        var shapePasses = new List<string>();
        for (int call = 0; call < scales.Length; call++)
        {
            var g = SyntheticGradients.StudentT3(n, seed: 130 + call);
            for (int i = 0; i < n; i++) g[i] *= scales[call];
            kernels.Requested.Clear();
            var stats = c.Compress(g, output);
            shapePasses.Add(string.Join("+", kernels.Requested.Select(k => (k & shapeStatistic) != 0 ? "shape" : "basic")));
            (double expected, double firstStage) =
                DefinitionThreshold(c.Kind, g, options.Density, options.Stages, options.GammaQuantile, bound);
            Assert.Equal(expected, stats.Threshold, expected * 1e-4);
            Assert.Equal(g.Count(v => MathF.Abs(v) > stats.Threshold), output.Count);
            double mean = g.Average(v => (double)MathF.Abs(v));
            bool fitted = call % SidcoCompressor.ShapeRefitInterval == 0 || call == scales.Length - 1;
            if (fitted) boundPerMean = firstStage / mean;
            bound = fitted ? firstStage : mean * boundPerMean;
        }
        Assert.Equal(["shape", "basic", "basic", "basic", "shape", "basic", "basic", "basic", "shape", "basic+shape"], shapePasses);
    }

    [Theory]
    [InlineData("sidco-e")]
    [InlineData("sidco-gp")]
    [InlineData("sidco-p")]
    [InlineData("topk")]
    [InlineData("dgc")]
    [InlineData("redsync")]
    [InlineData("gaussiank")]
    [InlineData("randomk")]
    public void ASteadyCallWithErrorFeedbackAllocatesNothing(string name)
    {
        // A training step compresses once per worker: allocation there would wake the garbage collector inside
        // timed steps. 600,000 entries span three of the CPU backend's chunks (they run in order on this thread
        // below its parallel threshold). The output has room for any selection (RedSync's swings with its search,
        // and growing it is not a per-call cost); the first calls size the compressor's own buffers.
        const int n = 600_000;
        var c = Compressors.Create(name, new CompressorOptions { Density = 0.001 });
        var feedback = new ErrorFeedback(n);
        var output = new SparseGradient();
        output.Reserve(n);
        var gradients = Enumerable.Range(0, 4).Select(i => SyntheticGradients.StudentT3(n, seed: 300 + i)).ToArray();
        for (int call = 0; call < 12; call++) c.Compress(gradients[call % 4], output, feedback);
        // Up to three rounds of 8 calls: a per-call allocation shows in every round; a one-off 8 KiB allocation on this
        // thread (seen about once in 8 runs of the suite; its source is not identified) lands in one at most.
        var rounds = new List<long>();
        for (int round = 0; round < 3 && (rounds.Count == 0 || rounds[^1] != 0); round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int call = 0; call < 8; call++) c.Compress(gradients[call % 4], output, feedback);
            rounds.Add(GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.True(rounds[^1] == 0, $"bytes allocated per round of 8 calls: {string.Join(", ", rounds)}");
        Assert.True(output.Count > 0); // (RedSync's search sends over a third of |t3| at times: what it sends is not the point here)
    }

    [Theory]
    [InlineData("sidco-e", true)]
    [InlineData("sidco-gp", true)]
    [InlineData("sidco-p", true)]
    [InlineData("sidco-e", false)]
    [InlineData("sidco-gp", false)]
    [InlineData("sidco-p", false)]
    public void ARestoredCompressorContinuesExactlyWhereTheSavedOneWas(string name, bool adaptive)
    {
        // Saved after six calls (with a calibrated stage controller, or with two fixed stages: a peaks bound
        // and SIDCo-GP mid-way between shape refits), a fresh compressor that loads the state, given the
        // same residual, must send exactly what the original sends on the next calls.
        const int n = 200_000;
        var options = new CompressorOptions { Density = 0.001, Stages = 2, AdaptiveStages = adaptive };
        var original = Compressors.Create(name, options);
        var feedback = new ErrorFeedback(n);
        var output = new SparseGradient();
        for (int call = 0; call < 6; call++) original.Compress(SyntheticGradients.StudentT3(n, seed: 200 + call), output, feedback);
        using var state = new MemoryStream();
        using (var writer = new BinaryWriter(state, System.Text.Encoding.UTF8, leaveOpen: true)) original.SaveState(writer);
        state.Position = 0;
        var restored = Compressors.Create(name, options);
        using (var reader = new BinaryReader(state)) restored.LoadState(reader);
        var restoredFeedback = new ErrorFeedback(n);
        feedback.Residual.CopyTo(restoredFeedback.Accumulator);
        var restoredOutput = new SparseGradient();
        for (int call = 6; call < 12; call++)
        {
            var g = SyntheticGradients.StudentT3(n, seed: 200 + call);
            var a = original.Compress(g, output, feedback);
            var b = restored.Compress(g, restoredOutput, restoredFeedback);
            Assert.Equal(a.Threshold, b.Threshold);
            Assert.Equal(output.Indices.ToArray(), restoredOutput.Indices.ToArray());
            Assert.Equal(output.Values.ToArray(), restoredOutput.Values.ToArray());
        }
    }

    /// <summary>The CPU kernels, counting the exceedance passes over whole buffers and noting the statistics each measuring pass was asked
    /// for.</summary>
    private sealed class CountingKernels : IGradientKernels
    {
        private readonly CpuGradientKernels _inner = CpuGradientKernels.Instance;
        public int FullExceedancePasses { get; set; }
        public List<StatisticsKinds> Requested { get; } = [];
        public string Name => "counting";
        public int PartitionLength => _inner.PartitionLength;
        public GradientStatistics AccumulateAndMeasure(ReadOnlySpan<float> gradient, Span<float> residual, StatisticsKinds kinds,
            float candidateBound = float.PositiveInfinity, SparseBuffer? candidates = null, float tailBound = float.PositiveInfinity)
        {
            Requested.Add(kinds);
            return _inner.AccumulateAndMeasure(gradient, residual, kinds, candidateBound, candidates, tailBound);
        }
        public GradientStatistics Measure(ReadOnlySpan<float> values, StatisticsKinds kinds, float candidateBound = float.PositiveInfinity,
            SparseBuffer? candidates = null, float tailBound = float.PositiveInfinity)
        {
            Requested.Add(kinds);
            return _inner.Measure(values, kinds, candidateBound, candidates, tailBound);
        }
        public ExceedanceStatistics MeasureExceedances(ReadOnlySpan<float> values,
            float threshold)
        { FullExceedancePasses++; return _inner.MeasureExceedances(values, threshold); }
        public long CountAbove(ReadOnlySpan<float> values, float threshold) => _inner.CountAbove(values, threshold);
        public int SelectAbove(ReadOnlySpan<float> values, float threshold, SparseBuffer output) =>
            _inner.SelectAbove(values, threshold, output);
        public void ScatterAdd(ReadOnlySpan<int> indices, ReadOnlySpan<float> values, Span<float> dense) =>
            _inner.ScatterAdd(indices, values, dense);
    }

    // Multi-stage SIDCo as the method defines it, each stage measured on the whole vector. With a peaks bound
    // (the previous call's first-stage threshold) that cuts between 1/8 and 1/2 of the entries, the second
    // stage fits the exceedances of that bound, and the later stages split delta / (their share) between them.
    private static (double Threshold, double FirstStage) DefinitionThreshold(CompressorKind kind, float[] x, double delta, int stages,
        GammaQuantileMethod quantile, double? peaksBound = null)
    {
        const double firstTail = SidcoCompressor.FirstStageTail;
        var a = x.Select(v => (double)MathF.Abs(v)).ToArray();
        static double Variance(double[] v) { double m = v.Average(); return v.Sum(e => (e - m) * (e - m)) / (v.Length - 1); }
        double eta = kind switch
        {
            CompressorKind.SidcoExponential => ThresholdEstimators.ExponentialThreshold(a.Average(), firstTail),
            CompressorKind.SidcoGammaPareto => ThresholdEstimators.GammaThreshold(
                ThresholdEstimators.FitGamma(a.Average(), a.Average(v => Math.Log(v + GradientStatistics.LogEpsilon)))!.Value, firstTail,
                    quantile),
            _ => ThresholdEstimators.ParetoThreshold(ThresholdEstimators.FitGeneralizedPareto(a.Average(), Variance(a)), firstTail),
        };
        double firstStage = eta;
        double ratio = Math.Pow(delta / firstTail, 1.0 / (stages - 1));
        double[]? peaks = null;
        if (peaksBound is { } b)
        {
            float bound = (float)b;
            var above = a.Where(v => v > bound).ToArray();
            double share = (double)above.Length / a.Length;
            if (share >= firstTail / 2 && share <= firstTail * 2) { peaks = above; ratio = Math.Pow(delta / share, 1.0 / (stages - 1)); }
        }
        for (int s = 2; s <= stages; s++)
        {
            float from = (float)eta; // stages compare in float, as the kernels do
            var above = s == 2 && peaks is not null ? peaks : a.Where(v => v > from).ToArray();
            double t = above.Min();
            var y = above.Select(v => v - t).ToArray();
            eta = t + (kind == CompressorKind.SidcoExponential
                ? ThresholdEstimators.ExponentialThreshold(y.Average(), ratio)
                : ThresholdEstimators.ParetoThreshold(ThresholdEstimators.FitGeneralizedPareto(y.Average(), Variance(y)), ratio));
        }
        return (eta, firstStage);
    }

    [Theory]
    [InlineData("sidco-e")]
    [InlineData("sidco-gp")]
    [InlineData("sidco-p")]
    public void PrefilterStaysExactOverAnErrorFeedbackStream(string name)
    {
        // A fresh gradient each call with error feedback: the residual of unsent entries grows like a
        // random walk, many entries crowd just below the threshold, and the prefilter's bound adapts.
        // Every call must still send exactly the entries of gradient + residual above its threshold.
        var c = Compressors.Create(name, new CompressorOptions { Density = 0.001 });
        var feedback = new ErrorFeedback(300_000);
        var output = new SparseGradient();
        var acc = new float[feedback.Length];
        var ratios = new List<double>();
        for (int call = 0; call < 40; call++)
        {
            var g = SyntheticGradients.Laplace(feedback.Length, seed: 100 + call);
            for (int i = 0; i < acc.Length; i++) acc[i] = g[i] + feedback.Residual[i];
            var stats = c.Compress(g, output, feedback);
            Assert.True(stats.EstimatedCount > 0, $"call {call}: the estimate selected nothing");
            var expected = Enumerable.Range(0, acc.Length).Where(i => MathF.Abs(acc[i]) > stats.Threshold).ToArray();
            Assert.Equal(expected, output.Indices.ToArray());
            foreach (int i in expected) Assert.Equal(0f, feedback.Residual[i]);
            ratios.Add(stats.AchievedOverTarget);
        }
        // The drifting residual is harder to fit than the gradient itself; the count still stays within 2x.
        Assert.InRange(ratios.TakeLast(10).Average(), 0.5, 2.0);
    }

    [Fact]
    public void NonFiniteGradientCanSkipTheStep()
    {
        var g = SyntheticGradients.Laplace(10_000, seed: 6);
        g[77] = float.NegativeInfinity;
        var feedback = new ErrorFeedback(g.Length);
        var c = Compressors.Create("sidco-gp", new CompressorOptions { Density = 0.01, NonFinite = NonFinitePolicy.SkipStep });
        var output = new SparseGradient();
        var stats = c.Compress(g, output, feedback);
        Assert.True(stats.Skipped);
        Assert.Equal(77, stats.FirstNonFinite);
        Assert.Equal(0, output.Count);
        for (int i = 0; i < g.Length; i++) Assert.Equal(i == 77 ? 0f : g[i], feedback.Residual[i]); // deferred, not lost
    }

    [Theory]
    [InlineData("sidco-e")]
    [InlineData("sidco-gp")]
    [InlineData("sidco-p")]
    [InlineData("dgc")]
    [InlineData("redsync")]
    [InlineData("gaussiank")]
    [InlineData("topk")]
    public void DegenerateInputsAreHandled(string name)
    {
        var c = Compressors.Create(name, new CompressorOptions { Density = 0.01 });
        var output = new SparseGradient();
        Assert.Equal(0, c.Compress(ReadOnlySpan<float>.Empty, output).Selected);
        var one = c.Compress([3f], output);
        Assert.Equal(1, one.Selected);
        Assert.Equal(0, output.Indices[0]);
        Assert.Equal(0, c.Compress(new float[1000], output).Selected); // all zeros: nothing worth sending
        var constant = Enumerable.Repeat(-0.5f, 1000).ToArray();
        var stats = c.Compress(constant, output);
        if (name == "gaussiank")
        {
            // Its rule: eta = 2.58 x 0.5 passes nothing, so does half of it; the third count, at a quarter, passes all.
            Assert.Equal(1000, stats.Selected);
            return;
        }
        Assert.Equal(10, stats.Selected); // the top-k fallback: k entries, lowest indices first
        Assert.Equal(Enumerable.Range(0, 10).ToArray(), output.Indices.ToArray());
    }

    [Fact]
    public void TopKFallbackFromTheCandidatesEqualsTheFullTopK()
    {
        // Call 1 on Laplace data sets the candidate bound (0.7 x its threshold, density 0.001 <= 0.005).
        // Call 2 sees magnitudes in [5, 5.05]: the exponential fit puts the threshold above all of them,
        // so the estimate selects nothing and the exact top-k fallback runs, here from the candidates.
        var c = Compressors.Create("sidco-e", new CompressorOptions { Density = 0.001, AdaptiveStages = false });
        var output = new SparseGradient();
        c.Compress(SyntheticGradients.Laplace(100_000, seed: 12), output);
        var rng = new Random(13);
        var flat = Enumerable.Range(0, 100_000).Select(_ => (rng.Next(2) * 2 - 1) * (5f + 0.05f * (float)rng.NextDouble())).ToArray();
        var stats = c.Compress(flat, output);
        Assert.Equal(0, stats.EstimatedCount);
        var expected =
            Enumerable.Range(0, flat.Length).OrderByDescending(i => MathF.Abs(flat[i])).ThenBy(i => i).Take(100).Order().ToArray();
        Assert.Equal(expected, output.Indices.ToArray());
        Assert.Equal(expected.Select(i => flat[i]).ToArray(), output.Values.ToArray());
    }

    [Fact]
    public void SelectionCapBoundsWhatIsSent()
    {
        // A single exponential stage over-selects on |t3| (about 4x at 0.001); the cap cuts it to exactly the k largest.
        var output = new SparseGradient();
        var c = Compressors.Create("sidco-e", new CompressorOptions { Density = 0.001, AdaptiveStages = false, SelectionCap = 1.0 });
        var heavy = SyntheticGradients.StudentT3(100_000, 9);
        var capped = c.Compress(heavy, output);
        Assert.True(capped.EstimatedCount > capped.TargetCount, "t3 at one stage over-selects");
        Assert.Equal(capped.TargetCount, capped.Selected);
        var top = new SparseGradient();
        Compressors.Create("topk", new CompressorOptions { Density = 0.001 }).Compress(heavy, top);
        Assert.Equal(top.Indices.ToArray(), output.Indices.ToArray());
    }

    [Fact]
    public void ResidualSaveAndLoadRoundTripsAndRejectsCorruption()
    {
        var feedback = new ErrorFeedback(1000, "w");
        Compressors.Create("sidco-e", new CompressorOptions { Density = 0.01 }).Compress(SyntheticGradients.Laplace(1000, 1),
            new SparseGradient(), feedback);
        var saved = new MemoryStream();
        feedback.Save(saved);
        var copy = new ErrorFeedback(1000, "w");
        copy.Load(new MemoryStream(saved.ToArray()));
        Assert.Equal(feedback.Residual.ToArray(), copy.Residual.ToArray());

        var bytes = saved.ToArray();
        bytes[100] ^= 0x40;
        var fresh = new ErrorFeedback(1000, "w");
        Assert.Throws<InvalidDataException>(() => fresh.Load(new MemoryStream(bytes)));
        Assert.All(fresh.Residual.ToArray(), r => Assert.Equal(0f, r));
        Assert.Throws<InvalidDataException>(() => new ErrorFeedback(999, "w").Load(new MemoryStream(saved.ToArray())));
    }
}
