#!/usr/bin/env python3
"""report.py — the paper-mini results from the experiment logs: PNG plots and a markdown table per
finding (dev/experiments/README.md). Needs no GPU: it reads only the JSONL logs that f1_emergence.sh,
f2_laziness.sh and f3_nope.sh leave (matplotlib; Debian: apt-get install python3-matplotlib).

    python3 dev/experiments/report.py                      # logs/<size>/ -> results/<size>/
    python3 dev/experiments/report.py --logs DIR --out DIR

For every model size (a folder of logs/; <size>_<lever> for runs off the protocol, common.sh's
LEVER) it writes into results/<size>/:
    f1_emergence.png   needle accuracy at length T vs tokens seen, per config (mean over seeds,
                       the band spans the seeds)
    f2_laziness.png    best F-layer retrieval score vs tokens for the SSSF windows, and the step where
                       it first exceeds 0.5 against W (every seed a point, runs that never got there
                       as triangles at their end, the median marked); all-F as the reference (its
                       band, and its median step as a dashed line)
    f3_nope.png        needle accuracy vs length (T/4 .. 4T) at the end of training, F = RoPE vs NoPE
                       (mean over seeds; each seed faintly)
    results.md         the tables behind the plots (with when the farthest needle, at depth 0 beyond
                       every window, is first found; for the SSSF windows the share of each run's
                       training questions with the needle, or its nearest copy, inside W, measured
                       by needle_share with the flags of the log's config record, beside the
                       formula), per config the final best head of
                       each attention layer (which layers carry retrieval), and finding 2's trend test:
                       an exact permutation Jonckheere–Terpstra test of the F-head formation steps
                       across W (runs without a head censored at their end), whose p-values call
                       the finding reproduced, reversed or not settled (α = 0.05)
and from the calibration logs (calibration/, all-F runs whose names give the flags that differ from
the mini protocol) results/calibration.md: when retrieval emerged under each setting. The folders of
the recall protocol (recall*/, f2_recall.sh) are reported by report_recall.py, by the rules of
RECALL_PROTOCOL.md.
A run's log is <config>.s<seed>.jsonl.gz; only complete (gzipped) logs are read. Numbers come only
from the logs: "-" where an event did not happen within the run.
"""
import argparse
import itertools
import math
import os
import random
import re
import subprocess
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from plot import mean_over_depths, plt  # noqa: E402  (dev/plot.py: matplotlib set up)
import runlog  # noqa: E402  (dev/runlog.py: the log reader and checks, the output rule)
import report_recall  # noqa: E402  (the recall protocol's folders: recall*/)

F1_CONFIGS = ["F", "SSSF_w32", "SSSF_w128", "SSSF_w512", "RRRF_gdn", "RRRF_gla"]
F2_WINDOWS = [32, 64, 128, 256, 512, 1024]
F3_PAIRS = [("SSSF_w32", "SSSF_w32_fnope"), ("SSSF_w512", "SSSF_w512_fnope")]
THRESHOLD = 0.5
ALPHA = 0.05  # the level at which the laziness trend test calls finding 2 reproduced or reversed


def tokens_per_step(log):
    """B·T·accum of a run, from its first step record with finite tok/s and ms (tok/s × ms)"""
    for _, rec in log.train:
        if rec.get("tok_per_s") is not None and rec.get("ms") is not None:
            return round(rec["tok_per_s"] * rec["ms"] / 1000.0)
    raise runlog.LogError(f"{log.path}: no step record with tok_per_s and ms")


def best_f_head(needle):
    """the best retrieval score among the heads of the F layers (None without F layers)"""
    scores = [max(a["score"]) for a in needle["attn_layers"] if a["type"] == "F"]
    return max(scores) if scores else None


