#!/usr/bin/env python3
"""Writes docs/benchmarks.md from what the benchmarks wrote under artifacts/ (JSON, a markdown table beside
each, plots). Every table is pasted as the benchmark printed it, under the command that made it, and every
figure in the prose is read from the JSON, so the page shows one set of runs of the code as it is.

Usage: python3 eng/bench-docs.py [--allow-missing]
Without --allow-missing it refuses to write while a run is missing (a fresh clone has no artifacts/, and the
page would lose its figures)."""
import json, math, os, shutil, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
art = os.path.join(root, "artifacts")
docs = os.path.join(root, "docs")
missing = []
SIDCO = {"sidco-e": "SIDCo-E", "sidco-gp": "SIDCo-GP", "sidco-p": "SIDCo-P"}
NAMES = {"none": "none", "topk": "top-k", "dgc": "DGC", **SIDCO}


def path(name, ext):
    return os.path.join(art, name + ext) if "/" in name else os.path.join(art, "bench", name + ext)


def results(name, required=True):
    """The rows of artifacts/bench/<name>.json (None when absent; a required run is recorded as missing)."""
    p = path(name, ".json")
    if not os.path.exists(p):
        if required:
            missing.append(p)
        return None
    return json.load(open(p))


def rows(name, required=True):
    r = results(name, required)
    return None if r is None else r["results"]


def table(name):
    p = path(name, ".md")
    if not os.path.exists(p):
        missing.append(p)
        return "_not run yet_"
    return open(p).read().strip()


def image(name, alias=None):
    src, alias = path(name, ".png"), alias or name
    if not os.path.exists(src):
        return ""
    os.makedirs(os.path.join(docs, "images"), exist_ok=True)
    shutil.copy(src, os.path.join(docs, "images", alias + ".png"))
    return f"![{alias}](images/{alias}.png)\n\n"


