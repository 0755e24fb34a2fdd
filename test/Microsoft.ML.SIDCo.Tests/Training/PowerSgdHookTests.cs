using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Tests.Training;

[Trait(Category.Name, Category.Unit)]
public class PowerSgdHookTests
{
    private const int Workers = 2, Rank = 2;

    // Layout: a 6x5 and a 4x7 matrix (compressed at rank 2), a 2x2 matrix (too small to gain) and a bias of 5 (dense).
    private static readonly ParameterSlice[] s_parameters =
    [
        new("a", 0, 30, [6, 5]), new("b", 30, 28, [4, 7]), new("small", 58, 4, [2, 2]), new("bias", 62, 5, [5]),
    ];
    private const int Length = 67;

    [Fact]
    public void TwoStepsMatchAReferenceWrittenFromThePaper()
    {
        var rng = new Random(3);
        var gradients = Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, Workers)
            .Select(_ => Enumerable.Range(0, Length).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()).ToArray()).ToArray();
        var hooks = new PowerSgdHook[Workers];
        var outputs = new float[2][][];
        var ps = new float[2][][];
        var qs = new float[2][][];
        var errors = new float[2][][];
        double[][,]? q0 = null;
        using var group = new InProcessGroup(Workers);
        group.Run(comm =>
        {
            var hook = hooks[comm.Rank] = new PowerSgdHook(Rank, denseSteps: 0, seed: 9);
            hook.Initialize(new GradientHookContext(comm, Length, s_parameters));
            if (comm.Rank == 0) q0 = [ToQ(hook.QTransposedFor(0), 5), ToQ(hook.QTransposedFor(1), 7)];
            comm.Barrier();
            for (int step = 0; step < 2; step++)
            {
                var g = (float[])gradients[step][comm.Rank].Clone();
                hook.Reduce(g, step);
                if (comm.Rank == 0)
                {
                    outputs[step] = [g];
                    ps[step] = [hook.PFor(0), hook.PFor(1)];
                    qs[step] = [hook.QTransposedFor(0), hook.QTransposedFor(1)];
                }
                comm.Barrier();
                if (comm.Rank == 1) errors[step] = [hooks[0].Error, hooks[1].Error];
                comm.Barrier();
            }
        });
        Assert.Equal([("a", 6, 5), ("b", 4, 7)], hooks[0].Matrices);

        // The reference: doubles, 2-D arrays, the paper's Algorithm 1 with error feedback, Q warm-started across steps.
        var q = q0!;
        var error = Enumerable.Range(0, Workers).Select(_ => new double[Length]).ToArray();
        for (int step = 0; step < 2; step++)
        {
            var expected = new double[Length];
            for (int mi = 0; mi < 2; mi++)
            {
                var s = s_parameters[mi];
                int rows = (int)s.Shape[0], cols = s.Count / rows;
                var m = Enumerable.Range(0, Workers).Select(w => Matrix(rows, cols, (i, j) =>
                    gradients[step][w][s.Offset + i * cols + j] + error[w][s.Offset + i * cols + j])).ToArray();
                var p = new double[rows, Rank];
                foreach (var mw in m) Add(p, Multiply(mw, q[mi]));
                GramSchmidt(p);
                var qNew = new double[cols, Rank];
                foreach (var mw in m) Add(qNew, Multiply(Transpose(mw), p));
                Scale(qNew, 1.0 / Workers);
                var approx = Multiply(p, Transpose(qNew));
                for (int w = 0; w < Workers; w++)
                    for (int i = 0; i < rows; i++)
                        for (int j = 0; j < cols; j++) error[w][s.Offset + i * cols + j] = m[w][i, j] - approx[i, j];
                for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) expected[s.Offset + i * cols + j] = approx[i, j];
                AssertClose(p, ps[step][mi], $"P of {s.Name} after step {step}");
                AssertClose(Transpose(qNew), qs[step][mi], $"Q of {s.Name} after step {step}");
                q[mi] = qNew;
            }
            for (int i = 58; i < Length; i++) expected[i] = gradients[step].Average(g => (double)g[i]); // dense parts
            for (int i = 0; i < Length; i++) Assert.True(Math.Abs(expected[i] - outputs[step][0][i]) < 1e-5, $"step {step} entry {i}");
            for (int w = 0; w < Workers; w++)
                for (int i = 0; i < Length; i++)
                    Assert.True(Math.Abs(error[w][i] - errors[step][w][i]) < 1e-5, $"step {step} worker {w} error {i}");
        }
    }

    [Fact]
    public void DenseStepsAverageExactlyAndStateRoundTrips()
    {
        var g = Enumerable.Range(0, Workers).Select(w =>
            Enumerable.Range(0, Length).Select(i => (float)(i % 7 - 3 + w)).ToArray()).ToArray();
        using var group = new InProcessGroup(Workers);
        group.Run(comm =>
        {
            using var hook = new PowerSgdHook(Rank, denseSteps: 1);
            hook.Initialize(new GradientHookContext(comm, Length, s_parameters));
            var mine = (float[])g[comm.Rank].Clone();
            var stats = hook.Reduce(mine, 0);
            Assert.Equal(Length, stats.Selected);
            for (int i = 0; i < Length; i++) Assert.Equal((g[0][i] + g[1][i]) / 2, mine[i]);
            // The dense start's exchange and its buffers are let go after its last step.
            Assert.False(hook.HoldsDenseExchange);
            using (var longer = new PowerSgdHook(Rank, denseSteps: 2))
            {
                longer.Initialize(new GradientHookContext(comm, Length, s_parameters));
                Assert.False(longer.HoldsDenseExchange);
                longer.Reduce((float[])g[comm.Rank].Clone(), 0);
                Assert.True(longer.HoldsDenseExchange);
                longer.Reduce((float[])g[comm.Rank].Clone(), 1);
                Assert.False(longer.HoldsDenseExchange);
            }
            mine = (float[])g[comm.Rank].Clone();
            stats = hook.Reduce(mine, 1);
            Assert.Equal(hook.CompressedLength, stats.Selected);
            Assert.Equal((6 + 5 + 4 + 7) * Rank + 4 + 5, hook.CompressedLength);
            using var saved = new MemoryStream();
            hook.SaveState(saved);
            using var restored = new PowerSgdHook(Rank, denseSteps: 1);
            restored.Initialize(new GradientHookContext(comm, Length, s_parameters));
            saved.Position = 0;
            restored.LoadState(saved);
            Assert.Equal(hook.Error, restored.Error);
            Assert.Equal(hook.QTransposedFor(1), restored.QTransposedFor(1));
            using var other = new PowerSgdHook(rank: 1, denseSteps: 1);
            other.Initialize(new GradientHookContext(comm, Length, s_parameters));
            saved.Position = 0;
            Assert.Throws<InvalidDataException>(() => other.LoadState(saved));
        });
    }

    [Fact]
    public void OptionsOutOfRangeNameTheParameter()
    {
        Assert.Equal("rank", Assert.Throws<ArgumentOutOfRangeException>(() => new PowerSgdHook(rank: 0)).ParamName);
        Assert.Equal("denseSteps", Assert.Throws<ArgumentOutOfRangeException>(() => new PowerSgdHook(denseSteps: -1)).ParamName);
    }

    private static double[,] ToQ(float[] transposed, int cols)
    {
        var q = new double[cols, Rank];
        for (int j = 0; j < Rank; j++) for (int c = 0; c < cols; c++) q[c, j] = transposed[j * cols + c];
        return q;
    }

    private static double[,] Matrix(int rows, int cols, Func<int, int, double> at)
    {
        var m = new double[rows, cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) m[i, j] = at(i, j);
        return m;
    }

    private static double[,] Multiply(double[,] a, double[,] b)
    {
        var c = new double[a.GetLength(0), b.GetLength(1)];
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < b.GetLength(1); j++)
                for (int k = 0; k < a.GetLength(1); k++) c[i, j] += a[i, k] * b[k, j];
        return c;
    }

    private static double[,] Transpose(double[,] a) => Matrix(a.GetLength(1), a.GetLength(0), (i, j) => a[j, i]);

    private static void Add(double[,] into, double[,] x)
    {
        for (int i = 0; i < into.GetLength(0); i++) for (int j = 0; j < into.GetLength(1); j++) into[i, j] += x[i, j];
    }

    private static void Scale(double[,] a, double s)
    {
        for (int i = 0; i < a.GetLength(0); i++) for (int j = 0; j < a.GetLength(1); j++) a[i, j] *= s;
    }

    private static void GramSchmidt(double[,] p)
    {
        int rows = p.GetLength(0);
        for (int j = 0; j < p.GetLength(1); j++)
        {
            for (int k = 0; k < j; k++)
            {
                double dot = 0;
                for (int i = 0; i < rows; i++) dot += p[i, j] * p[i, k];
                for (int i = 0; i < rows; i++) p[i, j] -= dot * p[i, k];
            }
            double norm = Math.Sqrt(Enumerable.Range(0, rows).Sum(i => p[i, j] * p[i, j]));
            for (int i = 0; i < rows; i++) p[i, j] /= norm;
        }
    }

    private static void AssertClose(double[,] expected, float[] actual, string what)
    {
        int cols = expected.GetLength(1);
        for (int i = 0; i < expected.GetLength(0); i++)
            for (int j = 0; j < cols; j++)
                Assert.True(Math.Abs(expected[i, j] - actual[i * cols + j]) < 1e-5,
                    $"{what} [{i},{j}]: {expected[i, j]} vs {actual[i * cols + j]}");
    }
}

/// <summary>PowerSGD under mpirun.</summary>
public class PowerSgdHookMpiTests(Xunit.Abstractions.ITestOutputHelper log)
{
    [Theory]
    [Trait(Category.Name, Category.Mpi)]
    [InlineData(2)]
    [InlineData(4)]
    public void DenseStartIsTheDenseBaselineBitwiseUnderMpirun(int ranks)
    {
        var run = MpiRunner.Run(ranks, MpiRunner.TestHost, "powersgd-dense-start", TimeSpan.FromMinutes(2));
        run.AssertCompleted();
        var checks = run.Checks.Where(c => c.Name == "powersgd-dense-start").ToList();
        Assert.Equal(ranks, checks.Count);
        Assert.All(checks, c => Assert.True(c.Ok, $"rank {c.Rank}: {c.Detail}\n{run.Output}"));
        // The entries where MPI_Allreduce's own order of sums rounds differently: what the old dense start gave.
        log.WriteLine($"mpirun -np {ranks}: MPI_Allreduce differs from the rank-ordered average in {checks[0].Detail} entries");
    }
}