class Run:
    """One complete log: evals as (step, needle), the final val loss, tokens per step."""

    def __init__(self, path):
        log = runlog.read(path)
        if not log.evals:
            raise runlog.LogError(f"{path}: no needle evals (was it run with --eval-every?)")
        self.path = path
        self.config, self.tps = log.config, tokens_per_step(log)
        self.evals = log.evals
        self.val_loss = log.val[-1][1] if log.val else None
        # the last eval runs the whole grid, T/4, T/2, T, 2T, 4T (README.md, "Retrieval metrics"); with
        # --eval-long-every the evals before it may stop at T
        self.lengths = log.evals[-1][1]["lengths"]
        self.T = self.config["T"] if self.config and "T" in self.config else self.lengths[len(self.lengths) // 2]
        if self.T not in self.lengths:
            raise runlog.LogError(f"{path}: T {self.T} is not among its last eval's lengths {self.lengths} (accuracy at T is what the findings read)")

    def acc_at(self, length):
        """(steps, accuracy at `length`, mean over depths) over the evals; None where an eval left
        the length out"""
        return [s for s, _ in self.evals], [mean_over_depths(n)[n["lengths"].index(length)] if length in n["lengths"] else None
                                            for _, n in self.evals]

    def far_acc(self):
        """accuracy at length T of the farthest needle (the grid's first depth, 0: the start of the
        sequence, farther from the question than any window of the grid), per eval"""
        return [n["acc"][n["lengths"].index(self.T)][0] if self.T in n["lengths"] else None for _, n in self.evals]

    def final_acc(self, length):
        """accuracy at `length` (mean over depths) at the last eval; None where it left the length
        out (a calibration run stopped before its schedule's end, between long evals)"""
        return mean_over_depths(self.evals[-1][1])[self.lengths.index(length)] if length in self.lengths else None

    def model(self):
        """T and the attention layers ("T 1024, layers l0S l1S l2S l3F"), from the last eval"""
        return f"T {self.T}, layers " + " ".join(f"l{a['layer']}{a['type']}" for a in self.evals[-1][1]["attn_layers"])

    def final_layers(self):
        """{layer: (type, best head score)} of the attention layers at the last eval"""
        return {a["layer"]: (a["type"], max(a["score"])) for a in self.evals[-1][1]["attn_layers"]}

    def first_step(self, values):
        """the first eval step whose value is over THRESHOLD, None if none"""
        for (s, _), v in zip(self.evals, values):
            if v is not None and v > THRESHOLD:
                return s
        return None

    def m_tokens(self, step):
        """the tokens seen by `step`, in millions (None for None)"""
        return None if step is None else step * self.tps / 1e6

    def best_f(self):
        return [best_f_head(n) for _, n in self.evals]


NEEDLE_SHARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "needle_share")


def measured_share(cfg, w):
    """(needle, copy): the shares of a run's training questions whose needle value, or its nearest
    copy (the needle or an earlier answer to the same key), lies within W tokens before the answer,
    measured by needle_share (2000 sequences of the trainer's generator) with the run's needle flags
    and seed from its config record; (None, None) for a log without one or without the tool (make)"""
    keys = ("T", "needle_key", "needle_val", "needle_density", "needle_queries", "needle_symbols", "seed")
    if cfg is None or any(k not in cfg for k in keys):
        return None, None
    if not os.access(NEEDLE_SHARE, os.X_OK):
        if not measured_share.warned:
            print(f"note: {NEEDLE_SHARE} not built (make, or make dev/experiments/needle_share): the measured shares are left '-'", file=sys.stderr)
            measured_share.warned = True
        return None, None
    flags = ["-T", cfg["T"], "--needle-key", cfg["needle_key"], "--needle-val", cfg["needle_val"], "--needle-density",
             cfg["needle_density"], "--needle-queries", cfg["needle_queries"], "--needle-symbols", cfg["needle_symbols"],
             "-s", cfg["seed"], "-w", w]
    out = subprocess.run([NEEDLE_SHARE] + [str(x) for x in flags], capture_output=True, text=True)
    if out.returncode != 0:
        raise runlog.LogError(f"needle_share {' '.join(map(str, flags))}: {out.stderr.strip()}")
    row = [line for line in out.stdout.splitlines() if re.match(rf"^\| +{w} \|", line)]
    cells = row[0].split("|")
    return float(cells[2]), float(cells[3])


