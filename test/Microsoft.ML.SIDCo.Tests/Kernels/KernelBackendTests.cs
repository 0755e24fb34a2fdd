using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Kernels;
using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Kernels;

/// <summary>One ILGPU CPU accelerator for the whole class: kernels are compiled once.</summary>
public sealed class IlgpuFixture : IDisposable
{
    internal IlgpuGradientKernels Kernels { get; } = IlgpuGradientKernels.CreateCpu();
    public void Dispose() => Kernels.Dispose();
}

[Trait(Category.Name, Category.Unit)]
public class KernelBackendTests(IlgpuFixture ilgpu) : IClassFixture<IlgpuFixture>
{
    // 700k entries: above the CPU backend's parallel chunk size, so the multi-chunk paths run too.
    private static readonly float[] s_gradient = SyntheticGradients.Laplace(700_000, 31);
    private static readonly float[] s_residual = SyntheticGradients.Laplace(700_000, 32, scale: 0.1);

    [Fact]
    public void CpuStatisticsMatchAScalarReference()
    {
        var stats = CpuGradientKernels.Instance.Measure(s_gradient, StatisticsKinds.LogMagnitudes | StatisticsKinds.Squares);
        double sum = 0, log = 0, sq = 0; float max = 0;
        foreach (float v in s_gradient)
        {
            float a = MathF.Abs(v);
            sum += a;
            log += Math.Log(a + 2.2e-16f);
            sq += (double)a * a;
            max = MathF.Max(max, a);
        }
        Assert.Equal(s_gradient.Length, stats.Count);
        Assert.Equal(sum, stats.SumAbs, sum * 1e-5);
        Assert.Equal(log, stats.SumLogAbs, Math.Abs(log) * 1e-4);
        Assert.Equal(sq, stats.SumSquares, sq * 1e-5);
        Assert.Equal(max, stats.MaxAbs);
        Assert.True(stats.AllFinite);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LogSumsHoldForExactZerosAndMagnitudesUpToTheFloatLimit(bool withResidual)
    {
        // The log sum multiplies pairs of magnitudes before splitting exponent and mantissa: exact zeros
        // (ln of LogEpsilon), denormals and values whose pairwise product would overflow a float must
        // still give the sum of the per-entry logarithms. Huge values sit in the first of three blocks only.
        const int n = 3 * 4096 + 40;
        var g = SyntheticGradients.Laplace(n, seed: 5);
        for (int i = 0; i < n; i += 7) g[i] = 0;
        for (int i = 3; i < n; i += 11) g[i] = 1e-40f; // denormal
        for (int i = 5; i < 4096; i += 13) g[i] = (i % 2 == 0 ? 1 : -1) * 3e38f;
        var residual = new float[n];
        var stats = withResidual
            ? CpuGradientKernels.Instance.AccumulateAndMeasure(g, residual, StatisticsKinds.LogMagnitudes)
            : CpuGradientKernels.Instance.Measure(g, StatisticsKinds.LogMagnitudes);
        double log = g.Sum(v => Math.Log(MathF.Abs(v) + GradientStatistics.LogEpsilon));
        Assert.True(stats.AllFinite);
        Assert.Equal(log, stats.SumLogAbs, Math.Abs(log) * 1e-6);
    }

    public static TheoryData<int, int, bool> EveryLoopShape()
    {
        // Lengths hit the paired-vector loop, the single-vector remainder, the scalar tail and block edges
        // (blocks of 4096); every statistics combination is its own compiled loop.
        var data = new TheoryData<int, int, bool>(); // the statistics kinds as their flags: the kernels' types are internal
        foreach (int n in new[] { 7, 8, 15, 24, 4096 + 8 + 3, 3 * 4096 + 17 })
            foreach (var kinds in new[] { StatisticsKinds.Basic, StatisticsKinds.LogMagnitudes, StatisticsKinds.Squares,
                StatisticsKinds.LogMagnitudes | StatisticsKinds.Squares, StatisticsKinds.TailSquares,
                StatisticsKinds.LogMagnitudes | StatisticsKinds.TailSquares })
                foreach (bool residual in new[] { false, true })
                    data.Add(n, (int)kinds, residual);
        return data;
    }

    [Theory]
    [MemberData(nameof(EveryLoopShape))]
    public void EveryLoopShapeMatchesAScalarReference(int n, int kindFlags, bool withResidual)
    {
        var kinds = (StatisticsKinds)kindFlags;
        var g = SyntheticGradients.Laplace(n, seed: n);
        var residual = SyntheticGradients.Laplace(n, seed: n + 1, scale: 0.5);
        var before = (float[])residual.Clone();
        var candidates = new SparseBuffer();
        var stats = Run(g, residual, candidates);
        double sum = 0, log = 0, sq = 0; float max = 0;
        var expected = new List<int>();
        for (int i = 0; i < n; i++)
        {
            float v = withResidual ? g[i] + before[i] : g[i];
            if (withResidual) Assert.Equal(v, residual[i]);
            float a = MathF.Abs(v);
            sum += a; log += Math.Log(a + GradientStatistics.LogEpsilon); sq += (double)a * a; max = MathF.Max(max, a);
            if (a > 1.5f) expected.Add(i);
        }
        Assert.True(stats.AllFinite);
        Assert.Equal(sum, stats.SumAbs, sum * 1e-5);
        Assert.Equal(max, stats.MaxAbs);
        if ((kinds & StatisticsKinds.LogMagnitudes) != 0) Assert.Equal(log, stats.SumLogAbs, Math.Abs(log) * 1e-4 + 1e-4);
        if ((kinds & StatisticsKinds.Squares) != 0) Assert.Equal(sq, stats.SumSquares, sq * 1e-5);
        Assert.Equal(expected, candidates.Indices.ToArray());
        // The tail measured in the pass is what a separate exceedance pass over the result gives, bit for bit
        // (the sum of squares only when asked for, else 0).
        var measured = withResidual ? residual : g;
        var separate = CpuGradientKernels.Instance.MeasureExceedances(measured, 0.8f);
        Assert.Equal((kinds & StatisticsKinds.TailSquares) != 0 ? separate : separate with { SumSquares = 0 }, stats.Tail);
        Assert.True(separate.SumSquares > 0);
        foreach (var (index, value) in candidates.Indices.ToArray().Zip(candidates.Values.ToArray()))
            Assert.Equal(withResidual ? g[index] + before[index] : g[index], value);

        // A non-finite entry in the scalar tail or the single-vector remainder (depending on n) is found,
        // and its lane keeps the old residual.
        g[n - 1] = float.NaN;
        var kept = (float[])residual.Clone();
        var bad = Run(g, residual, new SparseBuffer());
        Assert.Equal(n - 1, bad.FirstNonFinite);
        if (withResidual) Assert.Equal(kept[n - 1], residual[n - 1]);

        GradientStatistics Run(float[] x, float[] r, SparseBuffer c) => withResidual
            ? CpuGradientKernels.Instance.AccumulateAndMeasure(x, r, kinds, 1.5f, c, tailBound: 0.8f)
            : CpuGradientKernels.Instance.Measure(x, kinds, 1.5f, c, tailBound: 0.8f);
    }

    [Fact]
    public void TailMeasuredInThePassMatchesASeparatePassOnEveryBackend()
    {
        // 700k entries: several chunks on the CPU backend, whose partial tails are combined in chunk order.
        var accCpu = (float[])s_residual.Clone();
        var accGpu = (float[])s_residual.Clone();
        var a = new CpuGradientKernels(maxThreads: 2).AccumulateAndMeasure(s_gradient, accCpu, StatisticsKinds.TailSquares,
            tailBound: 1.2f);
        var b = ilgpu.Kernels.AccumulateAndMeasure(s_gradient, accGpu, StatisticsKinds.TailSquares, tailBound: 1.2f);
        var separate = CpuGradientKernels.Instance.MeasureExceedances(accCpu, 1.2f);
        Assert.Equal(separate, a.Tail);
        var tail = Assert.NotNull(b.Tail);
        Assert.Equal(separate.Count, tail.Count);
        Assert.Equal(separate.Min, tail.Min);
        Assert.Equal(separate.Sum, tail.Sum, separate.Sum * 1e-5);
        Assert.Equal(separate.SumSquares, tail.SumSquares, separate.SumSquares * 1e-5);
        Assert.InRange(separate.Count, 100_000, 300_000); // a real tail, neither empty nor everything

        // Not asked for the squares, both backends leave them out and agree on the rest.
        var plainCpu = new CpuGradientKernels(maxThreads: 2).Measure(accCpu, StatisticsKinds.Basic, tailBound: 1.2f).Tail;
        var plainGpu = ilgpu.Kernels.Measure(accCpu, StatisticsKinds.Basic, tailBound: 1.2f).Tail;
        Assert.Equal(separate with { SumSquares = 0 }, plainCpu);
        Assert.Equal((separate.Count, separate.Min, 0.0), (plainGpu!.Value.Count, plainGpu.Value.Min, plainGpu.Value.SumSquares));

        // Without a bound there is no tail; an empty buffer has an empty one.
        Assert.Null(CpuGradientKernels.Instance.Measure(s_gradient, StatisticsKinds.Basic).Tail);
        Assert.Equal(ExceedanceStatistics.Empty, CpuGradientKernels.Instance.Measure([], StatisticsKinds.Basic, tailBound: 1f).Tail);
        Assert.Equal(ExceedanceStatistics.Empty, ilgpu.Kernels.Measure([], StatisticsKinds.Basic, tailBound: 1f).Tail);
    }

    [Fact]
    public void BackendsAgreeOnAccumulateAndStatistics()
    {
        var accCpu = (float[])s_residual.Clone();
        var accGpu = (float[])s_residual.Clone();
        var kinds = StatisticsKinds.LogMagnitudes | StatisticsKinds.Squares;
        var candCpu = new SparseBuffer();
        var candGpu = new SparseBuffer();
        var a = CpuGradientKernels.Instance.AccumulateAndMeasure(s_gradient, accCpu, kinds, 4f, candCpu);
        var b = ilgpu.Kernels.AccumulateAndMeasure(s_gradient, accGpu, kinds, 4f, candGpu);
        Assert.Equal(accCpu, accGpu); // the same float additions, bit for bit
        Assert.Equal(s_gradient[12345] + s_residual[12345], accCpu[12345]);
        Assert.Equal(candCpu.Indices.ToArray(), candGpu.Indices.ToArray());
        Assert.Equal(Enumerable.Range(0, accCpu.Length).Where(i => MathF.Abs(accCpu[i]) > 4f).ToArray(), candCpu.Indices.ToArray());
        Assert.Equal(a.Count, b.Count);
        Assert.Equal(a.MaxAbs, b.MaxAbs);
        Assert.Equal(a.SumAbs, b.SumAbs, a.SumAbs * 1e-5);
        Assert.Equal(a.SumLogAbs, b.SumLogAbs, Math.Abs(a.SumLogAbs) * 1e-4);
        Assert.Equal(a.SumSquares, b.SumSquares, a.SumSquares * 1e-5);
    }

    [Theory]
    [InlineData(0.5f)]
    [InlineData(3.0f)]
    [InlineData(9.0f)]
    [InlineData(100f)]
    public void BackendsSelectIdenticalEntries(float threshold)
    {
        var cpu = new SparseBuffer();
        var gpu = new SparseBuffer();
        int nc = CpuGradientKernels.Instance.SelectAbove(s_gradient, threshold, cpu);
        int ng = ilgpu.Kernels.SelectAbove(s_gradient, threshold, gpu);
        int expected = s_gradient.Count(v => MathF.Abs(v) > threshold);
        Assert.Equal(expected, nc);
        Assert.Equal(expected, ng);
        Assert.Equal(cpu.Indices.ToArray(), gpu.Indices.ToArray());
        Assert.Equal(cpu.Values.ToArray(), gpu.Values.ToArray());
        Assert.Equal(expected, CpuGradientKernels.Instance.CountAbove(s_gradient, threshold));
        Assert.Equal(expected, ilgpu.Kernels.CountAbove(s_gradient, threshold));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(2048 + 3)]
    [InlineData(6 * 2048 + 13)]
    public void CpuSelectionMatchesAScalarReferenceWhereTheDensitySwings(int n)
    {
        // The compaction switches between skipping empty vectors and storing every vector by how much the
        // previous block selected (blocks of 2048): two blocks of about 60 %, one of 0.1 % and one of 0 %
        // repeat here, so each mode runs on dense and on sparse data and starts and stops mid-buffer;
        // NaN, -0 and values equal to the threshold must not be selected, and the output keeps what it
        // held before.
        var g = SyntheticGradients.Laplace(n, seed: n);
        for (int i = 0; i < n; i++)
        {
            int block = i / 2048 % 4;
            if (block == 2) g[i] *= 0.07f;
            else if (block == 3) g[i] = 0;
        }
        g[^1] = float.NaN;
        if (n > 2) { g[1] = -0f; g[2] = -0.5f; }
        var output = new SparseBuffer();
        output.Add(-1, 42f);
        int selected = CpuGradientKernels.Instance.SelectAbove(g, 0.5f, output);
        var expected = Enumerable.Range(0, n).Where(i => MathF.Abs(g[i]) > 0.5f).ToArray();
        Assert.Equal(expected.Length, selected);
        Assert.Equal(new[] { -1 }.Concat(expected).ToArray(), output.Indices.ToArray());
        Assert.Equal(new[] { 42f }.Concat(expected.Select(i => g[i])).ToArray(), output.Values.ToArray());
    }

    [Fact]
    public void BackendsAgreeOnExceedances()
    {
        var a = CpuGradientKernels.Instance.MeasureExceedances(s_gradient, 2.5f);
        var b = ilgpu.Kernels.MeasureExceedances(s_gradient, 2.5f);
        var reference = s_gradient.Select(MathF.Abs).Where(v => v > 2.5f).ToArray();
        Assert.Equal(reference.Length, a.Count);
        Assert.Equal(reference.Length, b.Count);
        Assert.Equal(reference.Min(), a.Min);
        Assert.Equal(reference.Min(), b.Min);
        Assert.Equal(a.Sum, b.Sum, a.Sum * 1e-6); // float partial sums within blocks
        Assert.Equal(reference.Sum(v => (double)v), a.Sum, a.Sum * 1e-6);
    }

    [Fact]
    public void BackendsScatterAddIdentically()
    {
        int[] idx = [0, 5, 17, 999];
        float[] val = [1.5f, -2f, 3.25f, 0.125f];
        var d1 = Enumerable.Repeat(1f, 1000).ToArray();
        var d2 = Enumerable.Repeat(1f, 1000).ToArray();
        CpuGradientKernels.Instance.ScatterAdd(idx, val, d1);
        ilgpu.Kernels.ScatterAdd(idx, val, d2);
        Assert.Equal(d1, d2);
        Assert.Equal(2.5f, d1[0]); Assert.Equal(-1f, d1[5]); Assert.Equal(1f, d1[6]);
        Assert.Throws<IndexOutOfRangeException>(() => CpuGradientKernels.Instance.ScatterAdd([1000], [1f], d1));
    }

    [Fact]
    public void BothBackendsReportTheFirstNonFiniteIndex()
    {
        var g = (float[])s_gradient.Clone();
        g[400_123] = float.NaN; g[600_000] = float.PositiveInfinity;
        Assert.Equal(400_123, CpuGradientKernels.Instance.Measure(g, StatisticsKinds.Basic).FirstNonFinite);
        Assert.Equal(400_123, ilgpu.Kernels.Measure(g, StatisticsKinds.Basic).FirstNonFinite);
    }

    [Fact]
    public void NonFiniteLanesAreNeitherStoredNorMeasured()
    {
        var g = new float[] { 1, float.NaN, 2, float.PositiveInfinity, 3, 4, 5, 6, 7, 8, 9 };
        foreach (IGradientKernels k in new IGradientKernels[] { CpuGradientKernels.Instance, ilgpu.Kernels })
        {
            var r = Enumerable.Repeat(0.5f, g.Length).ToArray();
            var stats = k.AccumulateAndMeasure(g, r, StatisticsKinds.Basic);
            Assert.Equal(1, stats.FirstNonFinite);
            Assert.Equal(new float[] { 1.5f, 0.5f, 2.5f, 0.5f, 3.5f, 4.5f, 5.5f, 6.5f, 7.5f, 8.5f, 9.5f }, r);
        }
    }

    [Theory]
    [InlineData("sidco-e")]
    [InlineData("sidco-gp")]
    [InlineData("sidco-p")]
    public void SidcoCompressesIdenticallyOnBothBackends(string name)
    {
        var options = new CompressorOptions { Density = 0.001, AdaptiveStages = false, Stages = 3 };
        var cpu = new SparseGradient();
        var gpu = new SparseGradient();
        var sc = Compressors.Create(name, options).Compress(s_gradient, cpu, new ErrorFeedback(s_gradient.Length));
        var sg = Compressors.Create(name, options, ilgpu.Kernels).Compress(s_gradient, gpu, new ErrorFeedback(s_gradient.Length));
        // Statistics are summed in a different order, so thresholds may differ in the last bits;
        // at the same threshold the selections are identical (BackendsSelectIdenticalEntries).
        Assert.Equal(sc.Threshold, sg.Threshold, sc.Threshold * 1e-4f);
        Assert.InRange(Math.Abs(sc.Selected - sg.Selected), 0, 2);
    }
}

/// <summary>
/// The cooperative path a GPU takes (a group of threads per segment: coalesced reads, shared-memory
/// trees, ordered compaction) run on the CPU accelerator with a small group, against the CPU backend.
/// </summary>
[Trait(Category.Name, Category.Unit)]
public class IlgpuGroupPathTests
{
    [Theory]
    [InlineData(4)]
    [InlineData(16)]
    public void GroupedKernelsMatchTheCpuBackend(int groupSize)
    {
        using var grouped = IlgpuGradientKernels.CreateCpu(groupSize);
        Assert.Equal(groupSize, grouped.GroupSize);
        int n = 3 * IlgpuGradientKernels.SegmentSize + 17; // a partial last segment and a partial last row
        var g = SyntheticGradients.Laplace(n, 41);
        var r1 = SyntheticGradients.Laplace(n, 42, scale: 0.5);
        var r2 = (float[])r1.Clone();
        var kinds = StatisticsKinds.LogMagnitudes | StatisticsKinds.Squares;
        var c1 = new SparseBuffer();
        var c2 = new SparseBuffer();
        var a = CpuGradientKernels.Instance.AccumulateAndMeasure(g, r1, kinds, 2.5f, c1);
        var b = grouped.AccumulateAndMeasure(g, r2, kinds, 2.5f, c2);
        Assert.Equal(r1, r2);
        Assert.True(b.AllFinite);
        Assert.Equal(a.MaxAbs, b.MaxAbs);
        Assert.Equal(a.SumAbs, b.SumAbs, a.SumAbs * 1e-5);
        Assert.Equal(a.SumLogAbs, b.SumLogAbs, Math.Abs(a.SumLogAbs) * 1e-4);
        Assert.Equal(a.SumSquares, b.SumSquares, a.SumSquares * 1e-5);
        Assert.Equal(c1.Indices.ToArray(), c2.Indices.ToArray());
        Assert.Equal(c1.Values.ToArray(), c2.Values.ToArray());
        Assert.True(c2.Count > 100); // rows with several selections exercise the prefix sum

        var e1 = CpuGradientKernels.Instance.MeasureExceedances(r1, 1.5f);
        var e2 = grouped.MeasureExceedances(r1, 1.5f);
        Assert.Equal(e1.Count, e2.Count);
        Assert.Equal(e1.Min, e2.Min);
        Assert.Equal(e1.Sum, e2.Sum, e1.Sum * 1e-6);
        Assert.Equal(CpuGradientKernels.Instance.CountAbove(r1, 0.25f), grouped.CountAbove(r1, 0.25f));
        var s1 = new SparseBuffer();
        var s2 = new SparseBuffer();
        Assert.Equal(CpuGradientKernels.Instance.SelectAbove(r1, 0.25f, s1), grouped.SelectAbove(r1, 0.25f, s2));
        Assert.Equal(s1.Indices.ToArray(), s2.Indices.ToArray());
        var bad = (float[])g.Clone();
        bad[4200] = float.PositiveInfinity; bad[4105] = float.NaN; // one segment: the first by index sits in a higher thread's lane
        Assert.Equal(4105, grouped.Measure(bad, StatisticsKinds.Basic).FirstNonFinite);
        Assert.True(grouped.Timings.Kernel > TimeSpan.Zero && grouped.Timings.Transfer > TimeSpan.Zero);
        grouped.ResetTimings();
        Assert.Equal(default, grouped.Timings);
    }

