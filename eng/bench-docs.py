#!/usr/bin/env python3
"""Assembles docs/benchmarks.md from the tables and plots the benchmarks wrote under artifacts/.

Every table is pasted verbatim from a benchmark's own .md output, next to the command that made it,
so the figures in the docs always come from a run of the code."""
import json, os, shutil, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
art = os.path.join(root, "artifacts")
docs = os.path.join(root, "docs")
os.makedirs(os.path.join(docs, "images"), exist_ok=True)

missing = []

def table(name):
    path = os.path.join(art, "bench", name + ".md")
    if not os.path.exists(path):
        missing.append(path)
        return "_not run yet_"
    return open(path).read().strip()

def image(name):
    src = os.path.join(art, "bench", name + ".png")
    if not os.path.exists(src):
        return ""
    shutil.copy(src, os.path.join(docs, "images", name + ".png"))
    return f"\n\n![{name}](images/{name}.png)\n"

def report(name):
    path = os.path.join(art, "runs", name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

sections = []
CLUSTER_NOTES = """
How the table was made. The first sweep's 1 Gbit/s half failed once and then hung: the start-up
probe decided per rank whether to re-measure with 32 MiB, and at 1 Gbit/s the 4 MiB timing sits at the
cut-off, so ranks disagreed (fixed: rank 0 decides for all). Its 100 Mbit/s half was unaffected (the
re-probe never triggers there) and is kept, without dgc at 0.01, whose launch failed transiently; the
1 Gbit/s sweep and that dgc run were made again with the fix, and `cluster-report` joins the rows.

What the speed-ups say. At 100 Mbit/s the dense allreduce of 23 MB takes 5.3 s per step and every
sparse method wins by an order of magnitude: SIDCo-E at 0.001 is 16x faster per step than `none`,
1.6x faster than top-k (whose exact selection costs 113 ms on 5.8M entries) and 1.2x faster than DGC.
At 1 Gbit/s the dense exchange is 0.4 s and compute dominates (all four hosts share 2 cores), so
the gains shrink to about 2x over `none` and 1.1x over DGC. The paper's "up to 41.7x / 7.6x / 1.9x"
come from 8 workers over TCP with much larger models and separate machines; here compute is shared,
which caps every ratio.

Accuracy after 40 steps is far apart (SIDCo-E 61.7 % against 71.8 % dense): a sparse method has
sent 0.1 % of its gradient per step for 40 steps. After one epoch (468 steps, below; the link changes
timing only, not arithmetic), with a 100-step density warm-up, SIDCo-E reaches 80.8 % against 84.0 %:
still 3.2 points behind on this MLP; after three epochs (1,404 steps) 82.2 % against 86.3 %, 4.1 points:
on this model and recipe the gap does not close with more steps, unlike the ConvNet's (5 epochs:
0.7-0.9 points). The accuracy condition of the cluster must-show is not met.

Cost model (predicted vs measured). "pred./alone" compares the model with the exchange alone. It is
within 25 % for the dense allreduce at 1 Gbit/s (1.09), for SIDCo-E at 0.001 on 1 Gbit/s (1.01) and
for SIDCo-E and SIDCo-GP at 0.01 on 100 Mbit/s (1.16, 1.09), just outside for the other sparse
exchanges at 0.01 on 100 Mbit/s (1.27-1.28), and far off elsewhere, for three reasons the model leaves
out:
- waiting for stragglers: in training a rank enters the exchange when its backward pass ends; with
  four ranks on two cores the last one is tens of milliseconds late, so "communicate" holds 40-60 ms
  per step that no link model predicts (compare "communicate" with "exchange alone");
- the token bucket: `tc`'s tbf lets a full bucket (1 MB at 100 Mbit/s, 4 MB at 1 Gbit/s) through at
  line rate after an idle spell, and every exchange follows at least 200 ms of compute, so a sparse
  exchange of 50-230 KB at density 0.001 passes in 2-7 ms, while the model charges its bytes at the
  link rate (beta from a 4 MiB probe) and over-predicts them several times. A real link has no such
  bucket, so there the byte term applies (switch buffers absorb bursts only in part);
- the dense allreduce on 100 Mbit/s takes 1.5x the ring model's time: Open MPI's algorithm for 23 MB on
  4 ranks over TCP with tbf queues moves more than 2(P-1)/P of the data or stalls on the queue.
The projection below uses the probe made after training (the better alpha), with selections assumed
disjoint.
"""
sections.append("""# Benchmarks

All figures below were produced by the commands shown, on the project's development machine
(2 cores, 24 GiB, no GPU, Debian 12), with the code as committed. The machine is shared and noisy:
compare ratios measured side by side in one run, not absolute figures across runs. Each benchmark
writes JSON (`--json FILE`), a markdown table beside it (`FILE.md`) and, where useful, a plot
(`FILE.png`); `python3 eng/bench-docs.py` pastes them here.
""")
sections.append("""## Compression microbenchmark (the paper's Figure-style latency and estimation quality)

```bash
./build.sh bench compression --json artifacts/bench/compression.json
```
Defaults: 1,000,000 / 10,000,000 / 25,600,000 elements (ResNet-50 size); densities 0.1, 0.01, 0.001;
data `laplace`, `heavy` (Student-t with 3 degrees of freedom) and `real` (gradients captured by
training a 784-2048-2048-10 MLP on Fashion-MNIST at steps 0, 10, 25, 50, 100, ...). Median of 10
calls after 10 warm-up calls; every compressor runs with error feedback (residual carried from call to
call, as in training) and gets a fresh gradient of the same distribution each call (the data rotated
by a random offset, untimed): repeating one vector would grow the residual in lock-step, which
training never does and which threw the estimate off. `floor` is one read pass (`TensorPrimitives.SumOfMagnitudes`, single thread);
`torch-topk` is `t.abs().topk(k)` in TorchSharp with all cores. Achieved/target is the mean of calls
26-30 of a fresh compressor (the adaptive controller has settled); "calls to band" is the first
call whose last-5 mean is within [0.8, 1.25].

In this run, at 25,600,000 Laplace entries and density 0.001: SIDCo-E 5.88 ms = 1.6x the floor
(3.63 ms), SIDCo-GP 2.7x, SIDCo-P 2.5x; 321x, 194x and 213x faster than torch-topk (1,890 ms) and
all faster than DGC (20.8 ms). On real gradients every SIDCo variant's achieved/target lies in
[0.80, 1.20] at every size and density, reached after 5-19 calls. The previous session's run (one
loop for every statistics combination with candidates appended inside it, and the same vector
repeated every call) measured 4.0x, 5.0x and 5.3x.
""" + image("compression") + "\n" + table("compression"))
KERNELS_SECTION = """## Kernel backends on a GPU: CPU (SIMD) vs ILGPU on an NVIDIA H100

```bash
./build.sh bench kernels --runs 20 --json artifacts/bench/kernels-h100.json
```
Run on a lent machine with one NVIDIA H100 80GB HBM3 and 16 CPU cores (the project's own machine has
no GPU), from a framework-dependent publish of the benchmarks (`dotnet publish
test/Microsoft.ML.SIDCo.Benchmarks -c Release`) with the .NET runtime beside it; Laplace data. Both
backends run in the same process, one after the other, on the same arrays. "of which copies" is the
host-device copying inside the ILGPU backend (`IlgpuGradientKernels.Timings`), "kernels" the kernels
from launch to synchronisation.

What it says. The kernels themselves are fast: the fused error-feedback pass over 25.6M entries (read
gradient and residual, write residual: 307 MB) takes 0.15 ms, about 2 TB/s, and a whole SIDCo-E call
at density 0.001 spends 0.45 ms in kernels, 17.5x less than the CPU backend on 16 cores (7.9 ms). But
`IGradientKernels` works on host spans, so every call copies the gradient and the residual to the
device and the residual back: 53 ms per SIDCo-E call at 25.6M, 12 ms at 5.8M (pageable host memory,
8-9 GB/s here). With gradients in host memory, as the trainer keeps them today (TorchSharp CPU
tensors gathered into one flat buffer), `KernelBackend.Cpu` is the right choice: 7x faster at
25.6M and 3.4x at the ConvNet's 317k. The GPU path pays only when the gradient and the residual live
in device memory, which needs CUDA tensors and an error-feedback buffer owned by the device; that is
not built yet. The kernels are written for that case: a group of 256 threads per 4,096-entry segment
with coalesced reads, fixed-order reductions in shared memory, and ordered compaction (a prefix sum
per row), so the selection stays identical to the CPU backend's.
"""
sections.append(KERNELS_SECTION + "\n" + table("kernels-h100"))
sections.append("""## Allreduce: dense `MPI_Allreduce` vs sparse allreduce of SIDCo selections

```bash
./build.sh bench allreduce --json artifacts/bench/allreduce.json
```
25,600,000 floats, ranks 2 and 4 under real `mpirun` (shared memory on one machine) and in-process
for comparison; selections from SIDCo-E on Laplace data; each timing is the slowest rank's, median
of 10 after warm-up. Bytes per rank are the cost model's (ring allreduce 2(P-1)/P 4n; allgather
(P-1)/P K 8); "predicted" is the model with alpha, beta and the scatter cost probed at start-up.
This run overlapped the (network-bound) cluster benchmark, which inflates absolute times; the rows of
one configuration were measured side by side. It was made in the first session, before the probe's
re-measure decision became collective (the only change to this path since).
""" + "\n" + table("allreduce"))
sections.append("""## End-to-end training (Fashion-MNIST)

```bash
./build.sh bench training --transport mpi --workers 4 --model convnet-wide --epochs 5 --density-warmup 200 --json artifacts/bench/training.json
```
The sample's ConvNet (two 5x5 convolutions with 32 and 64 channels, a 256-unit dense layer: 317,066
parameters), 4 MPI ranks on 2 cores, batch 32 per worker, SGD with momentum 0.9, cosine learning
rate, the same seed for every run, 5 epochs (2,340 steps); test accuracy on the 10,000 test images.
Every compressor gets the same sparsity warm-up (density from 0.25 down to the target over the first
200 steps), so bytes and compress times include those steps. Times are means per step over the whole
run, on 4 ranks sharing 2 cores: a rank preempted inside a timed section adds its wait to that section.
""" + image("training") + "\n" + table("training") + """

At density 0.001 every SIDCo variant ends within 1.0 point of `none`. Compress time is 5.1-8.5x below
`topk`'s here (SIDCo-E 7.8x, SIDCo-GP 5.1x, SIDCo-P 8.5x; the previous kernels gave 2.6-4.1x), short
of the 10x asked for. The microbenchmark at exactly this size (below, one process, no training
beside it) puts SIDCo 9.5-11x below top-k per call on real gradients and 20-23x on Laplace data
(about 0.1 ms against 1.2 ms); in training the mean also carries
the warm-up steps (up to 80,000 entries selected per call) and preemption of 4 ranks on 2 cores,
which weighs more on a section of a few tenths of a millisecond than on top-k's 3 ms. At this size a
SIDCo call is two reads of a cache-resident buffer (the fused error-feedback and statistics pass, and
the exceedance statistics of the 25 % first stage for the later stages) plus the selection from the
candidates, about 0.1 ms in isolation; SIDCo-GP's pass also sums logarithms.

```bash
./build.sh bench compression --elements 317066 --densities 0.001 --data real,laplace --compressors sidco-e,sidco-gp,sidco-p,topk,dgc --runs 30 --json artifacts/bench/compression-convnet.json
```

""" + table("compression-convnet"))
sections.append("""## Emulated cluster: 4 hosts over rate-limited links (the paper's speed-up setting)

```bash
./build.sh bench cluster --hosts 4 --link 100mbit,1gbit --model wide-mlp --steps 40 --json artifacts/bench/cluster.json
#   its 1 Gbit/s half was stopped (see below); these two runs complete the table:
./build.sh bench cluster --hosts 4 --link 1gbit --model wide-mlp --steps 40 --json artifacts/bench/cluster-1gbit.json
./build.sh bench cluster --hosts 4 --link 100mbit --model wide-mlp --compressors dgc --densities 0.01 --steps 40 --json artifacts/bench/cluster-100mbit-dgc.json
cat artifacts/bench/cluster-100mbit.rows.jsonl artifacts/bench/cluster-100mbit-dgc.json.rows.jsonl artifacts/bench/cluster-1gbit.json.rows.jsonl > artifacts/bench/cluster-all.rows.jsonl
dotnet test/Microsoft.ML.SIDCo.Benchmarks/bin/Release/net10.0/Microsoft.ML.SIDCo.Benchmarks.dll cluster-report --rows artifacts/bench/cluster-all.rows.jsonl --json artifacts/bench/cluster.json
./build.sh bench cluster --hosts 4 --link 10gbit --model wide-mlp --compressors none,sidco-e --densities 0.001 --epochs 1 --density-warmup 100 --json artifacts/bench/cluster-accuracy.json
./build.sh bench cluster --hosts 2 --workers-per-host 2 --link 100mbit --model wide-mlp --compressors none,sidco-e --densities 0.001 --steps 40 --json artifacts/bench/cluster-hierarchical.json
```
Each host is a network namespace whose link is limited with `tc` in both directions; one MPI rank
per host talks TCP over the limited links (docs/distributed.md). Model: a 784-2048-2048-10 MLP
(5.8 million parameters, 23 MB of gradient per step). Steps counted after the same seed and data;
speed-ups are step-time ratios. All four "hosts" share the same 2 cores, so compute time is inflated
about 2x relative to separate machines and varies from run to run. "predicted comm." is the cost
model (alpha-beta with the probed link) for the exchange each step used; "communicate" is the
in-training time, which also holds the wait for the slowest rank's backward pass; "exchange alone"
times the same exchange (same links, same selection size per rank) started after a barrier, the
quantity the model describes.
""" + CLUSTER_NOTES + image("cluster") + "\n" + table("cluster")
    + "\n\n### Accuracy after one epoch (468 steps, the link does not change the arithmetic)\n\n" + table("cluster-accuracy")
    + "\n\n### Accuracy after three epochs (1,404 steps)\n\n```bash\n./build.sh bench cluster --hosts 4 --link 10gbit --model wide-mlp --compressors none,sidco-e --densities 0.001 --epochs 3 --density-warmup 100 --json artifacts/bench/cluster-accuracy-3ep.json\n```\n"
    + "The gap does not close with more training on this recipe (constant learning rate 0.05, momentum 0.9, batch 32 per host): "
    + "3.2 points after one epoch, 4.1 after three, while on the ConvNet SIDCo stays within 1 point (sections above). "
    + "Not verified here: with 5.8 million parameters, 0.1 % is about 5,800 entries per host and step, and each of the 2,048 first-layer "
    + "units gets a few of its 784 weights updated per step; a per-layer density or a longer warm-up are the next things to try.\n\n" + table("cluster-accuracy-3ep")
    + "\n\n### Hierarchical vs flat exchange (2 hosts x 2 workers)\n\nMade in the first session (before the fixes to the probe and to the gradient wrappers, neither of which changes these timings materially).\n\n" + table("cluster-hierarchical"))

issue5 = [r for r in (report("issue5-none"), report("issue5-sidco-e"), report("issue5-sidco-e-warmup")) if r]
if issue5:
    def bytes_share(r):
        h = r["history"]
        return sum(e["bytesPerStep"] for e in h) / sum(e["denseBytesPerStep"] for e in h)
    rows = "\n".join(
        f"| {r['compressor']} | {r['density'] if r['compressor'] != 'none' else '-'} | {'200 steps' if r is issue5[-1] and len(issue5) == 3 else '-'} "
        f"| {r['testAccuracy']*100:.2f} % | {(r['testAccuracy'] - issue5[0]['testAccuracy'])*100:+.2f} | {bytes_share(r)*100:.2f} % | {r['wallSeconds']:.0f} s |"
        for r in issue5)
    sections.append(f"""## Full Fashion-MNIST: SIDCo-E at density 0.001 vs dense allreduce

```bash
dotnet src/Samples/FashionMnist/bin/Release/net10.0/FashionMnist.dll --epochs 5 --compressor none --report artifacts/runs/issue5-none.json
dotnet src/Samples/FashionMnist/bin/Release/net10.0/FashionMnist.dll --epochs 5 --compressor sidco-e --density 0.001 --report artifacts/runs/issue5-sidco-e.json
dotnet src/Samples/FashionMnist/bin/Release/net10.0/FashionMnist.dll --epochs 5 --compressor sidco-e --density 0.001 --density-warmup 200 --report artifacts/runs/issue5-sidco-e-warmup.json
```
60,000 / 10,000 images, 4 in-process workers, the sample's ConvNet (317,066 parameters), batch 32 per
worker, SGD with momentum 0.9, learning rate 0.05 with 50 warm-up steps and a cosine schedule, error
feedback, the same seed, 5 epochs (2,340 steps). The third run adds DGC's sparsity warm-up: over the
first 200 steps (9 % of the run) the density falls geometrically from 0.25 to 0.001. Bytes are the
share of the dense allreduce's bytes over the whole run. Runs are deterministic: repeating a command
gives the same accuracy.

| compressor | density | density warm-up | test accuracy | vs dense (points) | bytes vs dense | wall time |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

Without the warm-up SIDCo-E ends {(issue5[0]['testAccuracy'] - issue5[1]['testAccuracy'])*100:.2f} points below dense: the starved first steps (epoch-1 training
accuracy 64 % against 76 %) are never fully made up in 5 epochs. Other levers tried on the same
command (SIDCo-E, 0.001, 5 epochs; the flag added to the second command above) and set aside,
measured in the previous session with the earlier kernels (their statistics summed in another
order, which moves the 5-epoch result by a few tenths: 89.17 % then, 89.34 % now without a flag):

| flag | SIDCo-E | dense with the same flag |
| --- | --- | --- |
| `--momentum-correction` | 89.15 % | (90.49 %) |
| `--lr 0.1` | 88.00 % | 90.69 % |
| `--lr 0.025` | 87.86 % | - |
| `--batch-size 16` | 89.79 % | 90.95 % |
| `--density-warmup 100` | 89.59 % | (90.49 %) |
| `--density-warmup 468` (one epoch) | 89.68 % | (90.49 %) |
""")
# artifacts/ is not committed: on a fresh clone most tables are absent, and writing would replace the
# committed figures with "not run yet". Refuse unless asked.
if missing and "--allow-missing" not in sys.argv:
    sys.exit("bench-docs: not writing docs/benchmarks.md; missing (run their commands first, or pass --allow-missing):\n  " + "\n  ".join(missing))
open(os.path.join(docs, "benchmarks.md"), "w").write("\n\n".join(sections).rstrip() + "\n")
print("wrote docs/benchmarks.md")