measured_share.warned = False


def formula_share(T, w):
    """(W/T)(1 + ln(T/W)): the share of questions within W when needle and question fall at random"""
    return 1.0 if w >= T else w / T * (1 + math.log(T / w))


def jt_statistic(groups):
    """Jonckheere–Terpstra statistic of groups ordered by the factor (here W ascending): the number of
    pairs (a in an earlier group, b in a later one) with a < b, ties counting 1/2. None = censored
    (no F head formed within the run): later than every observed step, tied with the other censored."""
    val = lambda x: math.inf if x is None else x
    jt = 0.0
    for i, j in itertools.combinations(range(len(groups)), 2):
        for a in groups[i]:
            for b in groups[j]:
                jt += 1.0 if val(a) < val(b) else 0.5 if val(a) == val(b) else 0.0
    return jt


def jt_test(groups):
    """Exact permutation test of the JT statistic: under the null every assignment of the pooled values
    to groups of these sizes is equally likely. Returns (jt, its null mean, P(JT >= jt), P(JT <= jt)):
    the first p-value is that of a rise with the factor, the second that of a fall. The null
    distribution is counted exactly by walking the pooled values in increasing order, tie block by tie
    block, over the counts already placed in each group (no enumeration of the assignments)."""
    sizes = [len(g) for g in groups]
    pooled = sorted((math.inf if x is None else x) for g in groups for x in g)
    blocks = [len(list(run)) for _, run in itertools.groupby(pooled)]
    # dist: {(placed per group): {2·JT so far: ways}}; within a block, a pair across groups i < j is a tie (1 half-unit)
    dist = {tuple(0 for _ in sizes): {0: 1}}
    for m in blocks:
        new = defaultdict(lambda: defaultdict(int))
        for placed, by_jt in dist.items():
            room = [n - c for n, c in zip(sizes, placed)]
            for ks in compositions(m, room):
                ways = math.factorial(m)
                for k in ks:
                    ways //= math.factorial(k)
                add = 0
                for g, k in enumerate(ks):
                    add += 2 * k * sum(placed[:g])  # strictly smaller values already in earlier groups
                    add += k * sum(ks[:g])          # ties with this block's members of earlier groups
                key = tuple(c + k for c, k in zip(placed, ks))
                for jt2, w in by_jt.items():
                    new[key][jt2 + add] += w * ways
        dist = new
    (final,) = dist.values()
    total = sum(final.values())
    jt2 = round(2 * jt_statistic(groups))
    p_up = sum(w for v, w in final.items() if v >= jt2) / total
    p_down = sum(w for v, w in final.items() if v <= jt2) / total
    mean_jt = sum(a * b for a, b in itertools.combinations(sizes, 2)) / 2
    return jt2 / 2, mean_jt, p_up, p_down


def compositions(m, room):
    """every way to split m items over len(room) groups with at most room[g] in group g"""
    if len(room) == 1:
        if m <= room[0]:
            yield (m,)
        return
    for k in range(min(m, room[0]) + 1):
        for rest in compositions(m - k, room[1:]):
            yield (k,) + rest


def jt_brute(groups):
    """the same p-values by enumerating every assignment: the check of jt_test (report.py --self-test)"""
    pooled = [x for g in groups for x in g]
    sizes = [len(g) for g in groups]
    obs = jt_statistic(groups)
    n_up = n_down = total = 0
    for perm in set(itertools.permutations(range(len(pooled)))):
        labels = []
        for g, n in enumerate(sizes):
            labels += [g] * n
        arrangement = [[] for _ in sizes]
        for pos, g in zip(perm, labels):
            arrangement[g].append(pooled[pos])
        v = jt_statistic(arrangement)
        total += 1
        n_up += v >= obs
        n_down += v <= obs
    return n_up / total, n_down / total


