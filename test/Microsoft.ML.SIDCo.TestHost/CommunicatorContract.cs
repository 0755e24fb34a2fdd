using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.Kernels;

namespace Microsoft.ML.SIDCo.TestHost;

/// <summary>One named check's outcome on one rank.</summary>
public readonly record struct CheckResult(string Name, bool Ok, string Detail);

/// <summary>
/// The behaviour every <see cref="ICommunicator"/> must show, written once and run by the in-process
/// tests directly and by the MPI tests through this host under mpirun. Expected values are computed
/// from rank and size, so a wrong transport cannot pass.
/// </summary>
public static class CommunicatorContract
{
    public static IReadOnlyList<CheckResult> Run(ICommunicator comm)
    {
        var results = new List<CheckResult>();
        void Check(string name, Func<string?> body)
        {
            try { var problem = body(); results.Add(new(name, problem is null, problem ?? "")); }
            catch (Exception e) { results.Add(new(name, false, e.GetType().Name + ": " + e.Message)); }
        }
        int p = comm.Size, me = comm.Rank;

        Check("rank-size", () => me >= 0 && me < p ? null : $"rank {me} of {p}");
        Check("barrier", () => { comm.Barrier(); return null; });
        Check("broadcast", () =>
        {
            int root = p - 1;
            var buf = Enumerable.Range(0, 5).Select(i => me == root ? root * 10f + i : -1f).ToArray();
            comm.Broadcast<float>(buf, root);
            return buf.SequenceEqual(Enumerable.Range(0, 5).Select(i => root * 10f + i)) ? null : string.Join(",", buf);
        });
        Check("allreduce-float", () =>
        {
            var buf = Enumerable.Range(0, 1000).Select(i => (me + 1) * (float)i).ToArray();
            comm.AllReduceSum<float>(buf);
            float f = p * (p + 1) / 2f;
            return buf.Select((v, i) => v == f * i).All(x => x) ? null : $"buf[7] = {buf[7]}, want {7 * f}";
        });
        Check("allreduce-double", () =>
        {
            var buf = new[] { me + 0.5, -me };
            comm.AllReduceSum<double>(buf);
            return buf[0] == p * (p - 1) / 2.0 + 0.5 * p && buf[1] == -p * (p - 1) / 2.0 ? null : $"{buf[0]}, {buf[1]}";
        });
        Check("allreduce-int", () =>
        {
            var buf = new[] { 1, me };
            comm.AllReduceSum<int>(buf);
            return buf[0] == p && buf[1] == p * (p - 1) / 2 ? null : $"{buf[0]}, {buf[1]}";
        });
        Check("allreduce-long", () =>
        {
            var buf = new[] { (1L << 40) + me };
            comm.AllReduceSum<long>(buf);
            return buf[0] == p * (1L << 40) + p * (p - 1) / 2 ? null : $"{buf[0]}";
        });
        Check("allgather", () =>
        {
            var all = new int[2 * p];
            comm.AllGather<int>([me, me * me], all);
            return all.SequenceEqual(Enumerable.Range(0, p).SelectMany(r => new[] { r, r * r })) ? null : string.Join(",", all);
        });
        Check("allgatherv-float", () =>
        {
            // rank r contributes r elements (rank 0 none): empty contributions must work.
            var counts = Enumerable.Range(0, p).ToArray();
            var mine = Enumerable.Range(0, me).Select(j => me + j * 0.5f).ToArray();
            var all = new float[counts.Sum()];
            comm.AllGatherV<float>(mine, all, counts);
            var want = Enumerable.Range(0, p).SelectMany(r => Enumerable.Range(0, r).Select(j => r + j * 0.5f));
            return all.SequenceEqual(want) ? null : string.Join(",", all);
        });
        Check("allgatherv-bytes", () =>
        {
            var counts = Enumerable.Range(0, p).Select(r => r + 1).ToArray();
            var mine = Enumerable.Repeat((byte)(me + 1), me + 1).ToArray();
            var all = new byte[counts.Sum()];
            comm.AllGatherV<byte>(mine, all, counts);
            return all.SequenceEqual(Enumerable.Range(0, p).SelectMany(r => Enumerable.Repeat((byte)(r + 1), r + 1))) ? null
                : string.Join(",", all);
        });
        Check("sparse-equals-dense-sum-exactly", () =>
        {
            // Random float values, overlapping indices, rank 1 empty: the sparse allreduce must equal
            // the sum in rank order divided by P, bit for bit.
            const int n = 5000;
            var parts = Enumerable.Range(0, p).Select(r => SparseVector(r, n, empty: r == 1)).ToArray();
            var expected = new float[n];
            foreach (var (idx, val) in parts) for (int j = 0; j < idx.Length; j++) expected[idx[j]] += val[j];
            for (int i = 0; i < n; i++) expected[i] *= 1f / p;
            var exchange = new GradientExchange(comm, n, ExchangeMode.Sparse);
            var local = new SparseBuffer();
            local.AddRange(parts[me].Indices, parts[me].Values);
            var result = new float[n];
            var stats = exchange.AllReduce(local, result);
            if (stats.Mode != ExchangeMode.Sparse) return $"mode {stats.Mode}";
            if (stats.TotalSelected != parts.Sum(x => x.Indices.Length)) return $"total {stats.TotalSelected}";
            for (int i = 0; i < n; i++) if (result[i] != expected[i]) return $"entry {i}: {result[i]:R} vs {expected[i]:R}";
            return null;
        });
        Check("dense-and-sparse-agree", () =>
        {
            // Small integers sum exactly in any order, so the dense allreduce must give the same answer.
            const int n = 3000;
            var local = new SparseBuffer();
            for (int i = me; i < n; i += 7) local.Add(i, (i % 13) - 6);
            var sparse = new float[n];
            var dense = new float[n];
            new GradientExchange(comm, n, ExchangeMode.Sparse).AllReduce(local, sparse);
            var s = new GradientExchange(comm, n, ExchangeMode.Dense).AllReduce(local, dense);
            if (s.Mode != ExchangeMode.Dense) return $"mode {s.Mode}";
            return sparse.SequenceEqual(dense) ? null : "dense and sparse differ";
        });
        Check("half-precision-values", () =>
        {
            const int n = 100;
            var local = new SparseBuffer();
            local.Add(me, 1f / 3f);
            var result = new float[n];
            new GradientExchange(comm, n, ExchangeMode.Sparse, wire: WirePrecision.Float16).AllReduce(local, result);
            for (int r = 0; r < p; r++) if (Math.Abs(result[r] - 1f / 3f / p) > 1e-3f / p) return $"entry {r}: {result[r]}";
            return null;
        });
        Check("all-to-all", () =>
        {
            const int block = 3;
            var send = new int[block * p];
            for (int r = 0; r < p; r++) for (int j = 0; j < block; j++) send[r * block + j] = me * 1000 + r * 10 + j;
            var received = new int[block * p];
            comm.AllToAll<int>(send, received);
            for (int r = 0; r < p; r++)
                for (int j = 0; j < block; j++)
                    if (received[r * block + j] != r * 1000 + me * 10 + j) return $"block {r} entry {j}: {received[r * block + j]}";
            return null;
        });
        foreach (var wire in new[] { WirePrecision.Float16, WirePrecision.BFloat16 })
        {
            Check($"dense-{wire}-wire-averages-in-fp32", () =>
            {
                // 1001 entries: not a multiple of the worker count, so the last block is padded.
                const int n = 1001;
                var rng = new Random(40 + me);
                var mine = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                var exact = (float[])mine.Clone();
                new GradientExchange(comm, n, ExchangeMode.Dense).AllReduceDense(exact);
                var onWire = (float[])mine.Clone();
                var stats = new GradientExchange(comm, n, ExchangeMode.Dense, wire).AllReduceDense(onWire);
                // Each rank's term (|term| <= 1/P) and the average (|avg| <= 1) are rounded once, to 11 or 8 significant bits:
                // the error stays below 2 units of the format's relative step (exact at one worker, which sends nothing).
                double unit = wire == WirePrecision.Float16 ? Math.Pow(2, -11) : Math.Pow(2, -8);
                double tolerance = p > 1 ? 2 * unit : 0;
                for (int i = 0; i < n; i++)
                    if (Math.Abs(onWire[i] - exact[i]) > tolerance) return $"entry {i}: {onWire[i]} vs {exact[i]}";
                if (p > 1 && onWire.SequenceEqual(exact)) return "nothing was rounded: the 16-bit path did not run";
                var fingerprints = new long[p];
                comm.AllGather<long>([CommunicatorExtensions.Fingerprint(string.Join(",", onWire.Select(v => v.ToString("R"))))],
                    fingerprints);
                if (fingerprints.Distinct().Count() != 1) return "ranks hold different results";
                // Large gradients: 49152 (1.5 x 2^15, exact in both formats, as is 49152 / P for P <= 4) on every rank sums past
                // float16's 65504 from two ranks on, but each rank sends 49152 / P.
                var large = Enumerable.Repeat(49152f, n).ToArray();
                new GradientExchange(comm, n, ExchangeMode.Dense, wire).AllReduceDense(large);
                if (large.Any(v => v != 49152f)) return $"large gradients averaged to {large.First(v => v != 49152f)}";
                double expectedBytes = p == 1 ? 0 : 2.0 * (p - 1) / p * 2 * n;
                return Math.Abs(stats.BytesPerRank - expectedBytes) < 1e-6 ? null : $"bytes per rank {stats.BytesPerRank}";
            });
        }
        Check("float16-overflow-fails-on-every-rank", () =>
        {
            const int n = 64;
            var g = new float[n];
            if (me == 0) g[5] = 1e6f * p; // 1e6 after the pre-division: beyond 65504
            try
            {
                new GradientExchange(comm, n, ExchangeMode.Dense, WirePrecision.Float16).AllReduceDense(g);
                return p == 1 ? null : "no error";
            }
            catch (OverflowException e) { return e.Message.Contains("entry 5") && e.Message.Contains("BFloat16") ? null : e.Message; }
        });
        Check("auto-follows-the-model", () =>
        {
            const int n = 10_000;
            var model = new CostModel(1e-5, 1e-9, p);
            var sparseSide = new SparseBuffer();
            sparseSide.Add(me, 1f);
            var few = new GradientExchange(comm, n, ExchangeMode.Auto, model: model).AllReduce(sparseSide, new float[n]);
            var many = new SparseBuffer();
            for (int i = 0; i < n; i++) many.Add(i, 1f); // P * density = P > 1: union fill-in
            var full = new GradientExchange(comm, n, ExchangeMode.Auto, model: model).AllReduce(many, new float[n]);
            if (p == 1) return null;
            return few.Mode == ExchangeMode.Sparse && full.Mode == ExchangeMode.Dense ? null : $"few {few.Mode}, full {full.Mode}";
        });
        Check("length-mismatch-is-reported-on-every-rank", () =>
        {
            if (p == 1) return null;
            try { _ = new GradientExchange(comm, 1000 + me, ExchangeMode.Sparse); return "no exception"; }
            catch (RankMismatchException e) { return e.Message.Contains("rank 1 = 1001") ? null : e.Message; }
        });
        return results;
    }

    public static (int[] Indices, float[] Values) SparseVector(int rank, int n, bool empty)
    {
        if (empty) return ([], []);
        var rng = new Random(100 + rank);
        var idx = Enumerable.Range(0, n).Where(i => i % 5 == 0 || rng.NextDouble() < 0.05).ToArray(); // multiples of 5 overlap across ranks
        var val = idx.Select(_ => (float)(rng.NextDouble() * 2 - 1) * 1e-3f).ToArray();
        return (idx, val);
    }
}