    [Fact]
    public void AGroupSizeThatIsNotAPowerOfTwoIsRefused()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => IlgpuGradientKernels.CreateCpu(groupSize: 3));
        Assert.Equal("groupSize", e.ParamName);
    }
}

/// <summary>The sparse exchange on the ILGPU backend: its atomics must not make the cross-rank sums order-dependent.</summary>
[Trait(Category.Name, Category.Unit)]
public class IlgpuExchangeTests
{
    [Fact]
    public void SparseExchangeOnIlgpuSumsInRankOrderBitForBit()
    {
        // Overlapping indices and random float values, so a sum in another order would differ in the last bits.
        const int workers = 3, n = 20_000;
        var parts = Enumerable.Range(0, workers).Select(r => CommunicatorContract.SparseVector(r, n, empty: false)).ToArray();
        var expected = new float[n];
        foreach (var (idx, val) in parts) for (int j = 0; j < idx.Length; j++) expected[idx[j]] += val[j];
        for (int i = 0; i < n; i++) expected[i] *= 1f / workers;

        var results = new float[workers][];
        var kernels = Enumerable.Range(0, workers).Select(_ => IlgpuGradientKernels.CreateCpu()).ToArray(); // device state is per worker
        try
        {
            using var group = new InProcessGroup(workers);
            group.Run(comm =>
            {
                var exchange =
                    new GradientExchange(comm, n, ExchangeMode.Sparse, wire: WirePrecision.Float32, model: null,
                    kernels: kernels[comm.Rank]);
                var local = new SparseBuffer();
                local.AddRange(parts[comm.Rank].Indices, parts[comm.Rank].Values);
                var first = new float[n];
                exchange.AllReduce(local, first);
                var second = new float[n];
                exchange.AllReduce(local, second);
                Assert.Equal(first, second);
                results[comm.Rank] = first;
            });
        }
        finally
        {
            foreach (var k in kernels) k.Dispose();
        }
        Assert.True(parts.Sum(p => p.Indices.Length) > n / 5 * workers, "the ranks' selections overlap");
        for (int r = 0; r < workers; r++)
            for (int i = 0; i < n; i++)
                Assert.True(results[r][i] == expected[i], $"rank {r}, entry {i}: {results[r][i]:R} vs {expected[i]:R}");
    }
}