def self_test():
    """jt_test against enumeration on small cases with ties and censored runs; known values"""
    rng = random.Random(5)
    cases = [[[1, 2], [3, 4], [5, 6]], [[5, 6], [3, 4], [1, 2]], [[1, None], [2, None], [None, 3]]]
    for _ in range(6):
        cases.append([[rng.choice([10, 20, 20, 30, None]) for _ in range(rng.randint(1, 3))] for _ in range(3)])
    bad = 0
    for g in cases:
        _, _, up, down = jt_test(g)
        bu, bd = jt_brute(g)
        ok = abs(up - bu) < 1e-12 and abs(down - bd) < 1e-12
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} groups {g}: p_up {up:.6f} (enumerated {bu:.6f}), p_down {down:.6f} (enumerated {bd:.6f})")
    _, _, up, _ = jt_test([[1, 2], [3, 4], [5, 6]])
    if abs(up - 1 / 90) > 1e-12:  # 90 = 6!/(2!2!2!) assignments, one with every pair in order
        print(f"BAD strictly increasing groups: p_up {up}, expected 1/90")
        bad += 1
    print(f"self-test: {len(cases) + 1 - bad} passed, {bad} failed")
    return bad


def load_runs(folder, cls=None):
    """{config: [cls(log) per seed]} of one size's folder (cls: Run, or report_recall's RecallRun)"""
    runs = defaultdict(list)
    for name in sorted(os.listdir(folder)):
        m = re.match(r"(.+)\.s(\d+)\.jsonl\.gz$", name)
        if m:
            runs[m.group(1)].append((cls or Run)(os.path.join(folder, name)))
    for rs in runs.values():  # the seeds of a config are one model
        for r in rs[1:]:
            if r.model() != rs[0].model():
                raise runlog.LogError(f"{r.path}: {r.model()}; {rs[0].path}: {rs[0].model()}: the seeds of one config must train one model")
    return runs


def median_censored(xs, ends):
    """median of per-seed steps where None (censored) counts as its run's end, which is where it sits
    in the order (later than every observed step of the same run length)"""
    v = sorted(e if x is None else x for x, e in zip(xs, ends))
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def fmt(x, spec="{:.2f}"):
    return "-" if x is None else spec.format(x)


def seeds_fmt(xs, spec):
    """'mean (seed values)' of per-seed numbers, '-' for seeds where it did not happen"""
    return f"{fmt(mean(xs), spec)} ({', '.join(fmt(x, spec) for x in xs)})"


# One colour per config in every plot (all-F black, the SSSF windows from small to large, RRRF
# red and purple), and the names the plots show
CONFIG_COLORS = {"F": "black", "SSSF_w32": "C0", "SSSF_w64": "C9", "SSSF_w128": "C2", "SSSF_w256": "C8", "SSSF_w512": "C1",
                 "SSSF_w1024": "C5", "RRRF_gdn": "C3", "RRRF_gla": "C4"}


def config_color(name):
    return CONFIG_COLORS.get(name.replace("_fnope", ""), "gray")


def config_label(name):
    """'SSSF_w32_fnope' -> 'SSSF W 32, F NoPE'; 'F' -> 'all-F'; 'RRRF_gdn' -> 'RRRF gdn'"""
    m = re.match(r"^SSSF_w(\d+)(_fnope)?$", name)
    if m:
        return f"SSSF W {m.group(1)}" + (", F NoPE" if m.group(2) else "")
    return {"F": "all-F"}.get(name, name.replace("_", " "))


def band_plot(ax, runs, series, label, color):
    """mean over seeds of series(run) -> (xs, ys), with the min..max band (faint, so bands that
    overlap stay readable); x in M tokens"""
    curves = [series(r) for r in runs]
    n = min(len(c[0]) for c in curves)
    xs = [x / 1e6 for x in curves[0][0][:n]]
    cols = [[c[1][i] for c in curves if c[1][i] is not None] for i in range(n)]
    keep = [i for i in range(n) if cols[i]]
    ax.plot([xs[i] for i in keep], [sum(cols[i]) / len(cols[i]) for i in keep], "-", color=color, label=label)
    if len(runs) > 1:
        ax.fill_between([xs[i] for i in keep], [min(cols[i]) for i in keep], [max(cols[i]) for i in keep], color=color, alpha=0.1, lw=0)


