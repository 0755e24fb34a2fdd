#!/usr/bin/env python3
"""Assembles docs/benchmarks.md from the tables and plots the benchmarks wrote under artifacts/.

Every table is pasted verbatim from a benchmark's own .md output, next to the command that made it,
so the figures in the docs always come from a run of the code."""
import functools
import math, json, os, shutil, subprocess, sys

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

# The commit that last changed what SIDCo selects. A table whose JSON is older than it describes the
# earlier code, and says so until its command is run again.
# Changes to SIDCo's code after which tables were rerun, oldest first: a table whose JSON is older than one
# of them gets a note naming what it has not seen.
SIDCO_CHANGES = [
    ("a85870c", "changed SIDCo's stage controller (the calibration now follows every call in small steps once it is in band, "
                "and a stage that does not move the achieved density is taken back)"),
    ("0e6c948", "made SIDCo's second stage fit the exceedances the first pass collected over the previous call's "
                "first-stage threshold, instead of reading the buffer again"),
    ("23a4bae", "made SIDCo's stage controller calibrate small misses on large buffers instead of adding stages that "
                "each cost a pass, and hold its stage count while a density warm-up moves the target"),
    ("5d3cefd", "made SIDCo-GP refit its gamma shape on one call in four while its second stage fits the peaks "
                "(in between, the measuring pass sums no logarithms; f5092da made that sum cheaper where it is taken)"),
    ("e472403", "made SIDCo's stage controller take back a costly third stage that leaves a gross miss, and calibrate instead"),
    ("2e7bc1c", "made the CPU selection kernel pack the selected entries without a branch per entry (faster at every "
                "density, about 5x at 10 %; the same selections)"),
    ("92bcd7a", "made SIDCo-E's measuring pass skip the peaks' sum of squares, and every SIDCo variant note its candidates "
                "with one compare per two vectors (faster; the same selections)"),
]
# Changes in SIDCO_CHANGES that also changed other compressors' speed (not their selections).
SHARED_KERNEL_CHANGES = {"2e7bc1c": "DGC, RedSync and GaussianK select with the same kernel, so their times changed too"}
SIDCO_CHANGE = SIDCO_CHANGES[0][0]  # the controller change, named in the text below

