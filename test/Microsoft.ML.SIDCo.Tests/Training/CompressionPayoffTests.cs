using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Tests.Training;

[Trait(Category.Name, Category.Unit)]
public class CompressionPayoffTests
{
    private const int N = 200_000;
    private const int Workers = 2;
    // The calibration opens after one step (the first step has no previous one to time it from) and takes 2 x Rounds.
    private const int Delay = 1;
    private const int Steps = Delay + 2 * CompressionPayoff.Rounds + 4;
    private const int AfterCalibration = Delay + 2 * CompressionPayoff.Rounds;

    // A link slow enough for one route to lose clearly: the in-process transport with a fixed delay on the dense
    // allreduce or on the sparse exchange's gathers, as a rate-limited link would add.
    private static readonly TimeSpan Slow = TimeSpan.FromMilliseconds(40);

    [Fact]
    public void AutoStopsCompressingWhereTheDenseExchangeIsFaster()
    {
        var run = Train(ExchangeMode.Auto, denseDelay: TimeSpan.Zero, sparseDelay: Slow);
        // The calibration alternates the routes, then the whole gradient goes densely.
        AssertCalibration(run);
        Assert.All(run.Decisions, d => Assert.True(d!.Value.SkipsCompression, $"{d}"));
        Assert.All(run.Decisions, d => Assert.True(d!.Value.DenseMs < d.Value.CompressedMs, $"{d}"));
        Assert.Equal(run.Decisions[0], run.Decisions[1]);
        for (int w = 0; w < Workers; w++)
        {
            Assert.All(run.Stats[w].Skip(AfterCalibration), s =>
            {
                Assert.Equal(ExchangeMode.Dense, s.Mode);
                Assert.Equal(N, s.Selected);
                Assert.Equal(0, s.CompressMs);
            });
        }
        AssertSameResultEverywhere(run);
    }

    [Fact]
    public void AutoKeepsCompressingWhereTheDenseExchangeIsSlower()
    {
        var run = Train(ExchangeMode.Auto, denseDelay: Slow, sparseDelay: TimeSpan.Zero);
        AssertCalibration(run);
        Assert.All(run.Decisions, d => Assert.False(d!.Value.SkipsCompression, $"{d}"));
        for (int w = 0; w < Workers; w++)
        {
            Assert.All(run.Stats[w].Skip(AfterCalibration), s =>
            {
                Assert.Equal(ExchangeMode.Sparse, s.Mode);
                Assert.True(s.Selected < N / 10, $"{s.Selected} entries sent");
            });
        }
        AssertSameResultEverywhere(run);
    }

    [Fact]
    public void AFixedExchangeModeNeverWeighsCompression()
    {
        var run = Train(ExchangeMode.Sparse, denseDelay: TimeSpan.Zero, sparseDelay: Slow);
        Assert.All(run.Decisions, d => Assert.Null(d));
        Assert.All(run.Stats.SelectMany(s => s), s => Assert.Equal(ExchangeMode.Sparse, s.Mode));
    }

    [Fact]
    public void ADenseProbeLeavesTheResidualAndTheDenseRouteDropsIt()
    {
        // Step 1 compresses (the residual keeps all but 1 % of each worker's gradient); step 2 is the dense probe: it sends
        // that step's gradients, averaged, and leaves the residual to later compressed steps. Once the run goes dense, the
        // residual is dropped rather than landing in one step.
        var run = Train(ExchangeMode.Auto, denseDelay: TimeSpan.Zero, sparseDelay: Slow);
        Assert.Equal(ExchangeMode.Sparse, run.Stats[0][Delay].Mode);
        Assert.Equal(ExchangeMode.Dense, run.Stats[0][Delay + 1].Mode);
        Assert.Equal(run.Residuals[Delay], run.Residuals[Delay + 1]);
        Assert.Contains(run.Residuals[Delay], r => r != 0);
        var mean = new float[N];
        for (int w = 0; w < Workers; w++)
        {
            var g = Gradient(w, Delay + 1);
            for (int i = 0; i < N; i++) mean[i] += g[i] / Workers;
        }
        double worst = 0;
        for (int i = 0; i < N; i++) worst = Math.Max(worst, Math.Abs(run.Outputs[0][Delay + 1][i] - mean[i]));
        Assert.True(worst < 1e-5, $"largest difference {worst}");
        Assert.True(run.Decisions[0]!.Value.SkipsCompression);
        Assert.All(run.Residuals[AfterCalibration], r => Assert.Equal(0f, r));
    }

    [Theory]
    [InlineData(3.0, 8.0, true)]   // worker 1's compressed steps (8 ms) are as slow as the dense ones: dense
    [InlineData(3.0, 7.8, true)]   // 2.5 % faster: within the tie margin, dense
    [InlineData(3.0, 7.5, false)]  // 6 % faster: compression stays
    [InlineData(9.0, 3.0, true)]   // the slowest worker decides, whichever it is
    public void TheWorkersAgreeOnTheSlowestWorkerAtTheWindowsLastStep(double rank0Ms, double rank1Ms, bool dense)
    {
        const long first = 5;
        const double denseMs = 8;
        using var group = new InProcessGroup(Workers);
        var decisions = new PayoffDecision?[Workers];
        group.Run(comm =>
        {
            var payoff = new CompressionPayoff(comm, first);
            Assert.Equal(PayoffRoute.Compress, payoff.RouteAt(first - 1));
            for (long step = first; step < first + 2 * CompressionPayoff.Rounds; step++)
            {
                var route = payoff.RouteAt(step);
                Assert.Equal((step - first) % 2 == 0 ? PayoffRoute.ProbeCompressed : PayoffRoute.ProbeDense, route);
                Assert.Null(payoff.Decision);
                double compressedMs = comm.Rank == 0 ? rank0Ms : rank1Ms;
                // One outlier per route on worker 0 (a checkpoint written between steps): the median leaves it out.
                bool outlier = comm.Rank == 0 && step - first < 2;
                payoff.Observe(step, route, skipped: false,
                    (route == PayoffRoute.ProbeCompressed ? compressedMs : denseMs) + (outlier ? 100 : 0));
            }
            decisions[comm.Rank] = payoff.Decision;
            Assert.Equal(dense ? PayoffRoute.Dense : PayoffRoute.Compress, payoff.RouteAt(first + 100));
        });
        var expected = new PayoffDecision(Math.Max(rank0Ms, rank1Ms), denseMs, dense, first + 2 * CompressionPayoff.Rounds - 1);
        Assert.Equal(expected, decisions[0]);
        Assert.Equal(decisions[0], decisions[1]);
    }