def finish(fig, ax, xlabel, ylabel, out):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # outside the axes, so it covers no curve
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    runlog.save_figure(fig, plt, out)


def acc_series(r):
    steps, acc = r.acc_at(r.T)
    return [s * r.tps for s in steps], acc


def best_f_series(r):
    return [s * r.tps for s, _ in r.evals], r.best_f()


def finding1(runs, out, md):
    configs = [c for c in F1_CONFIGS if c in runs]
    if not configs:
        return
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for c in configs:
        band_plot(ax, runs[c], acc_series, config_label(c), config_color(c))
    ax.axhline(THRESHOLD, color="gray", lw=0.8, ls=":", label=f"threshold {THRESHOLD}")
    ax.set_ylim(-0.03, 1.03)
    finish(fig, ax, "tokens seen (M)", "needle accuracy at length T", os.path.join(out, "f1_emergence.png"))
    md.append("### Finding 1: emergence speed vs convergence\n")
    md.append("Needle exact-match accuracy at length T (mean over depths), and when the farthest needle (depth 0: "
              "the start of the sequence, beyond any window) is first found: an SWA hybrid can pass 0.5 on the "
              "needles inside its window alone. Mean over seeds, per seed in brackets.\n")
    md.append("| config | seeds | M tokens to acc > 0.5 | M tokens to farthest > 0.5 | final acc at T | final acc at 2T | final acc at 4T | final val loss |")
    md.append("|---|---|---|---|---|---|---|---|")
    for c in configs:
        rs = runs[c]
        first = [r.m_tokens(r.first_step(r.acc_at(r.T)[1])) for r in rs]
        far = [r.m_tokens(r.first_step(r.far_acc())) for r in rs]
        final = {x: [r.final_acc(x * r.T) for r in rs] for x in (1, 2, 4)}  # at T, 2T, 4T
        md.append(f"| {c} | {len(rs)} | {seeds_fmt(first, '{:.0f}')} | {seeds_fmt(far, '{:.0f}')} | {seeds_fmt(final[1], '{:.2f}')} | "
                  f"{seeds_fmt(final[2], '{:.2f}')} | {seeds_fmt(final[4], '{:.2f}')} | {seeds_fmt([r.val_loss for r in rs], '{:.3f}')} |")
    md.append("")