def commit_time(commit):
    out = subprocess.run(["git", "-C", root, "log", "-1", "--format=%ct", commit], capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None

def measured_before_change(*names):
    """A note for tables whose JSON predates one of SIDCO_CHANGES (empty when every one is newer)."""
    paths = [os.path.join(art, n + ".json") if "/" in n else os.path.join(art, "bench", n + ".json") for n in names]
    present = [(n, os.path.getmtime(p)) for n, p in zip(names, paths) if os.path.exists(p)]
    if not present:
        return ""
    oldest = min(t for _, t in present)
    missed = [(c, text) for c, text in SIDCO_CHANGES if (ct := commit_time(c)) is not None and oldest < ct]
    if not missed:
        return ""
    old = [n for n, t in present if any(t < commit_time(c) for c, _ in missed)]
    return ("> **Not rerun since " + " and ".join(c for c, _ in missed) + "**, which "
            + "; and ".join(text for _, text in missed) + ": the SIDCo figures in "
            + ", ".join(f"`{n}`" for n in old) + " were measured before " + ("that change" if len(missed) == 1 else "those changes") + ". "
            + ("; ".join(SHARED_KERNEL_CHANGES[c] for c, _ in missed if c in SHARED_KERNEL_CHANGES)
               + " (their selections did not)." if any(c in SHARED_KERNEL_CHANGES for c, _ in missed)
               else "The other compressors' code has not changed.") + "\n\n")

SIDCO_NAMES = {"sidco-e": "SIDCo-E", "sidco-gp": "SIDCo-GP", "sidco-p": "SIDCo-P"}

def bench_results(name):
    """The rows a benchmark wrote to artifacts/bench/<name>.json, or None (recorded as missing) when it has not been run."""
    path = os.path.join(art, "bench", name + ".json")
    if not os.path.exists(path):
        missing.append(path)
        return None
    return json.load(open(path))["results"]

def training_verdict():
    """The must-show of issue 6 read off the training table: SIDCo at 0.001 against none (accuracy) and top-k (compress time)."""
    rows = bench_results("training")
    if rows is None:
        return "_not run yet_"
    none = next(r for r in rows if r["compressor"] == "none")
    topk = next(r for r in rows if r["compressor"] == "topk" and r["density"] == 0.001)
    sidco = [r for r in rows if r["compressor"].startswith("sidco") and r["density"] == 0.001]
    names = SIDCO_NAMES
    gaps = [(none["testAccuracy"] - r["testAccuracy"]) * 100 for r in sidco]
    ratios = [topk["compressMs"] / r["compressMs"] for r in sidco]
    within = all(round(g, 2) <= 1.0 for g in gaps)
    fast = all(x >= 10 for x in ratios)
    text = (f"At density 0.001 {'every' if within else 'not every'} SIDCo variant ends within 1.0 point of `none` ("
        + ", ".join(f"{names[r['compressor']]} {g:.2f} behind" for r, g in zip(sidco, gaps)) + "). Compress time is "
        + ", ".join(f"{names[r['compressor']]} {x:.1f}x" for r, x in zip(sidco, ratios))
        + f" below `topk`'s ({topk['compressMs']:.3f} ms)"
        + ("." if fast else f"; {' and '.join(names[r['compressor']] for r, x in zip(sidco, ratios) if x < 10)} fall{'s' if sum(x < 10 for x in ratios) == 1 else ''} short of the 10x asked for."))
    if all("lastEpochCompressMs" in r and "stages" in r for r in sidco + [topk]):
        # The rows also carry the last epoch alone: the warm-up and the first steps are behind it.
        text += (f" In the last epoch alone top-k takes {topk['lastEpochCompressMs']:.3f} ms per step and SIDCo is "
            + ", ".join(f"{names[r['compressor']]} {topk['lastEpochCompressMs'] / r['lastEpochCompressMs']:.1f}x below it at {r['stages']:.1f} stages per call"
                        for r in sidco)
            + " (the mean over workers and steps of the stage count the adaptive controller chose; JSON fields `lastEpochCompressMs` and `stages`).")
    return text

def training_repeat():
    """The rows at 0.001 run again: how far the verdict moves between runs of one command."""
    results = bench_results("training-repeat")
    if results is None:
        return "_not run yet_"
    names = SIDCO_NAMES
    def summary(results):
        rows = {r["compressor"]: r for r in results}
        none, topk = rows["none"], rows["topk"]
        return (f"`none` {none['testAccuracy'] * 100:.2f} %, top-k {(none['testAccuracy'] - topk['testAccuracy']) * 100:.2f} behind, "
            + ", ".join(f"{names[c]} {(none['testAccuracy'] - rows[c]['testAccuracy']) * 100:.2f} behind and {topk['compressMs'] / rows[c]['compressMs']:.1f}x below top-k's compress time"
                        for c in names)
            + f" (top-k {topk['compressMs']:.3f} ms; in the last epoch " + ", ".join(f"{names[c]} {topk['lastEpochCompressMs'] / rows[c]['lastEpochCompressMs']:.1f}x at {rows[c]['stages']:.1f} stages" for c in names) + ")"
            + "; " + verdict(rows))
    def verdict(rows):
        none, topk = rows["none"], rows["topk"]
        short = [f"{names[c]} " + " and ".join(
                    ([f"{(none['testAccuracy'] - rows[c]['testAccuracy']) * 100:.2f} points behind"] if round((none['testAccuracy'] - rows[c]['testAccuracy']) * 100, 2) > 1.0 else [])
                    + ([f"{topk['compressMs'] / rows[c]['compressMs']:.1f}x"] if topk['compressMs'] / rows[c]['compressMs'] < 10 else []))
                 for c in names if round((none['testAccuracy'] - rows[c]['testAccuracy']) * 100, 2) > 1.0 or topk['compressMs'] / rows[c]['compressMs'] < 10]
        return "every variant within 1.0 point and at least 10x below top-k" if not short else "short of the must-show: " + ", ".join(short)
    stale = measured_before_change("training-repeat")
    text = (stale + ("An earlier run of the rows at 0.001, on the code before the change named in the note "
                     if stale else "A second run of the rows at 0.001, on the same code as the table above ")
        + "(`./build.sh bench training --transport mpi --workers 4 --model convnet-wide --epochs 5 --density-warmup 200 --compressors none,topk,sidco-e,sidco-gp,sidco-p --densities 0.001 --json artifacts/bench/training-repeat.json`) "
        + "gave " + summary(results) + ".")
    for i, ordinal in ((2, "third"), (3, "fourth"), (4, "fifth")):
        more = bench_results_optional(f"training-repeat-{i}")
        if more is not None and not measured_before_change(f"training-repeat-{i}"):
            text += (f" A {ordinal} run (the same command with `--json artifacts/bench/training-repeat-{i}.json`) gave "
                     + summary(more) + ".")
    return text

def training_momentum_correction():
    """The rows at 0.001 with DGC's momentum correction, against the table's recipe (plain error feedback)."""
    results = bench_results_optional("training-mc")
    if results is None:
        return ""
    rows = {r["compressor"]: r for r in results}
    none, topk = rows["none"], rows["topk"]
    gaps = ", ".join(f"{n} {(none['testAccuracy'] - rows[c]['testAccuracy']) * 100:.2f}" for c, n in SIDCO_NAMES.items())
    ratios = ", ".join(f"{topk['compressMs'] / rows[c]['compressMs']:.1f}x" for c in SIDCO_NAMES)
    plain = [{r["compressor"]: r for r in runs if r["density"] in (None, 0.001) or r["compressor"] == "none"}
             for runs in (bench_results_optional(n) for n in ("training", "training-repeat", "training-repeat-2", "training-repeat-3")) if runs is not None]
    def gap(rs, c):
        return rs["none"]["testAccuracy"] - rs[c]["testAccuracy"]
    worse = all(gap(rows, c) > gap(p, c) for p in plain for c in SIDCO_NAMES)
    further = ("every variant further behind than in each of the runs without it above" if worse
               else "not further behind than without it in every run above")
    return (measured_before_change("training-mc") + "Momentum correction does not help this recipe. The same rows with DGC's momentum correction (each worker "
            "keeps the momentum, compresses it and clears what it sent; the optimizer then steps without momentum: "
            "`./build.sh bench training --transport mpi --workers 4 --model convnet-wide --epochs 5 --density-warmup 200 "
            "--compressors none,topk,sidco-e,sidco-gp,sidco-p --densities 0.001 --momentum-correction --json artifacts/bench/training-mc.json`) "
            f"gave `none` {none['testAccuracy'] * 100:.2f} %, top-k {(none['testAccuracy'] - topk['testAccuracy']) * 100:.2f} points behind and "
            f"{gaps} points behind, {further}; SIDCo's compress time, which now "
            f"includes updating the momentum, was {ratios} below top-k's ({topk['compressMs']:.3f} ms). One run, so it is not "
            "proof, but it is why the recipe keeps plain error feedback (it helped the wide MLP of the cluster benchmark, below).\n\n")

def training_before_kernel_changes():
    """SIDCo against top-k at 0.001 in the two runs of 84707de's code (archived under artifacts/bench/at-84707de/), for comparison with the table."""
    runs = []
    for name in ("training", "training-repeat"):
        results = bench_results_optional("at-84707de/" + name)
        if results is None:
            return "_archived runs not found_"
        runs.append({r["compressor"]: r for r in results if r["density"] == 0.001})
    return ("; ".join(
        f"top-k {rows['topk']['compressMs']:.3f} ms, " + ", ".join(
            f"{SIDCO_NAMES[c]} {rows[c]['compressMs']:.3f} ms ({rows['topk']['compressMs'] / rows[c]['compressMs']:.1f}x)" for c in SIDCO_NAMES)
        for rows in runs))

def sidco_p_on_dce4d7b():
    """SIDCo-P's distance to none at 0.001 in the three runs on dce4d7b and the two on 84707de (archived JSON)."""
    def gaps(folder, names):
        out = []
        for name in names:
            results = bench_results_optional(f"{folder}/{name}")
            if results is None:
                return None
            rows = {r["compressor"]: r for r in results if r["density"] == 0.001 or r["compressor"] == "none"}
            out.append(f"{(rows['none']['testAccuracy'] - rows['sidco-p']['testAccuracy']) * 100:.2f}")
        return out
    new, old = gaps("at-dce4d7b", ("training", "training-repeat", "training-repeat-2")), gaps("at-84707de", ("training", "training-repeat"))
    if new is None or old is None:
        return "_archived runs not found_"
    return f"{', '.join(new[:-1])} and {new[-1]} points behind `none`, against {' and '.join(old)} on 84707de"

def training_row(compressor, density):
    """A row of the training table, or None (recorded as missing) when the table has not been run."""
    rows = bench_results("training")
    return None if rows is None else next(r for r in rows if r["compressor"] == compressor and r["density"] == density)

def training_stage_summary():
    """The SIDCo rows at 0.001: stage counts in the last epoch and SIDCo-GP's compress time against top-k's."""
    rows = bench_results("training")
    if rows is None:
        return "_not run yet_"
    at = {r["compressor"]: r for r in rows if r["density"] == 0.001}
    stages = sorted({f"{at[c]['stages']:.1f}" for c in SIDCO_NAMES})
    gp, topk = at["sidco-gp"], at["topk"]
    return (f"the variants end at {' to '.join(stages)} stages per call, and SIDCo-GP is {topk['compressMs'] / gp['compressMs']:.1f}x below top-k "
            f"over the run and {topk['lastEpochCompressMs'] / gp['lastEpochCompressMs']:.1f}x in the last epoch "
            f"({gp['lastEpochCompressMs']:.3f} ms per step against SIDCo-E's {at['sidco-e']['lastEpochCompressMs']:.3f} ms).")

def convnet_alone():
    """SIDCo against top-k per call on the captured ConvNet gradients, warm and with the cache evicted, from the two microbenchmark JSONs."""
    warm, cold = bench_results("compression-convnet"), bench_results("compression-convnet-cold")
    if warm is None or cold is None:
        return "_not run yet_", "_not run yet_"
    def span(rows):
        at = {r["compressor"]: r["medianMs"] for r in rows if r["data"] == "real-convnet"}
        sidco = [at[c] for c in SIDCO_NAMES]
        return at["topk"], min(sidco), max(sidco)
    tw, lo, hi = span(warm)
    tc, clo, chi = span(cold)
    topk_alone = sorted(r["medianMs"] for r in warm + cold if r["compressor"] == "topk")
    return (f"are {tw / hi:.0f}-{tw / lo:.0f}x below top-k per call ({lo:.2f}-{hi:.2f} ms against {tw:.2f} ms), and still "
            f"{tc / chi:.0f}-{tc / clo:.0f}x when every call first reads 64 MiB of other memory", f"{topk_alone[0]:.1f}-{topk_alone[-1]:.1f} ms")

def compression_summary():
    """The paragraph under the compression command: the 25.6M Laplace rows at 0.001 from the full run and from a
    second run of those rows alone, and the real-gradient band, all read from the JSON."""
    rows = bench_results("compression")
    if rows is None:
        return "_not run yet_"
    def speeds(results):
        a = {r["compressor"]: r for r in results if r["elements"] == 25600000 and r["data"] == "laplace" and r["density"] == 0.001}
        floor, torch, dgc = a["floor"]["medianMs"], a["torch-topk"]["medianMs"], a["dgc"]["medianMs"]
        ms = [a[c]["medianMs"] for c in SIDCO_NAMES]
        names = list(SIDCO_NAMES.values())
        return (f"{names[0]} {ms[0]:.2f} ms = {ms[0] / floor:.1f}x the floor ({floor:.2f} ms), "
                + ", ".join(f"{n} {m:.2f} ms = {m / floor:.1f}x" for n, m in zip(names[1:], ms[1:]))
                + f"; {', '.join(f'{torch / m:.0f}x' for m in ms)} faster than torch-topk ({torch:,.0f} ms) and "
                + ("all faster than" if max(ms) < dgc else "not all faster than") + f" DGC ({dgc:.1f} ms)")
    real = [r for r in rows if r["data"] == "real" and r["compressor"] in SIDCO_NAMES]
    text = (f"In this run, at 25,600,000 Laplace entries and density 0.001: {speeds(rows)}. On real gradients every "
            f"SIDCo variant's achieved/target lies in [{min(r['achievedOverTarget'] for r in real):.2f}, "
            f"{max(r['achievedOverTarget'] for r in real):.2f}] at every size and density, reached after "
            f"{min(r['callsToBand'] for r in real)}-{max(r['callsToBand'] for r in real)} calls.")
    spot = bench_results_optional("compression-laplace-25m")
    if spot is not None:
        text += (" Medians of 10 calls at this size move between runs on this shared machine; the same rows run alone "
                 "right after (`./build.sh bench compression --elements 25600000 --densities 0.001 --data laplace "
                 f"--json artifacts/bench/compression-laplace-25m.json`) gave {speeds(spot)}.")
    return text

def topk_two_runs():
    """Top-k's compress time at 0.001 in the table and in its repeat."""
    a, b = training_row("topk", 0.001), bench_results("training-repeat")
    if a is None or b is None:
        return "_not run yet_"
    rep = next(r for r in b if r["compressor"] == "topk")
    return f"{a['compressMs']:.2f} and {rep['compressMs']:.2f} ms per step at 0.001 in the table and in its repeat below"

def training_topk_ms():
    row = training_row("topk", 0.001)
    return f"{row['compressMs']:.1f} ms" if row else "_not run yet_"

def warmup_runs():
    """Two runs of the one-epoch warm-up command: sparse fraction, achieved density and accuracy per compressor."""
    results = [bench_results(n) for n in ("training-warmup", "training-warmup-2")]
    if None in results:
        return "_not run yet_"
    runs = [{r["compressor"]: r for r in rows} for rows in results]
    names = {"topk": "top-k", "dgc": "DGC", "sidco-e": "SIDCo-E"}
    parts = []
    for c in ("topk", "dgc", "sidco-e"):
        a, b = runs[0][c], runs[1][c]
        parts.append(f"{names[c]} went sparse on {a['sparseFraction'] * 100:.1f} % and {b['sparseFraction'] * 100:.1f} % of the steps "
                     f"(achieved density {a['achievedDensity']:.4f} and {b['achievedDensity']:.4f}) and reached {a['testAccuracy'] * 100:.2f} % and {b['testAccuracy'] * 100:.2f} %")
    return "; ".join(parts) + "."

def dgc_sidco_pairs(runs):
    """Paired statistics of DGC against SIDCo-E (100 Mbit/s, density 0.001) over runs [(tag, rows.jsonl)], or None when one is missing."""
    lines, pairs, firsts = [], [], []
    for tag, path in runs:
        if not os.path.exists(path):
            missing.append(path)
            return None
        pair, order = {}, []
        for l in open(path):
            r = json.loads(l)
            if r["linkMbps"] == 100 and r["density"] == 0.001 and r["compressor"] in ("dgc", "sidco-e"):
                pair[r["compressor"]] = r
                order.append(r["compressor"])
        if "dgc" not in pair or "sidco-e" not in pair:  # a run that has not finished (or failed)
            missing.append(path)
            return None
        d, e = pair["dgc"], pair["sidco-e"]
        pairs.append((d, e))
        first = "DGC" if order[0] == "dgc" else "SIDCo-E"
        firsts.append(first)
        lines.append(f"| {tag} | {first} | {d['stepMs']:.1f} | {e['stepMs']:.1f} | {d['computeMs']:.1f} / {e['computeMs']:.1f} | "
                     f"{d['compressMs']:.1f} / {e['compressMs']:.1f} | {d['communicateMs']:.1f} / {e['communicateMs']:.1f} | "
                     f"{d['stepMs'] - d['computeMs']:.1f} / {e['stepMs'] - e['computeMs']:.1f} | {d['stepMs'] / e['stepMs']:.2f}x |")
    n = len(pairs)
    mean = lambda xs: sum(xs) / len(xs)
    step_diff = [d["stepMs"] - e["stepMs"] for d, e in pairs]
    rest_diff = [(d["stepMs"] - d["computeMs"]) - (e["stepMs"] - e["computeMs"]) for d, e in pairs]
    comp_diff = [d["compressMs"] - e["compressMs"] for d, e in pairs]
    # The later run of a pair tends to be faster; averaging the two orders' means cancels that.
    def by_order(diffs):
        """Mean difference over the pairs run DGC first, over those run SIDCo-E first, and their average."""
        a = [x for x, f in zip(diffs, firsts) if f == "DGC"]
        b = [x for x, f in zip(diffs, firsts) if f != "DGC"]
        if not a or not b:
            return float("nan"), float("nan"), float("nan"), len(a), len(b)
        return mean(a), mean(b), (mean(a) + mean(b)) / 2, len(a), len(b)
    st = {"n": n, "step": mean_interval(step_diff), "rest": mean_interval(rest_diff), "compress_wins": sum(1 for x in comp_diff if x > 0),
          "compress_gain": mean(comp_diff), "wins": sum(1 for x in step_diff if x > 0),
          "bytes_ratio": mean([e["bytesPerStep"] / d["bytesPerStep"] for d, e in pairs]), "order": by_order(step_diff),
          "rest_balanced": by_order(rest_diff)[2], "dgc_ms": mean([d["stepMs"] for d, _ in pairs]), "sidco_ms": mean([e["stepMs"] for _, e in pairs]),
          "computes": [r["computeMs"] for pair in pairs for r in pair], "pairs": pairs}
    st["order_effect"] = (st["order"][0] - st["order"][1]) / 2
    lines.append(f"| mean | | {st['dgc_ms']:.1f} | {st['sidco_ms']:.1f} | {mean([d['computeMs'] for d, _ in pairs]):.1f} / {mean([e['computeMs'] for _, e in pairs]):.1f} | "
                 f"{mean([d['compressMs'] for d, _ in pairs]):.1f} / {mean([e['compressMs'] for _, e in pairs]):.1f} | "
                 f"{mean([d['communicateMs'] for d, _ in pairs]):.1f} / {mean([e['communicateMs'] for _, e in pairs]):.1f} | "
                 f"{mean([d['stepMs'] - d['computeMs'] for d, _ in pairs]):.1f} / {mean([e['stepMs'] - e['computeMs'] for _, e in pairs]):.1f} | {st['dgc_ms'] / st['sidco_ms']:.2f}x |")
    st["table"] = ("| run | first | DGC step ms | SIDCo-E step ms | compute DGC / SIDCo-E | compress | communicate | step - compute | DGC / SIDCo-E |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines))
    return st

def pair_summary(st):
    """The paired statistics in words: who is faster per step, with the interval, the order effect and step - compute."""
    n, (sm, sh), (rm, rh) = st["n"], st["step"], st["rest"]
    dgc_first, sidco_first, balanced, n_dgc_first, n_sidco_first = st["order"]
    return (f"SIDCo-E compresses faster in {st['compress_wins']} of {n} pairs (by {st['compress_gain']:.1f} ms per step on the mean) and sends "
        f"{st['bytes_ratio']:.2f}x DGC's bytes. Per step it is {st['dgc_ms'] / st['sidco_ms']:.2f}x DGC on the mean and wins {st['wins']} of {n} pairs; the mean step difference "
        f"(DGC minus SIDCo-E) is {sm:+.1f} ms, 95 % interval {sm - sh:+.1f} to {sm + sh:+.1f} ms. The {'later' if st['order_effect'] > 0 else 'earlier'} run of a pair is faster by about "
        f"{abs(st['order_effect']):.1f} ms (DGC first: difference {dgc_first:+.1f} ms over {n_dgc_first} pairs; SIDCo-E first: {sidco_first:+.1f} ms over "
        f"{n_sidco_first}), so the estimate that cancels the order, the mean of the two orders, is {balanced:+.1f} ms per step. Leaving out compute "
        f"(\"step - compute\": compression, exchange and the wait for the slowest rank) the difference is {rm:+.1f} ms, interval {rm - rh:+.1f} to "
        f"{rm + rh:+.1f} ms ({st['rest_balanced']:+.1f} ms as the mean of the two orders).")

REPEATS = 6  # cluster-repeat-1 .. cluster-repeat-REPEATS

@functools.cache  # read once; the cluster notes and the repeats section both quote it
def repeated_pairs():
    """The SIDCo-E/DGC pairs at 100 Mbit/s and 0.001: the sweep's and the repeats'."""
    return dgc_sidco_pairs([("sweep", os.path.join(art, "bench", "cluster-sparse.json.rows.jsonl"))] + [
        (f"repeat {i}", os.path.join(art, "bench", f"cluster-repeat-{i}.json.rows.jsonl")) for i in range(1, REPEATS + 1)])

def dgc_repeats():
    """SIDCo-E against DGC at 100 Mbit/s, density 0.001: the sweep's pair and the repeated pairs."""
    st = repeated_pairs()
    if st is None:
        return "_not run yet_"
    per_rank = lambda r: r["bytesPerStep"] / ((r["hosts"] - 1) / r["hosts"] * 8) / r["hosts"] / (r["parameters"] * r["density"])
    mean = lambda xs: sum(xs) / len(xs)
    return ("### SIDCo-E against DGC at 100 Mbit/s, density 0.001, repeated\n\n```bash\n"
        f"for i in {' '.join(str(i) for i in range(1, REPEATS + 1))}; do order=$([ $((i % 2)) -eq 0 ] && echo dgc,sidco-e || echo sidco-e,dgc); ./build.sh bench cluster --hosts 4 --link 100mbit --model wide-mlp --compressors $order --densities 0.001 --steps 200 --momentum-correction --json artifacts/bench/cluster-repeat-$i.json; done\n```\n"
        + measured_before_change(*[f"cluster-repeat-{i}" for i in range(1, REPEATS + 1)])
        + f"The two are close, so the pair was repeated: {st['n']} pairs in all (the sweep's runs DGC first, then odd repeats run SIDCo-E "
        "first and even ones DGC first); times over the last 100 of 200 steps. " + pair_summary(st) + " "
        + f"Per call and rank SIDCo-E selects {mean([per_rank(e) for _, e in st['pairs']]):.2f} k on the mean and DGC "
        f"{mean([per_rank(d) for d, _ in st['pairs']]):.2f} k (from the bytes: the cost model counts (P-1)/P x 8 B per gathered entry). "
        + verdict("the whole step", st["step"]) + " "
        + verdict("\"Step - compute\", which holds everything the compressor changes (its compression, the exchange of its selections and the wait for the slowest rank),", st["rest"])
        + "\n\n" + st["table"])

INTERLEAVED = 6  # cluster-interleaved-1 .. cluster-interleaved-INTERLEAVED

def t975(df):
    """Two-sided 95 % quantile of Student's t with df degrees of freedom."""
    table = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 11: 2.20, 12: 2.18, 13: 2.16,
             14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11, 18: 2.10, 19: 2.09, 20: 2.09, 25: 2.06, 30: 2.04, 40: 2.02, 60: 2.00}
    return table[max(k for k in table if k <= df)]

def mean_interval(xs):
    """Mean of xs and the half-width of its 95 % interval (Student's t)."""
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
    return m, t975(len(xs) - 1) * sd / len(xs) ** 0.5

@functools.cache
def interleaved_pairs():
    """DGC and SIDCo-E trained side by side in one job (turns of BLOCK steps): per-turn differences over all jobs, or None when a job is missing."""
    jobs = []
    for i in range(1, INTERLEAVED + 1):
        rows = bench_results_optional(f"cluster-interleaved-{i}")
        if rows is None:
            missing.append(f"cluster-interleaved-{i}")
            return None
        by = {r["compressor"]: r for r in rows}
        jobs.append((i, by["dgc"], by["sidco-e"]))
    step, rest, compute, firsts, lines, job_means = [], [], [], [], [], []
    for i, d, e in jobs:
        n = len(d["blockStepMs"])
        ds = [d["blockStepMs"][k] - e["blockStepMs"][k] for k in range(n)]
        job_means.append(sum(ds) / n)
        dc = [d["blockComputeMs"][k] - e["blockComputeMs"][k] for k in range(n)]
        step += ds; compute += dc; rest += [a - b for a, b in zip(ds, dc)]
        firsts += ["DGC" if f else "SIDCo-E" for f in d["blockFirst"]]
        lines.append(f"| job {i} | {'DGC' if d['blockFirst'][0] else 'SIDCo-E'} | {n} | {d['stepMs']:.1f} | {e['stepMs']:.1f} | {d['computeMs']:.1f} / {e['computeMs']:.1f} | "
                     f"{d['compressMs']:.1f} / {e['compressMs']:.1f} | {d['communicateMs']:.1f} / {e['communicateMs']:.1f} | "
                     f"{d['stepMs'] - d['computeMs']:.1f} / {e['stepMs'] - e['computeMs']:.1f} | {sum(1 for x in ds if x > 0)} of {n} | {d['stepMs'] / e['stepMs']:.2f}x |")
    mean = lambda xs: sum(xs) / len(xs)
    ordered = sorted(step)
    median = (ordered[(len(step) - 1) // 2] + ordered[len(step) // 2]) / 2
    # Wilcoxon signed-rank (normal approximation): does not lean on the spread, so one slow turn cannot carry the result.
    by_size = sorted(step, key=abs)
    w_plus = sum(rank + 1 for rank, x in enumerate(by_size) if x > 0)
    n = len(step)
    z = (w_plus - n * (n + 1) / 4) / (n * (n + 1) * (2 * n + 1) / 24) ** 0.5
    a = [x for x, f in zip(step, firsts) if f == "DGC"]
    b = [x for x, f in zip(step, firsts) if f != "DGC"]
    return {"jobs": jobs, "n": len(step), "step": mean_interval(step), "per_job": mean_interval(job_means), "job_means": job_means, "rest": mean_interval(rest), "compute": mean_interval(compute),
            "wins": sum(1 for x in step if x > 0), "median": median, "wilcoxon": (z, math.erfc(abs(z) / 2 ** 0.5)), "order": (mean(a), mean(b), (mean(a) + mean(b)) / 2, len(a), len(b)),
            "block": jobs[0][1]["interleaveBlock"], "steps": jobs[0][1]["steps"], "timed": jobs[0][1]["timedSteps"],
            "dgc_ms": mean([d["stepMs"] for _, d, _ in jobs]), "sidco_ms": mean([e["stepMs"] for _, _, e in jobs]),
            "table": ("| job | first turn | timed turns | DGC step ms | SIDCo-E step ms | compute DGC / SIDCo-E | compress | communicate | step - compute | turns SIDCo-E faster | DGC / SIDCo-E |\n"
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines))}

def dgc_interleaved():
    """SIDCo-E against DGC trained side by side in one job: paired per turn."""
    st = interleaved_pairs()
    if st is None:
        return "_not run yet_"
    (sm, sh), (rm, rh), (cm, ch) = st["step"], st["rest"], st["compute"]
    dgc_first, sidco_first, balanced, n_a, n_b = st["order"]
    return ("### SIDCo-E against DGC side by side in one job (100 Mbit/s, density 0.001)\n\n```bash\n"
        f"for i in {' '.join(str(i) for i in range(1, INTERLEAVED + 1))}; do order=$([ $((i % 2)) -eq 1 ] && echo dgc,sidco-e || echo sidco-e,dgc); ./build.sh bench cluster --hosts 4 --link 100mbit --model wide-mlp --compressors $order --densities 0.001 --steps {st['steps']} --interleave {st['block']} --momentum-correction --json artifacts/bench/cluster-interleaved-$i.json; done\n```\n"
        + measured_before_change(*[f"cluster-interleaved-{i}" for i in range(1, INTERLEAVED + 1)])
        + "Separate runs differ in compute by more than the compressors differ (above), so here the two train side by side in one job: "
        f"each is a whole training of its own (own model, optimizer, residuals and velocity; {st['steps']} steps, timed over the last {st['timed']}), "
        f"and they take turns every {st['block']} steps, each turn a `Fit` that resumes from that compressor's checkpoint (`StopAfterSteps`), "
        "the order flipping from turn to turn. A turn of one and the next turn of the other run seconds apart on the same placement of ranks on cores, "
        f"so each pair of turns is one paired measurement: {st['n']} pairs from {len(st['jobs'])} jobs. "
        f"Per step SIDCo-E is {st['dgc_ms'] / st['sidco_ms']:.2f}x DGC on the mean and faster in {st['wins']} of {st['n']} turns; "
        f"the mean step difference (DGC minus SIDCo-E) is {sm:+.1f} ms, 95 % interval {sm - sh:+.1f} to {sm + sh:+.1f} ms; the median difference is "
        f"{st['median']:+.1f} ms, and a Wilcoxon signed-rank test, which one slow turn cannot carry, gives z = {st['wilcoxon'][0]:.2f} (two-sided p = {st['wilcoxon'][1]:.3f}). "
        f"Compute, the same work in both, now differs by {cm:+.1f} ms (interval {cm - ch:+.1f} to {cm + ch:+.1f}); \"step - compute\" differs by {rm:+.1f} ms "
        f"(interval {rm - rh:+.1f} to {rm + rh:+.1f}). By which went first in a turn: {dgc_first:+.1f} ms over {n_a} turns DGC first, "
        f"{sidco_first:+.1f} ms over {n_b} SIDCo-E first, {balanced:+.1f} ms as their mean. "
        + verdict("the whole step", st["step"]).replace(" (compute of the same work varies from run to run on four ranks sharing two cores)", "")
        + " That interval treats turns as independent. Turns of one job share its placement and the machine's slow drifts, which the pairing removes "
        "from the differences but perhaps not from their spread; taking each job's mean difference as one measurement instead "
        f"({', '.join(f'{m:+.1f}' for m in st['job_means'])} ms) gives {st['per_job'][0]:+.1f} ms, 95 % interval "
        f"{st['per_job'][0] - st['per_job'][1]:+.1f} to {st['per_job'][0] + st['per_job'][1]:+.1f} ms over {len(st['jobs'])} jobs: "
        + ("it too excludes zero." if st['per_job'][0] - st['per_job'][1] > 0 else "with so few units it includes zero.")
        + "\n\n" + st["table"])

def allreduce_summary():
    """Where Auto picked the faster exchange and where the model's two predictions and the measured times disagree."""
    rows = bench_results("allreduce")
    if rows is None:
        return ""
    groups = {}
    for r in rows:
        groups.setdefault((r["transport"], r["ranks"], r["density"]), {})[r["mode"]] = r
    hits, misses = 0, []
    for (transport, ranks, density), g in groups.items():
        d, sp, auto = g["dense"], g["sparse"], g["auto"]
        chose = auto["autoChose"]
        faster = "sparse" if sp["medianMs"] < d["medianMs"] else "dense"
        if chose == faster:
            hits += 1
        else:
            misses.append(f"{transport} with {ranks} ranks at density {density:g} (chose {chose}: predicted {d['predictedMs']:.1f} ms dense against "
                          f"{sp['predictedMs']:.1f} ms sparse, measured {d['medianMs']:.1f} against {sp['medianMs']:.1f} ms)")
    share = [g["sparse"]["bytesPerRank"] / g["dense"]["bytesPerRank"] for (_, _, density), g in groups.items() if density == 0.1]
    return (f"Auto picked the faster exchange in {hits} of {len(groups)} configurations"
            + (": every one." if not misses else "; it missed " + "; ".join(misses) + ", a near tie in the model.")
            + " Sparse pays most at densities 0.01 and 0.001; at 0.1 the gathered selections are "
            f"{min(share):.2f}-{max(share):.2f} of the dense bytes, and scatter-adding millions of received entries costs much of what they save.\n")

def verdict(what, interval):
    """Who wins a paired difference (DGC minus SIDCo-E) with its 95 % interval, in words."""
    m, h = interval
    if m - h > 0:
        return f"For {what} the interval excludes zero: SIDCo-E is faster."
    if m + h < 0:
        return f"For {what} the interval excludes zero: DGC is faster."
    return f"For {what} the interval includes zero: no measurable difference (compute of the same work varies from run to run on four ranks sharing two cores)."

sections = []
def cluster_accuracy():
    """Accuracy after the same steps: the five-epoch run (and its repeat, when made) of none and SIDCo-E at 0.001."""
    runs = [r for r in (bench_results("cluster-accuracy-5ep"), bench_results_optional("cluster-accuracy-5ep-2")) if r]
    if not runs:
        return "_not run yet_"
    gaps = []
    for rows in runs:
        none = next(r for r in rows if r["compressor"] == "none")
        sidco = next(r for r in rows if r["compressor"] == "sidco-e")
        gaps.append((none["testAccuracy"] * 100, sidco["testAccuracy"] * 100))
    text = ("Accuracy after the same steps: with this recipe and a 100-step density warm-up, after five epochs "
            f"(2,340 steps, 10 Gbit/s links, below) SIDCo-E at 0.001 reaches {gaps[0][1]:.2f} % against {gaps[0][0]:.2f} % for `none`, "
            f"{gaps[0][0] - gaps[0][1]:.2f} points behind")
    if len(gaps) > 1:
        text += (f"; a second run of the same command (`--json artifacts/bench/cluster-accuracy-5ep-2.json`) gave {gaps[1][1]:.2f} % against "
                 f"{gaps[1][0]:.2f} %, {gaps[1][0] - gaps[1][1]:.2f} behind")
    archived = bench_results_optional("at-e472403/cluster-accuracy-5ep")
    e472403 = ""
    if archived is not None:
        rows = {r["compressor"]: r for r in archived}
        e472403 = f", {(rows['none']['testAccuracy'] - rows['sidco-e']['testAccuracy']) * 100:.2f} behind (e472403)"
    return text + (". Runs of the same command on earlier code (archived JSON) put SIDCo-E 1.04 and 0.99 points behind "
                   f"(before 0e6c948), 1.00 behind (5d3cefd){e472403}: the gap sits at the 1-point line and moves by about a tenth "
                   "of a point between runs.")

def bench_results_optional(name):
    """Like bench_results, for a run that is not required (absent means not made, not missing)."""
    path = os.path.join(art, "bench", name + ".json")
    return json.load(open(path))["results"] if os.path.exists(path) else None

def hierarchical_summary():
    """Flat against hierarchical exchange for SIDCo-E at 2 hosts x 2 workers, in words, from the rows."""
    rows = bench_results("cluster-hierarchical")
    if rows is None:
        return "_not run yet_"
    flat = next(r for r in rows if r["compressor"] == "sidco-e" and r["exchange"] == "flat")
    hier = next(r for r in rows if r["compressor"] == "sidco-e" and r["exchange"] == "hierarchical")
    faster = hier["stepMs"] < flat["stepMs"]
    return ("Two workers per host reduce in-process (dense) and the hosts exchange sparse. Hierarchical sends "
            f"{hier['bytesPerStep'] / flat['bytesPerStep']:.2f}x the flat exchange's bytes ({hier['bytesPerStep'] / 1000:.0f} against {flat['bytesPerStep'] / 1000:.0f} KB per step) "
            + (f"and is faster here ({hier['stepMs']:.0f} against {flat['stepMs']:.0f} ms per step). " if faster else
               f"but here it is slower ({hier['stepMs']:.0f} against {flat['stepMs']:.0f} ms per step): its communicate time holds the dense in-process "
               "reduction of 23 MB and the wait for both workers of a host, with all four workers on two cores. ")
            + "It pays where the inter-host link, not the host, is the bottleneck: more workers per host, slower links.")

def cluster_rows():
    """The table's rows keyed by (compressor, density, link in Mbit/s); `none` under density None."""
    rows = bench_results("cluster")
    if rows is None:
        return None
    return {(r["compressor"], None if r["compressor"] == "none" else r["density"], r["linkMbps"]): r for r in rows}

def cluster_speedups(at):
    """'What the speed-ups say', every figure read from the table's rows."""
    mean = lambda xs: sum(xs) / len(xs)
    sparse = ["topk", "dgc"] + list(SIDCO_NAMES)
    fast = ["dgc"] + list(SIDCO_NAMES)
    def r(c, d, link):
        return at[(c, None if c == "none" else d, link)]
    def x(a, b):
        return b["stepMs"] / a["stepMs"]  # how many times faster a is than b
    def rest(row):
        return row["stepMs"] - row["computeMs"]
    def span(xs, fmt="{:.1f}"):
        return fmt.format(min(xs)) + "-" + fmt.format(max(xs)) + "x"
    def than(ratio, name, digits):
        return f"**{ratio:.{digits}f}x faster than {name}**" if ratio >= 1 else f"**slower than {name}**, at {1 / ratio:.2f}x its time"
    n100, n1g = r("none", None, 100), r("none", None, 1000)
    e, d, t = r("sidco-e", 0.001, 100), r("dgc", 0.001, 100), r("topk", 0.001, 100)
    gp, pp = r("sidco-gp", 0.001, 100), r("sidco-p", 0.001, 100)
    e1, d1, t1 = r("sidco-e", 0.001, 1000), r("dgc", 0.001, 1000), r("topk", 0.001, 1000)
    gp1, pp1 = r("sidco-gp", 0.001, 1000), r("sidco-p", 0.001, 1000)
    vs_none_100 = [x(r(c, dd, 100), n100) for c in sparse for dd in (0.01, 0.001)]
    fast_1g = [x(r(c, dd, 1000), n1g) for c in fast for dd in (0.01, 0.001)]
    topk_1g = [x(r("topk", dd, 1000), n1g) for dd in (0.01, 0.001)]
    over_topk_1g = [x(r(c, dd, 1000), r("topk", dd, 1000)) for c in fast for dd in (0.01, 0.001)]
    st = repeated_pairs()
    repeats_stale = measured_before_change(*[f"cluster-repeat-{i}" for i in range(1, REPEATS + 1)]) != ""
    il = interleaved_pairs()
    side_by_side = "" if il is None else (f"; {il['dgc_ms'] / il['sidco_ms']:.2f}x side by side in one job, where the step difference is "
                                          f"{il['step'][0]:+.1f} ms with a 95 % interval of {il['step'][0] - il['step'][1]:+.1f} to {il['step'][0] + il['step'][1]:+.1f} ms")
    pairs = ("" if st is None else f" ({st['dgc_ms'] / st['sidco_ms']:.2f}x on the mean of the repeated pairs below"
             + (", which predate the last SIDCo changes" if repeats_stale else "") + side_by_side + ")")
    return (f"""What the speed-ups say. At 100 Mbit/s the dense allreduce of 23 MB takes {n100['stepMs'] / 1000:.1f} s per step and every
sparse method is {span(vs_none_100, "{:.0f}")} faster. At density 0.001 SIDCo-E takes {e['stepMs']:.0f} ms per step: {than(x(e, n100), "`none`", 0)},
{than(x(e, t), "top-k", 1)} (whose exact selection costs {t['compressMs']:.0f} ms per step on 5.8M entries) and
{than(x(e, d), "DGC", 2)} ({d['stepMs']:.0f} ms per step). Its compression takes {e['compressMs'] / d['compressMs']:.2f} of DGC's time ({e['compressMs']:.1f} against {d['compressMs']:.1f} ms
per step, momentum correction included for both), and it sends {"fewer" if e['bytesPerStep'] < d['bytesPerStep'] else "more"} bytes ({e['bytesPerStep'] / 1000:.0f} against {d['bytesPerStep'] / 1000:.0f} KB per
step). The compute of the two runs, the same work, differs by {abs(e['computeMs'] - d['computeMs']):.0f} ms here ({e['computeMs']:.0f} against {d['computeMs']:.0f} ms).
Leaving compute out ("step - compute": compression, exchange and the wait for the slowest rank),
SIDCo-E needs {rest(e):.0f} ms against DGC's {rest(d):.0f}. The repeated pairs and the side-by-side runs below measure the difference with an interval. SIDCo-GP ({gp['stepMs']:.0f} ms)
and SIDCo-P ({pp['stepMs']:.0f} ms) are {x(gp, d):.2f}x and {x(pp, d):.2f}x DGC. At 1 Gbit/s the dense exchange takes {n1g['stepMs'] / 1000:.2f} s, and compute
is the larger part of a sparse step: DGC and the SIDCo variants are {span(fast_1g)} faster than `none`
(top-k {span(topk_1g)}) and {span(over_topk_1g)} faster than top-k. At 0.001 SIDCo-E is {x(e1, n1g):.1f}x `none`, {x(e1, t1):.1f}x top-k and
{x(e1, d1):.2f}x DGC ({e1['stepMs']:.0f} against {d1['stepMs']:.0f} ms; "step - compute" {rest(e1):.1f} against {rest(d1):.1f} ms); SIDCo-GP and SIDCo-P are {x(gp1, d1):.2f}x
and {x(pp1, d1):.2f}x DGC. Against the paper's "up to 41.7x / 7.6x / 1.9x": the ratio to `none` is {"larger" if x(e, n100) > 41.7 else "smaller"} here (a
small model's compute against a 23 MB exchange on 100 Mbit/s), the ratio to top-k smaller (our top-k
is a quickselect, about {mean([t['compressMs'], t1['compressMs']]):.0f} ms on 5.8M entries, where the paper's is the framework's sort-based top-k
on a GPU), and the ratio to DGC is {x(e, d):.2f}x in this run at 100 Mbit/s{pairs}. On four ranks sharing two cores, compute
varies from run to run by more than the compressors' differences, so single runs decide little at 1 Gbit/s.
""")

def cluster_cost_model(at):
    """The cost-model paragraph: which exchanges the model predicts within 25 % (against the exchange alone) and the figures behind each reason it misses."""
    name = {"none": "the dense allreduce", "topk": "top-k's exchange", "dgc": "DGC's", **{c: f"{n}'s" for c, n in SIDCO_NAMES.items()}}
    def where(key):
        c, d, link = key
        return f"{name[c]}{'' if d is None else f' at {d:g}'} on {'1 Gbit/s' if link == 1000 else '100 Mbit/s'}"
    ratio = {k: r["predictedCommunicateMs"] / r["isolatedExchangeMs"] for k, r in at.items()}
    within = [k for k, v in ratio.items() if 0.75 <= v <= 1.25]
    near = [k for k, v in ratio.items() if k not in within and 0.7 <= v <= 1.35]
    listing = lambda keys: ", ".join(f"{where(k)} ({ratio[k]:.2f})" for k in sorted(keys, key=lambda k: (k[2], k[0] != "none", k[0], -(k[1] or 1))))
    small100 = [at[k] for k in at if k[0] != "none" and k[1] == 0.001 and k[2] == 100]
    small1g = [k for k in at if k[0] != "none" and k[1] == 0.001 and k[2] == 1000]
    dense100 = at[("none", None, 100)]
    alpha1g = at[("none", None, 1000)]["alphaUs"]
    return (f"""Cost model (predicted vs measured). "pred./alone" compares the model with the exchange alone. It is
within 25 % for {listing(within) or "none of the exchanges"}{"; just outside are " + listing(near) if near else ""}. It is far off for the
other exchanges, for reasons the model leaves out:
- the token bucket: `tc`'s tbf lets a full bucket (1 MB at 100 Mbit/s, 4 MB at 1 Gbit/s) through at
  line rate after an idle spell, and every exchange follows at least 50 ms of compute, so a sparse
  exchange of {min(r['bytesPerStep'] for r in small100) / 1000:.0f}-{max(r['bytesPerStep'] for r in small100) / 1000:.0f} KB at density 0.001 on 100 Mbit/s passes in {min(r['isolatedExchangeMs'] for r in small100):.0f}-{max(r['isolatedExchangeMs'] for r in small100):.0f} ms, while the model charges its bytes at the
  link rate (beta from a 4 MiB probe) and over-predicts them several times. A real link has no such
  bucket, so there the byte term applies (switch buffers absorb bursts only in part);
- waiting for stragglers: in training a rank enters the exchange when its backward pass ends; with
  four ranks on two cores the last one is late, so "communicate" holds milliseconds that no link
  model predicts (compare "communicate" with "exchange alone");
- the dense allreduce on 100 Mbit/s takes {dense100['isolatedExchangeMs'] / dense100['predictedCommunicateMs']:.1f}x the ring model's time ({ratio[('none', None, 100)]:.2f}): Open MPI's algorithm
  for 23 MB on 4 ranks over TCP with tbf queues moves more than 2(P-1)/P of the data or stalls on the queue;
- the other way round, the small exchanges at 1 Gbit/s (density 0.001) take {min(at[k]['isolatedExchangeMs'] for k in small1g):.0f}-{max(at[k]['isolatedExchangeMs'] for k in small1g):.0f} ms alone where the
  model predicts about {sum(at[k]['predictedCommunicateMs'] for k in small1g) / len(small1g):.0f} ms ({min(ratio[k] for k in small1g):.2f}-{max(ratio[k] for k in small1g):.2f}). Our reading, not measured separately: every message crosses
  two veth pairs, a bridge and two tbf queues in software on the same two busy cores, and that costs
  more per message than the alpha of the probe ({alpha1g:.0f} us, measured on an idle link) says.
The projection below uses the probe made after training, with selections assumed disjoint.
""")

def cluster_notes():
    at = cluster_rows()
    if at is None:
        return "_not run yet_"
    same = all(at[(c, d, 100)]["testAccuracy"] == at[(c, d, 1000)]["testAccuracy"] for (c, d, link) in at if link == 100 and (c, d, 1000) in at)
    return f"""
How the table was made. The runs use the recipe of `bench training` (learning rate 0.05 with 50
warm-up steps and a cosine decay) with momentum correction. Each sparse run is 200 steps, timed over
its last 100 (`--steps N` runs two halves; the first holds JIT compilation and the adaptive
compressors' calibration); the dense runs are 20 steps (timed over the last 10), because at 100 Mbit/s
a dense step takes {at[("none", None, 100)]["stepMs"] / 1000:.1f} s and its time does not drift. The table's accuracies are therefore not
comparable with `none`'s (20 steps against 200); accuracy after the same steps is the five-epoch run
below. The link changes timing only, not arithmetic: """ + ("every compressor's accuracy is identical at\n100 Mbit/s and 1 Gbit/s.\n\n" if same else
        "yet some accuracies differ between 100 Mbit/s and\n1 Gbit/s in this run.\n\n") + cluster_speedups(at) + """
""" + cluster_accuracy() + """

The recipe matters on this MLP. Measured with the earlier controller (before a85870c): with a
constant learning rate and no momentum correction (the previous sessions' recipe) the gap was 4.1
points after three epochs; in-process three-epoch runs put the cosine schedule alone at 1.8 points
(none 87.47 %, SIDCo-E 85.63 %) and cosine with momentum correction at 1.1 (86.37 %):
`./build.sh bench training --transport inprocess --workers 4 --model wide-mlp --epochs 3 --compressors none,sidco-e --densities 0.001 --density-warmup 100`,
then the same for `sidco-e` with `--momentum-correction`.

""" + cluster_cost_model(at)
sections.append("""# Benchmarks

All figures below were produced by the commands shown, on the project's development machine
(2 cores, 24 GiB, no GPU, Debian 12), with the code as committed; the GPU section was measured on a
lent machine with an NVIDIA H100, as it says. The machine is shared and noisy:
compare ratios measured side by side in one run, not absolute figures across runs. Each benchmark
writes JSON (`--json FILE`), a markdown table beside it (`FILE.md`) and, where useful, a plot
(`FILE.png`); `python3 eng/bench-docs.py` pastes them here.
""")
sections.append("""## Compression microbenchmark (the paper's Figure-style latency and estimation quality)

```bash
./build.sh bench compression --json artifacts/bench/compression.json
```
""" + measured_before_change("compression") + """Defaults: 1,000,000 / 10,000,000 / 25,600,000 elements (ResNet-50 size); densities 0.1, 0.01, 0.001;
data `laplace`, `heavy` (Student-t with 3 degrees of freedom) and `real` (gradients captured by
training a 784-2048-2048-10 MLP on Fashion-MNIST at steps 0, 10, 25, 50, 100, ...). Median of 10
calls after 10 warm-up calls; every compressor runs with error feedback (residual carried from call to
call, as in training) and gets a fresh gradient of the same distribution each call (the data rotated
by a random offset, untimed): repeating one vector would grow the residual in lock-step, which
training never does and which threw the estimate off. `floor` is one read pass (`TensorPrimitives.SumOfMagnitudes`, single thread);
`torch-topk` is `t.abs().topk(k)` in TorchSharp with all cores. Achieved/target is the mean of calls
26-30 of a fresh compressor (the adaptive controller has settled); "calls to band" is the first
call whose last-5 mean is within [0.8, 1.25].

""" + compression_summary() + """ The run before a85870c (the table this one replaces) measured SIDCo-E 5.88 ms =
1.6x the floor (3.63 ms), SIDCo-GP 2.7x, SIDCo-P 2.5x and torch-topk 1,890 ms at that size (the torch-topk
code has not changed since; its time at this size is what moved most between the two runs, and the
speed-ups over it with it).
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
gradient and residual, write residual: 307 MB) takes 0.16 ms, about 1.9 TB/s, and a whole SIDCo-E call
at density 0.001 spends 0.48 ms in kernels, 16x less than the CPU backend on 16 cores (7.6 ms). But
`IGradientKernels` works on host spans, so every call copies the gradient and the residual to the
device and the residual back: 74 ms per SIDCo-E call at 25.6M, 15 ms at 5.8M (pageable host memory,
about 7 GB/s here). With gradients in host memory, as the trainer keeps them today (TorchSharp CPU
tensors gathered into one flat buffer), `KernelBackend.Cpu` is the right choice: 10x faster at
25.6M and 3.4x at the ConvNet's 317k. The GPU path pays only when the gradient and the residual live
in device memory, which needs CUDA tensors and an error-feedback buffer owned by the device; that is
not built yet. The kernels are written for that case: a group of 256 threads per 4,096-entry segment
with coalesced reads, fixed-order reductions in shared memory, and ordered compaction (a prefix sum
per row), so the selection stays identical to the CPU backend's. The benchmark checks that too, on the
device it ran on (the tests, with no GPU in CI, run ILGPU's CPU accelerator): on the H100 the
accumulated residuals and the selections were identical to the CPU backend's and the statistics
equal up to the order of summation (last line below).
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
The rows of one configuration were measured side by side, on a machine running nothing else.
""" + measured_before_change("allreduce") + "\n" + table("allreduce") + "\n\n" + allreduce_summary())
sections.append("""## End-to-end training (Fashion-MNIST)

```bash
./build.sh bench training --transport mpi --workers 4 --model convnet-wide --epochs 5 --density-warmup 200 --json artifacts/bench/training.json
```
The sample's ConvNet (two 5x5 convolutions with 32 and 64 channels, a 256-unit dense layer: 317,066
parameters), 4 MPI ranks on 2 cores (one TorchSharp thread each: ranks on one machine share its
cores), batch 32 per worker, SGD with momentum 0.9, cosine learning rate, the same seed for every run,
5 epochs (2,340 steps); test accuracy on the 10,000 test images. Every compressor gets the same
sparsity warm-up (density from 0.25 down to the target over the first 200 steps), so bytes and
compress times include those steps; its first steps, at densities up to 0.25, dominate the bytes
(a step goes dense when the cost model predicts the dense allreduce to be cheaper than gathering
the selections). Times are means per step over
the whole run, on 4 ranks sharing 2 cores: a rank preempted inside a timed section adds its wait to
that section.
""" + image("training") + "\n" + measured_before_change("training") + table("training") + """

""" + training_verdict() + """

""" + training_repeat() + """

""" + training_momentum_correction() + measured_before_change("training-warmup", "training-warmup-2") + """Repeated runs under MPI can differ by tenths of a point. Bytes at density 0.001 are dominated by
the warm-up's first steps, some of which go dense: the exchange picks dense or sparse per step from a
cost model probed by timing at start-up, so near the crossover two runs of one command choose
differently, and a dense step (Open MPI's allreduce) adds the workers' gradients in another order than
the sparse exchange does. Two runs of the first epoch
(`./build.sh bench training --transport mpi --workers 4 --model convnet-wide --epochs 1 --density-warmup 200 --compressors topk,dgc,sidco-e --densities 0.001 --json artifacts/bench/training-warmup.json`,
then the same with `--json artifacts/bench/training-warmup-2.json`; their JSON rows carry `achievedDensity` and `sparseFraction`): """ + warmup_runs() + """
In-process runs are deterministic (their dense and sparse sums both go in worker order).

The same compressors on gradients of this very model (captured from step
200 of its training on, below), one process, no training beside it, """ + convnet_alone()[0] + """ so
that the residual comes from DRAM, as after a backward pass (second table). In training the residual
and the gradient come from memory shared with three other ranks' forward and backward passes: a
SIDCo call streams both (about 4 MB of traffic per call at this size) and its time grows with that
traffic, while top-k's quickselect, bound by compute on a cache-resident copy, costs about what it
costs alone (""" + training_topk_ms() + """ in training at 0.001 against """ + convnet_alone()[1] + """ alone). Top-k's own time differs
between runs of the same command (""" + topk_two_runs() + """), so the ratios
below move with it. Two changes since 84707de made every SIDCo call cheaper without changing what
it selects: 2e7bc1c packs a selection without a branch per entry (it matters most in the warm-up,
whose densities of up to 25 % made the old per-lane loop mispredict), and 92bcd7a drops the peaks'
sum of squares from SIDCo-E's pass (the exponential fit does not use it) and notes candidates with
half the compares. The two runs of the same command on 84707de (archived JSON) gave
""" + training_before_kernel_changes() + """. A third change, dce4d7b, let SIDCo-P skip its sum of squares on
three calls in four, as SIDCo-GP skips its logarithms (below); it was reverted in d8b8c7e. In three
runs of the rows at 0.001 on it (archived JSON) SIDCo-P was """ + sidco_p_on_dce4d7b() + """.
Three runs cannot tell that from the spread between runs, but the change saved only the sum of
squares (0.006 ms of a 0.07 ms pass: `./build.sh bench kernels --elements 317066 --accelerator cpu --runs 50`,
CPU rows "accumulate + measure (logs)" and "(logs, squares)"). SIDCo-GP paid most: its first pass also summed logarithms for the gamma fit.
Since 5d3cefd it does so on one call in four once its second stage fits the peaks (docs/method.md),
and on every call of a rank whose controller settled at one stage; its generalized-Pareto second
stage also needs the peaks' sum of squares on every call. Reusing the peaks' last fitted shape in
between, as the first stage does, was tried and is not in the code: on a stream with error feedback
the selections fell to 0.46 of the target over the last ten of forty calls, and the test that asks
for at least 0.5 failed. Every later stage after the second
that fits the exceedances of a threshold below the final selection's candidates is another full pass. The second stage reads nothing more from the second call on: the
first pass sums the exceedances of the previous call's 25 % tail threshold as it goes (docs/method.md);
on the captured gradients that took 6-7 % off a call (0.12 ms against 0.13 ms, three alternating runs of
old and new code). How many stages a call has is the adaptive controller's choice. Every stage after
the second is another full pass, and at one achieved density a threshold selects the same entries
however many stages estimated it, so since 23a4bae the controller adds such a stage on a buffer this
large only when the fit misses the target by more than 3x and calibrates smaller misses; and it no
longer moves stages while the warm-up moves the target, when the achieved ratio carries the move itself
(docs/method.md). Before that change SIDCo-GP averaged 3.5 stages per call in the last epoch of two runs
of the table's command (archived JSON read for this; one rank reached 7-8 stages in a traced run) and was 7.2x and 7.1x below
top-k's compress time over the run; in the table above """ + training_stage_summary() + """ Before 5d3cefd, with
logarithms on every call, SIDCo-GP was 9.2x and 9.3x below top-k over the run in two runs of 23a4bae's
code (archived JSON), at 0.249 and 0.256 ms per step against SIDCo-E's 0.192 and 0.227 ms. Before """ + SIDCO_CHANGE + """ the controller kept adding
stages during the warm-up (7.0 per call in the last epoch, 4.9x below top-k over the run). A call with two stages now reads the buffer once when the first pass's candidates cover its
threshold; each further stage that starts below the candidate bound adds a read. Attempts that are not in the code, because
they did not pay on this machine: collecting the tail during the second read for the later stages
(exact, like the first-pass candidates; it collected several per cent of the entries and made
SIDCo-E slower); gathering a later stage's exceedances once with a selection pass (compaction then
cost several nanoseconds per gathered entry, more than the full passes it saves; 2e7bc1c made it
about 5x cheaper at 10 %, and this has not been tried again); and a controller that
tries one stage fewer whenever it has been in band for a while and forgets its ratios when the
target density moves (it moved some variants to fewer stages and others to more).

```bash
./build.sh bench compression --elements 317066 --densities 0.001 --data real-convnet,laplace --compressors sidco-e,sidco-gp,sidco-p,topk,dgc --runs 51 --json artifacts/bench/compression-convnet.json
./build.sh bench compression --elements 317066 --densities 0.001 --data real-convnet --compressors sidco-e,sidco-gp,sidco-p,topk,dgc --runs 51 --no-torch-topk --evict-cache 64 --json artifacts/bench/compression-convnet-cold.json
```

""" + measured_before_change("compression-convnet", "compression-convnet-cold") + table("compression-convnet") + "\n\nWith `--evict-cache 64` (the residual read from DRAM each call):\n\n" + table("compression-convnet-cold"))
sections.append("""## Emulated cluster: 4 hosts over rate-limited links (the paper's speed-up setting)

```bash
./build.sh bench cluster --hosts 4 --link 100mbit,1gbit --model wide-mlp --compressors topk,dgc,sidco-e,sidco-gp,sidco-p --steps 200 --momentum-correction --json artifacts/bench/cluster-sparse.json
./build.sh bench cluster --hosts 4 --link 100mbit,1gbit --model wide-mlp --compressors none --steps 20 --momentum-correction --json artifacts/bench/cluster-none.json
cat artifacts/bench/cluster-none.json.rows.jsonl artifacts/bench/cluster-sparse.json.rows.jsonl > artifacts/bench/cluster-all.rows.jsonl
dotnet test/Microsoft.ML.SIDCo.Benchmarks/bin/Release/net10.0/Microsoft.ML.SIDCo.Benchmarks.dll cluster-report --rows artifacts/bench/cluster-all.rows.jsonl --json artifacts/bench/cluster.json
./build.sh bench cluster --hosts 4 --link 10gbit --model wide-mlp --compressors none,sidco-e --densities 0.001 --epochs 5 --density-warmup 100 --momentum-correction --json artifacts/bench/cluster-accuracy-5ep.json
./build.sh bench cluster --hosts 2 --workers-per-host 2 --link 100mbit --model wide-mlp --compressors none,sidco-e --densities 0.001 --steps 40 --momentum-correction --json artifacts/bench/cluster-hierarchical.json
```
Each host is a network namespace whose link is limited with `tc` in both directions; one MPI rank
per host talks TCP over the limited links (docs/distributed.md). Model: a 784-2048-2048-10 MLP
(5.8 million parameters, 23 MB of gradient per step). Same seed and data for every run; speed-ups
are step-time ratios. All four "hosts" share the same 2 cores, so compute time is inflated about 2x
relative to separate machines and varies from run to run. Each emulated host is a machine of its own
to Open MPI, so a rank would take both cores for TorchSharp; `eng/cluster-bench.sh` gives each rank its
share instead (`OMP_NUM_THREADS` = cores / ranks = 1, recorded as `torchThreads` in the rows). Without
it 8 threads ran on 2 cores and compute took about 4x longer.
"predicted comm." is the cost model
(alpha-beta with the probed link) for the exchange each step used; "communicate" is the in-training
time, which also holds the wait for the slowest rank's backward pass; "exchange alone" times the same
exchange (same links, same selection size per rank) started after a barrier, the quantity the model
describes.

""" + measured_before_change("cluster-sparse", "cluster-accuracy-5ep", "cluster-hierarchical") + cluster_notes() + image("cluster") + "\n" + table("cluster")
    + "\n\n### Accuracy after five epochs (2,340 steps; the link does not change the arithmetic)\n\n" + table("cluster-accuracy-5ep") + "\n\n" + dgc_repeats() + "\n\n" + dgc_interleaved()
    + "\n\n### Hierarchical vs flat exchange (2 hosts x 2 workers)\n\n"
    + hierarchical_summary() + "\n\n" + table("cluster-hierarchical"))

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
{measured_before_change("runs/issue5-sidco-e", "runs/issue5-sidco-e-warmup")}60,000 / 10,000 images, 4 in-process workers, the sample's ConvNet (317,066 parameters), batch 32 per
worker, SGD with momentum 0.9, learning rate 0.05 with 50 warm-up steps and a cosine schedule, error
feedback, the same seed, 5 epochs (2,340 steps). The third run adds DGC's sparsity warm-up: over the
first 200 steps (9 % of the run) the density falls geometrically from 0.25 to 0.001. Bytes are the
share of the dense allreduce's bytes over the whole run. Runs are deterministic: repeating a command
gives the same accuracy.

| compressor | density | density warm-up | test accuracy | vs dense (points) | bytes vs dense | wall time |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

Without the warm-up SIDCo-E ends {(issue5[0]['testAccuracy'] - issue5[1]['testAccuracy'])*100:.2f} points below dense: the starved first steps (epoch-1 training
accuracy {issue5[1]['history'][0]['accuracy']*100:.0f} % against {issue5[0]['history'][0]['accuracy']*100:.0f} %) are not fully made up in 5 epochs. Other levers tried on the same
command (SIDCo-E, 0.001, 5 epochs; the flag added to the second command above) and set aside were
measured on earlier code, whose kernels summed the statistics in another order and whose stage
controller differed, when the command without a flag gave 89.17 % ({issue5[1]['testAccuracy']*100:.2f} % now); compare
each row with that 89.17 %:

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