    [Fact]
    public void WithoutTimingsOfBothRoutesCompressionStays()
    {
        // Every calibration step dropped (non-finite gradients under SkipStep): nothing to compare, the configured compression stays.
        using var group = new InProcessGroup(Workers);
        group.Run(comm =>
        {
            var payoff = new CompressionPayoff(comm, 0);
            for (long step = 0; step < 2 * CompressionPayoff.Rounds; step++)
                payoff.Observe(step, payoff.RouteAt(step), skipped: true, stepMs: 1);
            Assert.False(payoff.Decision!.Value.SkipsCompression);
            Assert.True(double.IsNaN(payoff.Decision.Value.DenseMs));
            Assert.Equal(PayoffRoute.Compress, payoff.RouteAt(100));
        });
    }

    private static void AssertCalibration(Run run)
    {
        for (int w = 0; w < Workers; w++)
        {
            for (int step = Delay; step < AfterCalibration; step++)
            {
                var s = run.Stats[w][step];
                Assert.Equal((step - Delay) % 2 == 0 ? ExchangeMode.Sparse : ExchangeMode.Dense, s.Mode);
                if (s.Mode == ExchangeMode.Dense) Assert.Equal(N, s.Selected);
                else Assert.True(s.CompressMs > 0 && s.Selected < N / 10, $"step {step}: {s}");
            }
        }
        Assert.All(run.Decisions, d => Assert.Equal(AfterCalibration - 1L, d!.Value.Step));
    }

    private static void AssertSameResultEverywhere(Run run)
    {
        for (int step = 0; step < Steps; step++) Assert.Equal(run.Outputs[0][step], run.Outputs[1][step]);
    }

    private static float[] Gradient(int worker, int step) => SyntheticGradients.Laplace(N, 100 * worker + step);

    // Residuals: worker 0's residual after each step.
    private sealed record Run(List<GradientHookStats>[] Stats, List<float[]>[] Outputs, PayoffDecision?[] Decisions,
        List<float[]> Residuals);

    private static Run Train(ExchangeMode mode, TimeSpan denseDelay, TimeSpan sparseDelay)
    {
        var options = new CompressionHookOptions
        {
            Compressor = CompressorKind.SidcoExponential,
            Compression = new CompressorOptions { Density = 0.01 },
            Exchange = mode,
            // A slow modelled link: the per-step choice stays sparse, so each route is the one the calibration means.
            CostModel = CostModel.FromLink(latencyMicroseconds: 100, megabitsPerSecond: 100, Workers),
            PayoffDelaySteps = Delay,
        };
        var stats = new List<GradientHookStats>[Workers];
        var outputs = new List<float[]>[Workers];
        var decisions = new PayoffDecision?[Workers];
        var residuals = new List<float[]>();
        using var group = new InProcessGroup(Workers);
        group.Run(inner =>
        {
            var comm = new DelayedLink(inner, denseDelay, sparseDelay);
            using var hook = new CompressionHook(options);
            hook.Initialize(new GradientHookContext(comm, N, [new ParameterSlice("w", 0, N, [N])]));
            stats[comm.Rank] = [];
            outputs[comm.Rank] = [];
            for (int step = 0; step < Steps; step++)
            {
                var g = Gradient(comm.Rank, step);
                stats[comm.Rank].Add(hook.Reduce(g, step));
                outputs[comm.Rank].Add(g);
                if (comm.Rank == 0) residuals.Add(hook.Feedback!.Residual.ToArray());
            }
            decisions[comm.Rank] = hook.Payoff;
        });
        return new Run(stats, outputs, decisions, residuals);
    }

    // The in-process transport with a delay before each dense allreduce of a gradient and each variable-size gather (the
    // sparse exchange's indices and values).
    private sealed class DelayedLink(ICommunicator inner, TimeSpan dense, TimeSpan sparse) : ICommunicator
    {
        public int Rank => inner.Rank;
        public int Size => inner.Size;
        public string Transport => inner.Transport;
        public void Barrier() => inner.Barrier();
        public void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged => inner.Broadcast(buffer, root);

        public void AllReduceSum<T>(Span<T> buffer) where T : unmanaged
        {
            if (buffer.Length == N) Thread.Sleep(dense);
            inner.AllReduceSum(buffer);
        }

        public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all) where T : unmanaged => inner.AllGather(mine, all);

        public void AllGatherV<T>(ReadOnlySpan<T> mine, Span<T> all, ReadOnlySpan<int> counts) where T : unmanaged
        {
            Thread.Sleep(sparse);
            inner.AllGatherV(mine, all, counts);
        }

        public void AllToAll<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged => inner.AllToAll(send, receive);
        public void Dispose() { }
    }
}