def finding2(runs, out, md):
    windows = [w for w in F2_WINDOWS if f"SSSF_w{w}" in runs]
    if not windows:
        return
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    ref = runs.get("F", [])  # all-F: the reference, outside the trend test
    for w in windows:
        band_plot(ax, runs[f"SSSF_w{w}"], best_f_series, f"SSSF W {w}", config_color(f"SSSF_w{w}"))
    if ref:
        band_plot(ax, ref, best_f_series, "all-F (reference)", config_color("F"))
    ax.axhline(THRESHOLD, color="gray", lw=0.8, ls=":", label=f"formation threshold {THRESHOLD}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("tokens seen (M)")
    ax.set_ylabel("best F-layer retrieval score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    firsts, ends = {}, {}
    for w in windows:
        firsts[w], ends[w] = head_formation(runs[f"SSSF_w{w}"])
    ref_first, ref_end = head_formation(ref)
    cens_label = "no head (censored at the run's end)"
    for w in windows:  # every seed a point; a run with no head over the threshold, a triangle at its end
        ys = [s for s in firsts[w] if s is not None]
        ax2.plot([w] * len(ys), ys, "o", color=config_color(f"SSSF_w{w}"), alpha=0.7)
        cens = [e for s, e in zip(firsts[w], ends[w]) if s is None]
        if cens:
            ax2.plot([w] * len(cens), cens, "^", mfc="none", color=config_color(f"SSSF_w{w}"), alpha=0.9, label=cens_label)
            cens_label = None  # one legend entry
    meds = [(w, median_censored(firsts[w], ends[w])) for w in windows]
    ax2.plot([w for w, m in meds], [m for w, m in meds], "_", color="k", ms=18, mew=2, label="median")
    if ref:
        ax2.axhline(median_censored(ref_first, ref_end), color="gray", ls="--", lw=1, label="all-F median")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(windows, [str(w) for w in windows])  # 32, 128, 512: not 2^5 .. 2^9
    ax2.minorticks_off()
    finish(fig, ax2, "SWA window W", f"first step with a retrieval head > {THRESHOLD}", os.path.join(out, "f2_laziness.png"))
    md.append("### Finding 2: Large-Window Laziness\n")
    md.append(f"The first eval step at which the best head of an F layer scores over {THRESHOLD} (the fraction of answer "
              "tokens whose attention argmax is the needle token being copied), and that score at the end; all-F, where "
              "present, as the reference (no window, so no shares; outside the trend test).\n")
    md.append("The last columns: the share of the run's training questions whose needle lies within W tokens of the answer "
              "(what the S layers could answer alone), and whose needle or an earlier answer to the same key does (the "
              "nearest copy of the value), measured by needle_share with the run's needle flags and seed ('-' for a log "
              "without its config record), beside the formula (W/T)(1 + ln(T/W)) for the needle.\n")
    md.append(f"| config | seeds | first step best F head > {THRESHOLD} | M tokens to farthest > 0.5 | final best F head | "
              "final acc at T / 2T / 4T | needle within W | nearest copy within W | formula |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for w in windows:
        rs = runs[f"SSSF_w{w}"]
        needle, copy = zip(*(measured_share(r.config, w) for r in rs))
        share = f"{seeds_fmt(needle, '{:.3f}')} | {seeds_fmt(copy, '{:.3f}')} | {formula_share(rs[0].T, w):.3f}"
        md.append(finding2_row(f"SSSF W {w}", rs, firsts[w], share))
    if ref:  # no S layers: every question is the F layers'
        md.append(finding2_row("all-F (reference)", ref, ref_first, "- | - | -"))
    md.append("")
    if len(windows) >= 2:
        groups = [firsts[w] for w in windows]
        jt, mean_jt, p_up, p_down = jt_test(groups)
        n_cens = sum(x is None for g in groups for x in g)
        n = sum(map(len, groups))
        verdict = ("reproduced (later heads with larger windows)" if p_up < ALPHA else
                   "reversed (earlier heads with larger windows)" if p_down < ALPHA else
                   f"not settled (no F head formed in any of the {n} runs)" if n_cens == n else "not settled")
        md.append(f"Trend test across W = {', '.join(map(str, windows))} (Jonckheere–Terpstra, exact permutation over "
                  f"{n} runs, {n_cens} censored at their end): JT = {jt:g} (null mean {mean_jt:g}); "
                  f"p = {p_up:.4f} for heads forming later with larger W, p = {p_down:.4f} for earlier. "
                  f"At α = {ALPHA}: **{verdict}**.\n")
    layers_table(runs, md)


def head_formation(rs):
    """per seed: the first eval step its best F head passes the threshold (None: never) and the step of
    its last eval (where a run that never got there is censored)"""
    return [r.first_step(r.best_f()) for r in rs], [r.evals[-1][0] for r in rs]


def finding2_row(label, rs, first, share):
    """one row of finding 2's table: a config's seeds, their F-head formation steps (head_formation)
    and the cells for the share of questions within W"""
    far = [r.m_tokens(r.first_step(r.far_acc())) for r in rs]
    final = " / ".join(seeds_fmt([r.final_acc(x * r.T) for r in rs], "{:.2f}") for x in (1, 2, 4))
    return (f"| {label} | {len(rs)} | {seeds_fmt(first, '{:.0f}')} | {seeds_fmt(far, '{:.0f}')} | "
            f"{seeds_fmt([r.best_f()[-1] for r in rs], '{:.2f}')} | {final} | {share} |")


def layers_table(runs, md):
    """where retrieval lives at the end: every config's best head per F layer and its best S head"""
    md.append("#### Which layers retrieve at the end\n")
    md.append("Every config: the best retrieval score among the heads of each F layer (layer: score) and of "
              "the S layers (the best one), at the last eval, mean over seeds. R layers have no attention "
              "score: an RRRF run that retrieves with low F scores retrieves in its R layers.\n")
    md.append("| config | seeds | final acc at T | best head per F layer | best S head |")
    md.append("|---|---|---|---|---|")
    for c in sorted(runs):
        rs = runs[c]
        per_run = [r.final_layers() for r in rs]
        types = {l: t for l, (t, _) in per_run[0].items()}
        avg = {l: mean([p[l][1] for p in per_run]) for l in types}
        f_cells = ", ".join(f"{l}: {avg[l]:.2f}" for l, t in types.items() if t == "F") or "-"
        s_layers = [l for l, t in types.items() if t == "S"]
        s_best = max(s_layers, key=lambda l: avg[l]) if s_layers else None
        s_cell = "-" if s_best is None else f"{s_best}: {avg[s_best]:.2f}"
        md.append(f"| {c} | {len(rs)} | {fmt(mean([r.final_acc(r.T) for r in rs]))} | {f_cells} | {s_cell} |")
    md.append("")


def finding3(runs, out, md):
    pairs = [(a, b) for a, b in F3_PAIRS if a in runs and b in runs]
    if not pairs:
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for rope, nope in pairs:
        for name, style in ((rope, "o-"), (nope, "s--")):
            rs = runs[name]
            lengths = rs[0].lengths
            xs = [L / rs[0].T for L in lengths]
            per_seed = [[r.final_acc(L) for L in lengths] for r in rs]
            ax.plot(xs, [mean(col) for col in zip(*per_seed)], style, color=config_color(rope),
                    label=config_label(rope) + (", F NoPE" if name == nope else ", F RoPE"))
            if len(rs) > 1:  # each seed faintly: the mean of seeds that did and did not learn retrieval hides both
                for ys in per_seed:
                    ax.plot(xs, ys, style, color=config_color(rope), alpha=0.25, lw=0.8, ms=3)
    ax.axvline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ticks = [L / runs[pairs[0][0]][0].T for L in runs[pairs[0][0]][0].lengths]
    ax.set_xticks(ticks, [{0.25: "T/4", 0.5: "T/2", 1.0: "T"}.get(x, f"{x:g}T") for x in ticks])
    ax.minorticks_off()
    ax.set_ylim(-0.03, 1.03)
    finish(fig, ax, "needle length / training length T", "needle accuracy at the end", os.path.join(out, "f3_nope.png"))
    md.append("### Finding 3: NoPE on the full-attention layers\n")
    md.append("Final needle accuracy per length (mean over depths; mean over seeds, per seed in brackets) and the final val loss (short context, length T).\n")
    lengths = runs[pairs[0][0]][0].lengths
    T = runs[pairs[0][0]][0].T
    md.append("| config | F layers | seeds | " + " | ".join(f"acc {L / T:g}T" for L in lengths) + " | val loss |")
    md.append("|---|---|---|" + "---|" * len(lengths) + "---|")
    for rope, nope in pairs:
        for name in (rope, nope):
            rs = runs[name]
            accs = " | ".join(seeds_fmt([r.final_acc(L) for r in rs], "{:.2f}") for L in lengths)
            md.append(f"| {rope} | {'NoPE' if name == nope else 'RoPE'} | {len(rs)} | {accs} | {seeds_fmt([r.val_loss for r in rs], '{:.3f}')} |")
    md.append("")


def calibration(folder, out):
    """results/calibration.md: per calibration or pilot log, the steps where accuracy at T and the best
    F head first exceed 0.5, both at its end, and the best F head at any eval."""
    names = sorted(f for f in os.listdir(folder) if f.endswith(".jsonl.gz"))
    md = ["## Calibration and pilot runs\n",
          "F_*: all-F runs at `mini` named by the flags that differ from the protocol (learning rate, needle",
          "queries per sequence, needle density per 1000 tokens when not 30, steps); pilot_*: `mini` protocol",
          "runs without --eval-early (evals every 100 steps); t4096_F_*: all-F runs at `t4096` named by the",
          "flags that differ from its protocol (symbols s, key length k, density d, queries q, learning rate,",
          "steps); t2048_F_*: the `mini` model at T 2048, B 16, between the two.",
          "steps: the last eval's step, of the schedule's (runs stopped early end before it; their last",
          "eval may lack 2T and 4T: \"-\").\n",
          "| log | T | steps | first step acc at T > 0.5 | first step best F head > 0.5 | final acc at T / 2T / 4T | final best F head | best F head at any eval |",
          "|---|---|---|---|---|---|---|---|"]
    for name in names:
        r = Run(os.path.join(folder, name))
        steps, acc = r.acc_at(r.T)
        first_acc, first_head = r.first_step(acc), r.first_step(r.best_f())
        final = " / ".join(fmt(r.final_acc(L)) for L in (r.T, 2 * r.T, 4 * r.T))
        of = f" of {r.config['steps']}" if r.config and "steps" in r.config else ""
        heads = [b for b in r.best_f() if b is not None]
        md.append(f"| {name[:-len('.jsonl.gz')]} | {r.T} | {steps[-1]}{of} | {fmt(first_acc, '{}')} | {fmt(first_head, '{}')} | {final} | "
                  f"{fmt(r.best_f()[-1])} | {fmt(max(heads) if heads else None)} |")
    runlog.write_text(os.path.join(runlog.out_folder(out, "--out", []), "calibration.md"), "\n".join(md) + "\n")
    print(f"calibration: {len(names)} logs in {out}/calibration.md")
    return len(names)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="paper-mini plots and tables from the experiment logs")
    p.add_argument("--logs", default=os.path.join(here, "logs"), help="folder of <size>/ log folders (default dev/experiments/logs)")
    p.add_argument("--out", default=os.path.join(here, "results"), help="output folder (default dev/experiments/results)")
    p.add_argument("--calibration", default=os.path.join(here, "calibration"), help="folder of calibration logs (default dev/experiments/calibration; skipped when absent)")
    p.add_argument("--self-test", action="store_true", help="check the trend test against enumeration, then exit")
    a = p.parse_args()
    if a.self_test:
        sys.exit(1 if self_test() else 0)
    runlog.out_folder(a.out, "--out", [])
    done = calibration(a.calibration, a.out) if os.path.isdir(a.calibration) else 0
    sizes = sorted(d for d in os.listdir(a.logs) if os.path.isdir(os.path.join(a.logs, d))) if os.path.isdir(a.logs) else []
    for size in sizes:
        if size.startswith("recall"):  # the recall protocol (RECALL_PROTOCOL.md), by its own rules
            runs = load_runs(os.path.join(a.logs, size), report_recall.RecallRun)
            md = report_recall.report(runs, os.path.join(a.out, size), size, plt, jt_test)
            if md:
                runlog.write_text(os.path.join(a.out, size, "results.md"), "\n".join(md) + "\n")
                print(f"{size}: {', '.join(sorted(os.listdir(os.path.join(a.out, size))))} in {os.path.join(a.out, size)}/")
                done += 1
            continue
        runs = load_runs(os.path.join(a.logs, size))
        if not runs:
            continue
        out = runlog.out_folder(os.path.join(a.out, size), "--out", [])
        name = size.replace("_", "`, lever `", 1)  # <size>_<lever>: runs off the protocol (common.sh)
        md = [f"## Model size `{name}`\n", f"Runs: {sum(len(v) for v in runs.values())} complete logs in {len(runs)} configs.\n"]
        finding1(runs, out, md)
        finding2(runs, out, md)
        finding3(runs, out, md)
        runlog.write_text(os.path.join(out, "results.md"), "\n".join(md) + "\n")
        print(f"{size}: {', '.join(sorted(x for x in os.listdir(out)))} in {out}/")
        done += 1
    if done == 0:
        raise runlog.LogError(f"--logs {a.logs}: no complete logs (<size>/<config>.s<seed>.jsonl.gz; run the finding scripts first)")


if __name__ == "__main__":
    runlog.run_tool(main)