def commit_of(name):
    """The commit a run was made on: <name>.commit beside its JSON (written by whoever ran it, from `git rev-parse
    --short HEAD` in a clean checkout), else the newest commit older than the JSON."""
    marker = path(name, ".commit")
    if os.path.exists(marker):
        return open(marker).read().strip()
    p = path(name, ".json")
    if not os.path.exists(p):
        return "?"
    out = subprocess.run(["git", "-C", root, "log", "-1", "--format=%h", f"--before=@{int(os.path.getmtime(p))}"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def link_name(mbps):
    return "1 Gbit/s" if mbps == 1000 else "100 Mbit/s"


def pts(x):
    return f"{x * 100:.2f}"


# ---------------------------------------------------------------- end-to-end training (issue 6, must-show 4)

def below_topk(at, field):
    """Top-k's compress time over each SIDCo variant's, by `field` (compressMs: the mean step, compressMsMedian: the
    median step), for the rows of one density keyed by compressor; None when the run did not record that field."""
    if not all(at[c].get(field) for c in list(SIDCO) + ["topk"]):
        return None
    return {c: at["topk"][field] / at[c][field] for c in SIDCO}


def training_check(rs):
    """Must-show 4 of issue 6 on one run: every SIDCo variant at 0.001 within 1.0 point of none, compress time <= 1/10 of top-k's.

    Returns (holds with the mean compress time per step, holds with the median step (None when the run has no medians), text)."""
    at = {r["compressor"]: r for r in rs if r["compressor"] == "none" or r["density"] == 0.001}
    none, topk = at["none"], at["topk"]
    ratios, ratios_median = below_topk(at, "compressMs"), below_topk(at, "compressMsMedian")
    medians = ratios_median is not None
    parts, ok, ok_median = [], True, medians
    for c, n in SIDCO.items():
        gap = (none["testAccuracy"] - at[c]["testAccuracy"]) * 100
        ratio = ratios[c]
        close = round(gap, 2) <= 1.0
        ok &= close and ratio >= 10
        part = (f"{n} {gap:.2f} points behind{'' if close else ' (more than 1.0)'}, "
                f"compress {ratio:.2f}x below top-k{'' if ratio >= 10 else ', short of 10x'}")
        if medians:
            ratio_median = ratios_median[c]
            ok_median &= close and ratio_median >= 10
            part += f" ({ratio_median:.2f}x by the median step)"
        parts.append(part)
    gap_topk = (none["testAccuracy"] - topk["testAccuracy"]) * 100
    return ok, (ok_median if medians else None), (
        f"`none` {pts(none['testAccuracy'])} %, top-k {gap_topk:.2f} behind at {topk['compressMs']:.3f} ms of compression per step"
        + (f" ({topk['compressMsMedian']:.3f} ms the median step)" if medians else "") + "; " + "; ".join(parts))


def verdict(ok, ok_median):
    """The suffix of a run's line: nothing when it holds, else whether the median step would have met it."""
    if ok:
        return ""
    return " (**not met** with the mean; met with the median step)" if ok_median else " (**not met**)"


def training_section():
    main = rows("training")
    names = ("training-repeat", "training-repeat-2", "training-repeat-3")
    repeats = [(n, r) for n, r in ((n, rows(n, required=i == 0)) for i, n in enumerate(names)) if r is not None]
    text = ["""## End-to-end training (Fashion-MNIST, 4 MPI ranks)

```bash
./build.sh bench training --transport mpi --workers 4 --json artifacts/bench/training.json
./build.sh bench training --transport mpi --workers 4 --densities 0.001 --json artifacts/bench/training-repeat.json
./build.sh bench training --transport mpi --workers 4 --densities 0.001 --json artifacts/bench/training-repeat-2.json
./build.sh bench training --transport mpi --workers 4 --densities 0.001 --json artifacts/bench/training-repeat-3.json
```
The defaults are the recipe: the sample's ConvNet (two 5x5 convolutions with 32 and 64 channels and a
256-unit dense layer: 317,066 parameters), 4 MPI ranks sharing the 2 cores (one TorchSharp thread each),
batch 32 per rank, SGD with momentum 0.9, learning rate 0.05 with 50 warm-up steps and a cosine decay,
error feedback, the same seed for every run, 8 epochs (3,744 steps), test accuracy on the 10,000 test
images. Every compressor gets DGC's sparsity warm-up: the density falls from 0.25 to the target over the
first 200 steps (`--density-warmup 0` turns it off). Times are means per step over the whole run, warm-up
included; a rank preempted inside a timed section (4 ranks on 2 cores) adds its wait to that section.
The median column takes the same per-step compress times: each rank's median step of each epoch,
averaged over ranks and epochs (`EpochMetrics.CompressMsMedian`). It leaves out the few steps in which
the scheduler ran another rank inside the compression, which the mean counts in full.
The later commands run the rows at 0.001 again, to show how much one run's verdict moves.

Eight epochs, not five. At 5 epochs (2,340 steps) every sparse compressor at 0.001 ended 0.7-1.1 points
behind `none`, top-k included, so whether a compressor stayed within one point was decided by the runs'
spread: in four runs of 75862f2's code with `--epochs 5` top-k was 0.83-1.06 points behind and SIDCo-P
0.84-1.08, and must-show 4 held in three (the fourth failed on SIDCo-P's 1.08 points and on SIDCo-GP's
compress time, 9.92x below top-k's). The density warm-up's starved first steps are not made up in five
epochs (the sample's 5-epoch table above shows the same).
"""]
    if main is None:
        return text[0] + "\n_not run yet_\n"
    text.append(image("training") + table("training") + "\n")
    checks = [(f"the table (run at {commit_of('training')})", *training_check(main))]
    for i, (name, repeat) in enumerate(repeats):
        checks.append((f"the {('second', 'third', 'fourth')[i]} run (`{name}`, at {commit_of(name)})", *training_check(repeat)))
    held = sum(ok for _, ok, _, _ in checks)
    by_median = [m for _, _, m, _ in checks if m is not None]
    text.append("**Issue 6, must-show 4** (density 0.001: every SIDCo variant within 1.0 point of `none`, its compress "
                f"time at most 1/10 of top-k's) holds in {held} of {len(checks)} runs with the mean compress time per step"
                + (f", and in {sum(by_median)} of {len(by_median)} with the median step" if by_median else "") + ":\n\n"
                + "\n".join(f"- {what}: {detail}{verdict(ok, ok_median)}." for what, ok, ok_median, detail in checks) + "\n")
    at = {r["compressor"]: r for r in main if r["density"] == 0.001}
    if all("lastEpochCompressMs" in at[c] for c in list(SIDCO) + ["topk"]):
        text.append(f"In the last epoch alone, after the warm-up, top-k takes {at['topk']['lastEpochCompressMs']:.3f} ms per step and "
                    + ", ".join(f"{SIDCO[c]} is {at['topk']['lastEpochCompressMs'] / at[c]['lastEpochCompressMs']:.1f}x below it "
                                f"at {at[c]['stages']:.1f} estimation stages per call" for c in SIDCO)
                    + " (JSON fields `lastEpochCompressMs` and `stages`: the adaptive controller's choice, averaged over ranks and steps).\n")
    text.append(convnet_section())
    return "\n".join(text)


def convnet_section():
    warm, cold = rows("compression-convnet"), rows("compression-convnet-cold")
    head = """### The same compressors alone, on this model's gradients

```bash
./build.sh bench compression --elements 317066 --densities 0.001 --data real-convnet,laplace --compressors sidco-e,sidco-gp,sidco-p,topk,dgc --runs 51 --json artifacts/bench/compression-convnet.json
./build.sh bench compression --elements 317066 --densities 0.001 --data real-convnet --compressors sidco-e,sidco-gp,sidco-p,topk,dgc --runs 51 --no-torch-topk --evict-cache 64 --json artifacts/bench/compression-convnet-cold.json
```
Gradients of the ConvNet captured during its training (from step 200 on), one process, nothing else
running; the second command first reads 64 MiB of other memory before every call, so that the residual
comes from DRAM as it does after a backward pass.
"""
    if warm is None or cold is None:
        return head + "\n_not run yet_\n"
    def span(rs):
        at = {r["compressor"]: r["medianMs"] for r in rs if r["data"] == "real-convnet"}
        s = [at[c] for c in SIDCO]
        return at["topk"], min(s), max(s)
    tw, lo, hi = span(warm)
    tc, clo, chi = span(cold)
    inflation = ""
    main = rows("training", required=False)
    if main is not None:
        at = {r["compressor"]: r for r in main if r["density"] == 0.001}
        alone = {r["compressor"]: r["medianMs"] for r in warm if r["data"] == "real-convnet"}
        ratios = list(below_topk(at, "compressMs").values())
        ratios_median = list((below_topk(at, "compressMsMedian") or {}).values())
        medians = bool(ratios_median)
        def times(field):
            xs = [at[c][field] / alone[c] for c in SIDCO]
            return f"SIDCo {min(xs):.1f}-{max(xs):.1f}x and top-k {at['topk'][field] / alone['topk']:.2f}x"
        inflation = (" In the training table the same calls took " + times("compressMs") + " their time alone by the mean"
                     + (", " + times("compressMsMedian") + " by the median step" if medians else "") + ". "
                     "Reading the residual from DRAM does not explain the SIDCo calls' inflation (the cold rows cost what the warm "
                     "ones cost). A SIDCo call is one pass over the gradient and the residual (error feedback adds the gradient into "
                     "the residual, and the statistics, the peaks and the candidates are taken in the same pass) plus a few "
                     "microseconds of fitting; a top-k call makes the same pass and then a quickselect. In training that pass shares "
                     "the two cores and their caches with three other ranks' forward and backward passes and costs more than alone, "
                     "while the quickselect, which works in the cache, does not. On top of that, a step's compress time counts any "
                     "time slice the scheduler gives another rank meanwhile, milliseconds on the steps where it happens; the mean "
                     "takes those steps in full and the median leaves them out. So in training SIDCo's margin over top-k is "
                     f"close to the quickselect's cost over the pass's, {min(ratios):.1f}-{max(ratios):.1f}x by the mean in the table above"
                     + (f" ({min(ratios_median):.1f}-{max(ratios_median):.1f}x by the median step)" if medians else "")
                     + f", not the {tw / hi:.0f}-{tw / lo:.0f}x of the calls alone.")
    return (head + f"\nAlone, SIDCo takes {lo:.2f}-{hi:.2f} ms per call against top-k's {tw:.2f} ms ({tw / hi:.0f}-{tw / lo:.0f}x below it); "
            f"with the cache evicted {clo:.2f}-{chi:.2f} ms against {tc:.2f} ms ({tc / chi:.0f}-{tc / clo:.0f}x).{inflation}\n\n"
            + table("compression-convnet") + "\n\nWith `--evict-cache 64`:\n\n" + table("compression-convnet-cold") + "\n")


# ---------------------------------------------------------------- emulated cluster (issue 7)

def cluster_section():
    head = """## Emulated cluster: 4 hosts over rate-limited links (the paper's speed-up setting)

```bash
./build.sh bench cluster --hosts 4 --link 100mbit,1gbit --json artifacts/bench/cluster.json
./build.sh bench cluster --hosts 4 --link 10gbit --compressors none,sidco-e --densities 0.001 --epochs 5 --density-warmup 100 --json artifacts/bench/cluster-accuracy-5ep.json
./build.sh bench cluster --hosts 4 --link 10gbit --compressors none,sidco-e --densities 0.001 --epochs 10 --density-warmup 100 --json artifacts/bench/cluster-accuracy-10ep.json
./build.sh bench cluster --hosts 2 --workers-per-host 2 --link 100mbit --compressors none,sidco-e --densities 0.001 --steps 40 --json artifacts/bench/cluster-hierarchical.json
```
Each host is a network namespace whose link to a bridge is limited with `tc` (tbf) in both directions;
`mpirun` starts one rank per host through an rsh stand-in, so every host runs its own `orted` and the
ranks talk TCP over the limited links only (docs/distributed.md). The token bucket holds 4 ms of link
time, so a message cannot pass much faster than the link's rate. Model: a 784-2048-2048-10 MLP (5.8
million parameters, 23 MB of gradient per step), the training recipe of `bench training` with DGC's
momentum correction (which this MLP needs at density 0.001). All four hosts share the machine's 2 cores
(each rank gets one TorchSharp thread), so compute takes about twice what it would on separate machines.

How the table is made (the defaults of the first command): each sparse compressor trains 400 steps,
timed over the last 200 (the first half holds JIT compilation and the adaptive compressors'
calibration), and the sparse compressors of a density train **side by side in one job**: each is a
whole training of its own, and they take turns every 25 steps, each turn resuming from that
compressor's checkpoint, the order reversing from turn to turn. Compute on four ranks sharing two cores
varies between runs made minutes apart by more than the compressors differ; turns a few seconds apart on
the same placement of ranks share that noise, so each pair of turns is one paired measurement (the
"side by side" table). `none` runs alone for 20 steps (timed over the last 10): a dense step at
100 Mbit/s takes seconds and its time does not drift. Its accuracy therefore is not comparable with the
sparse rows'; accuracy after the same steps is the second command (the link changes timing, not
arithmetic).

Columns: "communicate" is the in-training exchange time; "of which wait" is its part spent in the
allgather of counts that opens a sparse exchange, which no rank leaves before the last rank has
arrived: the wait for the slowest rank's compute, not the link. "predicted comm." is the cost model
(alpha-beta with the link probed at start-up) for the exchange each step used; "exchange alone" times
the same exchange (same links, same selection size per rank) started right after a barrier.
"""
    rs = rows("cluster")
    if rs is None:
        return head + "\n_not run yet_\n"
    data = results("cluster")
    comps = data.get("comparisons") or []
    at = {(r["compressor"], None if r["compressor"] == "none" else r["density"], r["linkMbps"]): r for r in rs if r["exchange"] == "flat"}
    text = [head, f"Run at {commit_of('cluster')}.\n", image("cluster") + table("cluster") + "\n", speedups(at, comps), accuracy_after_same_steps(),
            cost_model(at), hierarchical()]
    return "\n".join(text)


def pair(comps, link, density, compressor, reference):
    return next((c for c in comps if c["linkMbps"] == link and c["density"] == density and c["compressor"] == compressor and c["reference"] == reference), None)


def interval(c):
    return f"{c['stepDiffMs']:+.1f} [{c['stepDiffLowMs']:+.1f}, {c['stepDiffHighMs']:+.1f}]"


def speedups(at, comps):
    """Issue 7's speed-up table: every SIDCo variant against none (separate run) and against top-k and DGC (paired turns)."""
    head = ("### What the speed-ups say\n\n"
            "Step-time ratios; against top-k and DGC from the paired turns of the side-by-side job (the difference is the reference's "
            "step minus the compressor's, with its 95 % interval; positive: the compressor is faster).\n\n"
            "| link | density | compressor | step ms | vs none | vs top-k | vs DGC | step diff. vs DGC, ms [95 %] | turns faster than DGC |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    body, verdicts = [], []
    for link in (100, 1000):
        label = link_name(link)
        none = at.get(("none", None, link))
        for density in (0.001, 0.01):
            for c in SIDCO:
                r = at.get((c, density, link))
                t, d = pair(comps, link, density, c, "topk"), pair(comps, link, density, c, "dgc")
                if r is None or none is None or t is None or d is None:
                    continue
                body.append(f"| {label} | {density:g} | {SIDCO[c]} | {r['stepMs']:.1f} | {none['stepMs'] / r['stepMs']:.1f}x | {t['ratio']:.2f}x | "
                            f"{d['ratio']:.2f}x | {interval(d)} | {d['faster']} of {d['turns']} |")
                if c == "sidco-e" and density == 0.001:
                    faster = "faster than DGC, the interval excluding zero" if d["stepDiffLowMs"] > 0 else (
                        "slower than DGC, the interval excluding zero" if d["stepDiffHighMs"] < 0 else "not measurably different from DGC")
                    verdicts.append(f"at {label} SIDCo-E is **{none['stepMs'] / r['stepMs']:.1f}x faster than `none`**, **{t['ratio']:.2f}x faster than top-k** "
                                    f"and **{faster}** ({d['ratio']:.2f}x, {d['stepDiffMs']:+.1f} ms per step, {d['faster']} of {d['turns']} turns)")
    if not body:
        return head + "_not run yet_\n"
    text = head + "\n".join(body) + "\n\nAt density 0.001 (issue 7, must-shows 1 and 2): " + "; ".join(verdicts) + "."
    e, d = at.get(("sidco-e", 0.001, 100)), at.get(("dgc", 0.001, 100))
    if e and d:
        text += (f" SIDCo-E's gain over DGC is its compression ({e['compressMs']:.1f} against {d['compressMs']:.1f} ms per step at 100 Mbit/s, "
                 f"momentum correction included for both; {e['bytesPerStep'] / 1000:.0f} against {d['bytesPerStep'] / 1000:.0f} KB sent per step).")
    text += ("\n\nAgainst the paper's \"up to 41.7x / 7.6x / 1.9x\" over none, top-k and DGC: the ratio to `none` grows with how slow the "
             "link is against the compute (here a small model's compute against a 23 MB exchange); the ratio to top-k is smaller here, because "
             "our top-k is an O(n) quickselect on the CPU where the paper's is a framework's sort-based top-k on a GPU; the ratio to DGC stays "
             "small wherever compression is a small part of the step, as it is once the exchange is sparse.\n")
    return text


def accuracy_after_same_steps():
    text = "### Accuracy after the same steps\n\n"
    rs = rows("cluster-accuracy-5ep")
    if rs is None:
        return text + "_not run yet_\n"
    def gap(name):
        at = {r["compressor"]: r for r in rows(name, required=False)}
        none, e = at["none"], at["sidco-e"]
        g = (none["testAccuracy"] - e["testAccuracy"]) * 100
        return (f"SIDCo-E reaches {pts(e['testAccuracy'])} % against {pts(none['testAccuracy'])} %, **{g:.2f} points behind** "
                + ("(within 1 point)" if round(g, 2) <= 1.0 else "(more than 1 point)") + f" (run at {commit_of(name)})")
    text += ("`none` and SIDCo-E at density 0.001 with a 100-step density warm-up and momentum correction, trained for the same steps on "
             "10 Gbit/s links so that `none` finishes in minutes (the link changes timing, not arithmetic). After five epochs (2,340 steps) "
             + gap("cluster-accuracy-5ep") + ".")
    if rows("cluster-accuracy-10ep", required=False) is not None:
        text += (" After ten epochs (4,680 steps, the third command) "
                 + gap("cluster-accuracy-10ep") + ".")
    return text + "\n\n" + table("cluster-accuracy-5ep") + "\n"


def cost_model(at):
    """Issue 7, must-show 3: the model against the measured communicate time, per link and density, and what it leaves out."""
    def span(xs, digits=2):
        lo, hi = f"{min(xs):.{digits}f}", f"{max(xs):.{digits}f}"
        return lo if lo == hi else f"{lo}-{hi}"
    def within(x):
        return 0.75 <= x <= 1.25
    lines = ["### Cost model: predicted against measured\n",
             "The model (alpha-beta with the links probed at start-up) against the in-training communicate time, against it "
             "without the wait for the slowest rank, and against the exchange alone; one row per link and density (ratios "
             "predicted / measured over the runs of the row; within 25 % is 0.75-1.25):\n",
             "| link | density | runs | predicted ms | pred. / communicate | pred. / (communicate - wait) | pred. / exchange alone | within 25 % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups = {}
    for k, r in at.items():
        groups.setdefault((k[2], k[1]), []).append((k[0], r))
    outside = []
    for (link, density), members in sorted(groups.items(), key=lambda g: (g[0][0], -(g[0][1] or 1))):
        # Per run: predicted over communicate, and over communicate without the wait (sparse runs that measured one).
        ratios = [(c, r["predictedCommunicateMs"] / r["communicateMs"],
                   r["predictedCommunicateMs"] / (r["communicateMs"] - r["waitMs"]) if c != "none" and r.get("waitMs") is not None and r["communicateMs"] > r["waitMs"] else None)
                  for c, r in members]
        raw = [x for _, x, _ in ratios]
        net = [y for _, _, y in ratios if y is not None]
        alone = [r["predictedCommunicateMs"] / r["isolatedExchangeMs"] for _, r in members if r.get("isolatedExchangeMs")]
        ok = [c for c, x, y in ratios if within(x) or (y is not None and within(y))]
        if len(ok) < len(members):
            outside.append((link, density, [c for c, _ in members if c not in ok]))
        lines.append(f"| {link_name(link)} | {'dense' if density is None else f'{density:g}'} | {len(members)} | "
                     f"{span([r['predictedCommunicateMs'] for _, r in members], 1)} | {span(raw)} | {span(net) if net else '-'} | {span(alone) if alone else '-'} | "
                     f"{len(ok)} of {len(members)} |")
    lines.append("\n\"Within 25 %\" counts a run whose prediction is within 25 % of its communicate time with or without the wait. Outside: "
                 + ("; ".join(f"{link_name(l)} at {'dense' if d is None else f'{d:g}'} ({', '.join(NAMES[c] for c in cs)})" for l, d, cs in outside) or "none")
                 + ". What the model leaves out there:")
    lines.append("- the wait for the slowest rank: with four ranks on two cores the last backward pass ends milliseconds after the first, and "
                 "top-k's long compression makes the others wait for it (top-k's rows wait "
                 + ", ".join(f"{r['waitMs']:.0f} of {r['communicateMs']:.0f} ms" for k, r in sorted(at.items(), key=lambda kv: (kv[0][2], -(kv[0][1] or 1))) if k[0] == "topk")
                 + "); `waitMs` measures it, and the column without it removes it;")
    for link in (100, 1000):
        small = [r for k, r in at.items() if k[2] == link and k[1] == 0.001 and r.get("isolatedExchangeMs")]
        if not small:
            continue
        beta = sum(r["betaNsPerByte"] for r in small) / len(small)
        got = [r["bytesPerStep"] / r["isolatedExchangeMs"] / 1000 for r in small]
        pred = [r["predictedCommunicateMs"] for r in small]
        alone_ms = [r["isolatedExchangeMs"] for r in small]
        kb = f"{min(r['bytesPerStep'] for r in small) / 1000:.0f}-{max(r['bytesPerStep'] for r in small) / 1000:.0f} KB"
        if link == 100:
            lines.append(f"- at 100 Mbit/s, one beta for every collective: the probe's 4 MiB allreduce ran at {8000.0 / link / beta * 100:.0f} % of the "
                         f"link's rate ({beta:.0f} ns per byte), while the small allgathers of density 0.001 ({kb} per rank) moved "
                         f"{min(got):.1f}-{max(got):.1f} MB/s alone against the link's {link / 8:.1f} MB/s (the token bucket passes 4 ms of link "
                         f"time, 50 KB, at once): the model charges their bytes at the allreduce's rate and predicts {span(pred, 1)} ms "
                         f"against {min(alone_ms):.1f}-{max(alone_ms):.1f} ms alone. The large allgathers of density 0.01 run near the allreduce's rate, and there "
                         "the model holds;")
        else:
            lines.append(f"- at 1 Gbit/s, a fixed cost per message: a whole exchange of density 0.001 ({kb} per rank) fits in the token bucket "
                         f"(4 ms of link time, 500 KB), so its time is not its bytes but the cost of each message crossing two veth pairs, a bridge "
                         f"and two tbf queues in software on the two busy cores, which the probe's alpha (1-float messages on an idle link) does not "
                         f"hold: the model predicts {span(pred, 1)} ms against {min(alone_ms):.1f}-{max(alone_ms):.1f} ms alone;")
    lines.append("- Open MPI's choice of algorithm for the dense allreduce of 23 MB over TCP, which need not move exactly the ring's 2(P-1)/P "
                 "of the data.\n\nA real link has neither the bucket nor the software hops: there the byte term and the probe's alpha are what the "
                 "hardware does, and the comparison to make on a real cluster is `communicateMs - waitMs` against `predictedCommunicateMs` in "
                 "the history.\n")
    return "\n".join(lines)


def hierarchical():
    rs = rows("cluster-hierarchical")
    if rs is None:
        return "### Hierarchical against flat exchange (2 hosts x 2 workers)\n\n_not run yet_\n"
    flat = next(r for r in rs if r["compressor"] == "sidco-e" and r["exchange"] == "flat")
    hier = next(r for r in rs if r["compressor"] == "sidco-e" and r["exchange"] == "hierarchical")
    faster = hier["stepMs"] < flat["stepMs"]
    return ("### Hierarchical against flat exchange (2 hosts x 2 workers)\n\n"
            "Two workers per host average their gradients in-process (dense), and the hosts exchange sparse selections. "
            f"Hierarchical sends {hier['bytesPerStep'] / flat['bytesPerStep']:.2f}x the flat exchange's bytes over the links "
            f"({hier['bytesPerStep'] / 1000:.0f} against {flat['bytesPerStep'] / 1000:.0f} KB per step) and is "
            + (f"faster here ({hier['stepMs']:.0f} against {flat['stepMs']:.0f} ms per step)." if faster else
               f"slower here ({hier['stepMs']:.0f} against {flat['stepMs']:.0f} ms per step): its communicate time holds the dense "
               "in-process reduction of 23 MB and the wait for both workers of a host, all four on two cores.")
            + " It pays where the inter-host link, not the host, is the bottleneck: more workers per host, slower links. "
            f"(Run at {commit_of('cluster-hierarchical')}.)\n\n" + table("cluster-hierarchical") + "\n")


# ---------------------------------------------------------------- microbenchmarks

def compression_section():
    head = """## Compression microbenchmark (latency and estimation quality, as in the paper's figures)

```bash
./build.sh bench compression --json artifacts/bench/compression.json
```
1,000,000 / 10,000,000 / 25,600,000 elements (ResNet-50's size); densities 0.1, 0.01, 0.001; data
`laplace`, `heavy` (Student-t with 3 degrees of freedom) and `real` (gradients captured while training
the 784-2048-2048-10 MLP on Fashion-MNIST). Median of 10 calls after 10 warm-up calls; every compressor
runs with error feedback and gets a fresh gradient of the same distribution each call (the data rotated
by a random offset, untimed). `floor` is one read pass (`TensorPrimitives.SumOfMagnitudes`, one thread);
`torch-topk` is `t.abs().topk(k)` in TorchSharp with all cores. Achieved/target is the mean over calls
26-30 of a fresh compressor; "calls to band" is the first call whose mean over the last 5 lies in
[0.8, 1.25].
"""
    rs = rows("compression")
    if rs is None:
        return head + "\n_not run yet_\n"
    a = {r["compressor"]: r for r in rs if r["elements"] == 25600000 and r["data"] == "laplace" and r["density"] == 0.001}
    real = [r for r in rs if r["data"] == "real" and r["compressor"] in SIDCO]
    summary = ""
    if a:
        floor, torch, dgc = a["floor"]["medianMs"], a["torch-topk"]["medianMs"], a["dgc"]["medianMs"]
        summary = ("At 25,600,000 Laplace entries and density 0.001: "
                   + ", ".join(f"{SIDCO[c]} {a[c]['medianMs']:.2f} ms ({a[c]['medianMs'] / floor:.1f}x the floor of {floor:.2f} ms, "
                               f"{torch / a[c]['medianMs']:.0f}x below torch-topk)" for c in SIDCO)
                   + f"; DGC {dgc:.1f} ms, top-k {a['topk']['medianMs']:.0f} ms, torch-topk {torch:.0f} ms. ")
    if real:
        summary += (f"On real gradients every SIDCo variant's achieved/target lies in [{min(r['achievedOverTarget'] for r in real):.2f}, "
                    f"{max(r['achievedOverTarget'] for r in real):.2f}] at every size and density, reached after "
                    f"{min(r['callsToBand'] for r in real)}-{max(r['callsToBand'] for r in real)} calls.")
    return head + f"\nRun at {commit_of('compression')}. {summary}\n\n" + image("compression") + table("compression") + "\n"


def allreduce_section():
    head = """## Allreduce: dense `MPI_Allreduce` against the sparse allreduce of SIDCo selections

```bash
./build.sh bench allreduce --json artifacts/bench/allreduce.json
```
25,600,000 floats, 2 and 4 ranks under real `mpirun` (shared memory on one machine) and in-process for
comparison; selections from SIDCo-E on Laplace data; each time is the slowest rank's, median of 10 after
warm-up. Bytes per rank are the cost model's (ring allreduce 2(P-1)/P 4n; allgather (P-1)/P K 8);
"predicted" is the model with alpha, beta and the scatter cost probed at start-up.
"""
    rs = rows("allreduce")
    if rs is None:
        return head + "\n_not run yet_\n"
    groups = {}
    for r in rs:
        groups.setdefault((r["transport"], r["ranks"], r["density"]), {})[r["mode"]] = r
    hits, misses = 0, []
    for (transport, ranks, density), g in groups.items():
        faster = "sparse" if g["sparse"]["medianMs"] < g["dense"]["medianMs"] else "dense"
        if g["auto"]["autoChose"] == faster:
            hits += 1
        else:
            misses.append(f"{transport} with {ranks} ranks at {density:g} (chose {g['auto']['autoChose']}; measured dense {g['dense']['medianMs']:.1f} ms, "
                          f"sparse {g['sparse']['medianMs']:.1f} ms)")
    return (head + f"\nRun at {commit_of('allreduce')}. Auto picked the faster exchange in {hits} of {len(groups)} configurations"
            + ("." if not misses else "; it missed " + "; ".join(misses) + ".") + "\n\n" + table("allreduce") + "\n")


def kernels_section():
    head = """## Kernel backends on this machine's CPU

```bash
./build.sh bench kernels --accelerator cpu --json artifacts/bench/kernels-cpu.json
```
The hot loops of a compress call, CPU SIMD backend against ILGPU's CPU accelerator (the stand-in for a GPU
in CI, not a fast path), on Laplace data. The same benchmark on an NVIDIA H100: docs/benchmarks-gpu.md.
"""
    if rows("kernels-cpu") is None:
        return head + "\n_not run yet_\n"
    text = head + f"\nRun at {commit_of('kernels-cpu')}.\n\n" + table("kernels-cpu") + "\n"
    if rows("kernels-convnet", required=False) is not None:
        text += ("\nAt the ConvNet's size, with more calls per median (docs/method.md quotes these rows), run at "
                 f"{commit_of('kernels-convnet')}:\n\n```bash\n./build.sh bench kernels --elements 317066 --accelerator cpu --runs 50 "
                 "--json artifacts/bench/kernels-convnet.json\n```\n\n" + table("kernels-convnet") + "\n")
    return text


# ---------------------------------------------------------------- the sample (issue 6, must-shows 1 and 2)

def sample_section():
    runs = [(label, results(name, required=False)) for label, name in
            (("in-process, 4 workers", "sample/report"), ("`mpirun -np 4`", "sample/report-mpi4"))]
    runs = [(l, r) for l, r in runs if r is not None]
    head = """## The main job: `./build.sh sample`

```bash
./build.sh sample
./build.sh sample --mpi 4 --report artifacts/sample/report-mpi4.json
```
The full Fashion-MNIST (60,000 / 10,000 images), the ConvNet, SIDCo-E at density 0.001, 12 epochs,
4 workers (threads in one process, or 4 MPI ranks). Bytes are per step and worker, over the whole run.
"""
    if not runs:
        return head + "\n_not run yet_\n"
    lines = ["| run | test accuracy | achieved density | KiB sent per step | dense KiB | saved | training wall time |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in runs:
        h = r["history"]
        sent = sum(e["bytesPerStep"] for e in h) / len(h)
        dense = h[-1]["denseBytesPerStep"]
        lines.append(f"| {label} | {pts(r['testAccuracy'])} % | {sum(e['achievedDensity'] for e in h) / len(h):.5f} | {sent / 1024:.1f} | {dense / 1024:,.0f} | "
                     f"{(1 - sent / dense) * 100:.1f} % | {r['wallSeconds']:.0f} s |")
    text = head + "\n" + image("sample/report", "sample") + "\n".join(lines) + "\n"
    short = [(flags, results(f"sample/5ep-{name}", required=False)) for flags, name in
             (("`--compressor none`", "none"), ("`--compressor sidco-e --density 0.001`", "sidco-e"),
              ("`--compressor sidco-e --density 0.001 --density-warmup 200`", "sidco-e-warmup"))]
    if all(r is not None for _, r in short):
        dense = short[0][1]
        def share(r):
            h = r["history"]
            return sum(e["bytesPerStep"] for e in h) / sum(e["denseBytesPerStep"] for e in h)
        text += ("""
Five epochs show the price of density 0.001 (the same program, in-process, same seed; in-process runs are
deterministic):

```bash
dotnet src/Samples/FashionMnist/bin/Release/net10.0/FashionMnist.dll --epochs 5 FLAGS --report artifacts/sample/5ep-NAME.json
```

| flags | test accuracy | vs dense (points) | epoch-1 training accuracy | bytes vs dense | training wall time |
| --- | --- | --- | --- | --- | --- |
""" + "\n".join(f"| {flags} | {pts(r['testAccuracy'])} % | {(r['testAccuracy'] - dense['testAccuracy']) * 100:+.2f} | "
                  f"{pts(r['history'][0]['accuracy'])} % | {share(r) * 100:.2f} % | {r['wallSeconds']:.0f} s |" for flags, r in short)
                 + "\n\nWithout the warm-up the first steps, starved at 0.001, are not fully made up in five epochs; DGC's warm-up "
                 "(the density falls from 0.25 to 0.001 over the first 200 of 2,340 steps) buys part of it back for a few per cent of the dense bytes.\n")
    return text


# ---------------------------------------------------------------- the page

sections = ["""# Benchmarks

Every figure on this page was produced by the command shown above it, on the project's development
machine (2 cores, 24 GiB, no GPU, Debian 12), on the commit each section names; `python3
eng/bench-docs.py` assembles the page from the JSON, tables and plots the benchmarks write under
`artifacts/`. The machine is shared and noisy: compare ratios measured side by side in one run, not
absolute figures across runs. The GPU measurement is on its own page, docs/benchmarks-gpu.md.
""", sample_section(), training_section(), cluster_section(), compression_section(), allreduce_section(), kernels_section()]

if missing and "--allow-missing" not in sys.argv:
    sys.exit("bench-docs: not writing docs/benchmarks.md; missing (run their commands first, or pass --allow-missing):\n  " + "\n  ".join(missing))
open(os.path.join(docs, "benchmarks.md"), "w").write("\n".join(s.rstrip() + "\n" for s in sections))
print("wrote docs/benchmarks.md")
