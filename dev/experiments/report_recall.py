"""report_recall.py — the recall protocol's results (dev/experiments/RECALL_PROTOCOL.md) from its logs,
by the rules written there before the runs. report.py calls it for the log folders of f2_recall.sh:

    recall_pilot/   the pilot: each learning rate's F formation step, the rule's choice written to
                    results/recall_pilot/lr.txt (read by f2_recall.sh), results.md, recall_bins.png
    recall/         finding 2: per config the F formation steps, their classes, Kaplan-Meier medians,
                    S formation steps, the far bin with all F / all S layers ablated; the trend
                    test and the verdict; the interventions beside it; results.md and the plots
                    recall_bins.png (accuracy per distance bin over training), recall_km.png (the
                    Kaplan-Meier curves of F formation), recall_ablation.png (accuracy per bin with
                    each layer ablated at the end, and the far bin's under each ablation over training)
    recall_f1/      finding 1: the step the far bin first reaches 0.9, accuracy per bin at equal tokens
    recall_<lever>/ runs off the protocol (common.sh's LEVER): tabled like recall/, never pooled with it

Definitions (RECALL_PROTOCOL.md): a run's F formation step is the first eval at which the far bin's
accuracy and the best F-layer head's retrieval score in the far bin both exceed 0.5, and both still do
at the next two evals; a run that never gets there is censored at its last eval, and counts as
"learned nothing" when no bin's accuracy exceeds 0.5 at its end.
"""
import os
import random
import re

import runlog  # dev/runlog.py (report.py puts dev/ on the path): the log reader and checks, the output rule

THRESHOLD = 0.5
HOLD = 2               # evals after the first at which the formation condition must still hold
PILOT_MAX_STEP = 1000  # a pilot learning rate passes if all-F forms by this step (a quarter of the grid's run)
ALPHA = 0.05
RATIO_REPRODUCED = 1.25
RATIO_REFUTED = 1.1
BOOTSTRAP = 10000
GRID_WINDOWS = [32, 128, 512]
INTERVENTIONS = ["SSSF_w512_freezeS", "SSSF_w512_far512", "SSSF_w32_far32"]
F1_CONFIGS = ["F", "SSSF_w32", "SSSF_w512", "RRRF_gla"]
F1_STEPS = [1000, 2000, 3600, 6000, 12000]


class RecallRun:
    """One complete log of the recall protocol: its config record, its recall evals as (step, record)
    and its training losses."""

    def __init__(self, path):
        self.path = path
        log = runlog.read(path)
        self.config, self.evals = log.config, log.recall
        self.losses = [(s, r["loss"]) for s, r in log.train if r["loss"] is not None]
        if not self.evals:
            raise runlog.LogError(f"{path}: no recall evals (trained with --needle-kind recall and --eval-every?)")
        self.edges = self.evals[-1][1]["edges"]
        for s, r in self.evals:  # one set of bins through the run (its --recall-bins)
            if r["edges"] != self.edges:
                raise runlog.LogError(f"{path}: the recall eval at step {s} has bins {r['edges']}, the last {self.edges}")
        self.n_bins = len(self.edges) + 1
        self.far = self.n_bins - 1
        self.pattern = self.config["pattern"] if self.config else ""
        self.window = max(self.config["windows"]) if self.config and "windows" in self.config else None
        self.last_step = self.evals[-1][0]

    def model(self):
        """the bins and the attention layers ("bins [32, 128, 512], layers l0S l1S l2S l3F")"""
        return f"bins {self.edges}, layers " + " ".join(f"l{a['layer']}{a['type']}" for a in self.evals[-1][1]["attn_layers"])

    def acc(self, b):
        """accuracy in bin b at every eval"""
        return [r["acc"][b] for _, r in self.evals]

    def best_head(self, rec, kind, b):
        """the best retrieval score in bin b among the heads of the layers of type kind (None: none)"""
        scores = [max(h[b] for h in a["score"]) for a in rec["attn_layers"] if a["type"] == kind]
        return max(scores) if scores else None

    def best_f_far(self):
        return [self.best_head(r, "F", self.far) for _, r in self.evals]

    def formation(self):
        """the F formation step (None: censored)"""
        ok = [a > THRESHOLD and (h or 0) > THRESHOLD for a, h in zip(self.acc(self.far), self.best_f_far())]
        for i in range(len(ok) - HOLD):
            if all(ok[i:i + HOLD + 1]):
                return self.evals[i][0]
        return None

    def s_formation(self):
        """the first eval at which the best S head scores > 0.5 in a bin wholly inside W (None: never)"""
        if "S" not in self.pattern or self.window is None:
            return None
        inside = [b for b in range(self.n_bins - 1) if self.edges[b] <= self.window]
        for s, r in self.evals:
            if any((self.best_head(r, "S", b) or 0) > THRESHOLD for b in inside):
                return s
        return None

    def klass(self):
        if self.formation() is not None:
            return "formed"
        final = self.evals[-1][1]["acc"]
        return "retrieves otherwise" if max(final) > THRESHOLD else "learned nothing"

    def final_ablated(self, name):
        """the far bin's accuracy at the last eval with `name` ("F", "S", "l3") ablated (None: not run)"""
        ab = self.evals[-1][1].get("ablation")
        if not ab or name not in ab["names"]:
            return None
        return ab["acc"][ab["names"].index(name)][self.far]

    def first_reach(self, b, level):
        for s, r in self.evals:
            if r["acc"][b] >= level:
                return s
        return None

    def acc_at_step(self, step):
        """accuracy per bin at the last eval at or before `step` (None: the run had no eval there)"""
        got = None
        for s, r in self.evals:
            if s <= step:
                got = r["acc"]
        return got if step <= self.last_step else None

    def final_loss(self, n=50):
        tail = [l for _, l in self.losses[-n:]]
        return sum(tail) / len(tail) if tail else None


def km_median(steps):
    """Kaplan-Meier median of formation steps (None = censored at the run's end, after every event):
    the first step at which the estimated fraction not yet formed drops to 0.5 or below; None when it
    never does (more than half censored)"""
    at_risk, surv = len(steps), 1.0
    for t in sorted({s for s in steps if s is not None}):
        d = sum(1 for s in steps if s == t)
        surv *= 1.0 - d / at_risk
        at_risk -= d
        if surv <= 0.5 + 1e-12:
            return t
    return None


def km_curve(steps, end):
    """(steps, fraction formed) of the Kaplan-Meier estimate, from 0 to end"""
    xs, ys, at_risk, surv = [0], [0.0], len(steps), 1.0
    for t in sorted({s for s in steps if s is not None}):
        d = sum(1 for s in steps if s == t)
        xs.append(t)
        ys.append(1.0 - surv)
        surv *= 1.0 - d / at_risk
        at_risk -= d
        xs.append(t)
        ys.append(1.0 - surv)
    xs.append(end)
    ys.append(1.0 - surv)
    return xs, ys


def ratio(med512, med32, end):
    """(R, relation) of the KM medians, a missing median replaced by the run length: '=' exact, '>='
    a lower bound (W 512's missing), '<=' an upper bound (W 32's missing); (None, None) both missing"""
    if med512 is None and med32 is None:
        return None, None
    if med512 is None:
        return end / med32, ">="
    if med32 is None:
        return med512 / end, "<="
    return med512 / med32, "="


def bootstrap_ratio(steps512, steps32, seed=0):
    """95% percentile interval of R = median(W 512) / median(W 32) over resamples of each window's runs
    (every run formed: the KM median is the plain lower median)"""
    rng = random.Random(seed)
    rs = []
    for _ in range(BOOTSTRAP):
        a = [rng.choice(steps512) for _ in steps512]
        b = [rng.choice(steps32) for _ in steps32]
        rs.append(km_median(a) / km_median(b))
    rs.sort()
    return rs[int(0.025 * BOOTSTRAP)], rs[int(0.975 * BOOTSTRAP) - 1]


def verdict(runs, jt_test):
    """finding 2's verdict by the protocol's rules; returns (verdict, lines of markdown)"""
    windows = [w for w in GRID_WINDOWS if f"SSSF_w{w}" in runs]
    if 32 not in windows or 512 not in windows:
        return None, [f"Trend test: waits for SSSF W 32 and W 512 (present: {', '.join(f'W {w}' for w in windows) or 'none'}).\n"]
    end = max(r.last_step for w in windows for r in runs[f"SSSF_w{w}"])
    groups, nothing = {}, {}
    for w in windows:
        rs = runs[f"SSSF_w{w}"]
        nothing[w] = sum(r.klass() == "learned nothing" for r in rs)
        groups[w] = [r.formation() for r in rs if r.klass() != "learned nothing"]
    lines = []
    jt, mean_jt, p_later, p_earlier = jt_test([groups[w] for w in windows])
    med = {w: km_median(groups[w]) for w in windows}
    R, rel = ratio(med[512], med[32], end)
    n = sum(len(g) for g in groups.values())
    n_cens = sum(s is None for g in groups.values() for s in g)
    lines.append(f"Trend test across W = {', '.join(map(str, windows))} (exact one-sided Jonckheere–Terpstra over {n} runs, "
                 f"{n_cens} censored at their end; runs that learned nothing, left out: {sum(nothing.values())}): JT = {jt:g} "
                 f"(null mean {mean_jt:g}), p_later = {p_later:.4f}, p_earlier = {p_earlier:.4f}.")
    med_txt = ", ".join(f"W {w} {med[w] if med[w] is not None else f'> {end}'}" for w in windows)
    r_txt = "undefined (no median at either window)" if R is None else f"{'' if rel == '=' else rel + ' '}{R:.2f}"
    lines.append(f"Kaplan-Meier medians: {med_txt}; R = median(W 512) / median(W 32) = {r_txt}.")
    all_formed = all(s is not None for w in (32, 512) for s in groups[w]) and nothing[32] == 0 and nothing[512] == 0
    interval = None
    if all_formed and groups[32] and groups[512]:
        interval = bootstrap_ratio(groups[512], groups[32])
        lines.append(f"Every W 32 and W 512 run formed: bootstrap 95% interval of R [{interval[0]:.2f}, {interval[1]:.2f}].")
    ref = runs.get("F", [])
    ref_formed = sum(r.formation() is not None for r in ref)
    broken = [w for w in windows if nothing[w] * 2 > len(runs[f"SSSF_w{w}"])]
    if broken or (ref and ref_formed * 2 < len(ref)):
        why = (f"more than half of the runs at {', '.join(f'W {w}' for w in broken)} learned nothing" if broken else
               f"all-F formed in {ref_formed} of {len(ref)} runs")
        v = f"not settled (instrument: {why})"
    elif p_later < ALPHA and R is not None and rel in ("=", ">=") and R >= RATIO_REPRODUCED:
        v = "reproduced"
    elif p_earlier < ALPHA or (interval is not None and interval[1] < RATIO_REFUTED):
        v = "refuted"
    else:
        v = "not settled"
    lines.append(f"By the protocol's rules (reproduced: p_later < {ALPHA} and R ≥ {RATIO_REPRODUCED}; refuted: p_earlier < "
                 f"{ALPHA}, or every run formed and R's interval lies below {RATIO_REFUTED}): **{v}**.\n")
    return v, lines


def fmt(x, spec="{:.2f}"):
    return "-" if x is None else spec.format(x)


def seeds(xs, spec="{:.2f}"):
    """'mean (per seed)' of numbers, '-' where a seed has none"""
    vals = [x for x in xs if x is not None]
    m = sum(vals) / len(vals) if vals else None
    return f"{fmt(m, spec)} ({', '.join(fmt(x, spec) for x in xs)})"


def bin_names(edges):
    names = [f"≤{edges[0]}"] + [f"{edges[i - 1] + 1}–{edges[i]}" for i in range(1, len(edges))] + [f">{edges[-1]}"]
    return names if edges else ["all"]


def config_row(c, rs):
    first = [r.formation() for r in rs]
    classes = [r.klass() for r in rs]
    counts = f"{classes.count('formed')} / {classes.count('retrieves otherwise')} / {classes.count('learned nothing')}"
    finals = " / ".join(seeds([r.evals[-1][1]["acc"][b] for r in rs]) for b in range(rs[0].n_bins))
    med = km_median(first)
    return (f"| {c} | {len(rs)} | {', '.join(fmt(s, '{}') for s in first)} | {counts} | {fmt(med, '{}') if med is not None else f'> {rs[0].last_step}'} | "
            f"{', '.join(fmt(r.s_formation(), '{}') for r in rs)} | {finals} | {seeds([r.best_f_far()[-1] for r in rs])} | "
            f"{seeds([r.final_ablated('F') for r in rs])} | {seeds([r.final_ablated('S') for r in rs])} | {seeds([r.final_loss() for r in rs], '{:.3f}')} |")


def config_table(runs, configs, md):
    edges = runs[configs[0]][0].edges
    md.append("| config | runs | F formation step per seed | formed / retrieves otherwise / learned nothing | KM median | "
              "S formation step per seed | final accuracy " + " / ".join(bin_names(edges)) + " | final best F head, far bin | "
              "far bin, all F ablated | far bin, all S ablated | final train loss |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in configs:
        md.append(config_row(c, runs[c]))
    md.append("")


def plot_bins(plt, runs, configs, out):
    """accuracy per distance bin over training, one panel per config (mean over seeds)"""
    n = len(configs)
    cols = min(n, 4)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.6 * cols, 3.0 * ((n + cols - 1) // cols)), squeeze=False)
    for ax, c in zip(axes.flat, configs):
        rs = runs[c]
        steps = [s for s, _ in rs[0].evals]
        for b, name in enumerate(bin_names(rs[0].edges)):
            per = [r.acc(b) for r in rs]
            k = min(len(p) for p in per)
            ax.plot(steps[:k], [sum(p[i] for p in per) / len(per) for i in range(k)], label=name)
        ax.axhline(THRESHOLD, color="gray", lw=0.8, ls=":")
        ax.set_title(f"{c} ({len(rs)} seeds)", fontsize=9)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("accuracy per distance bin")
    axes.flat[0].legend(fontsize=7, title="query distance", title_fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    runlog.save_figure(fig, plt, os.path.join(out, "recall_bins.png"))


def plot_km(plt, runs, configs, out):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, c in enumerate(configs):
        rs = runs[c]
        xs, ys = km_curve([r.formation() for r in rs], max(r.last_step for r in rs))
        ax.plot(xs, ys, color=f"C{i}", label=f"{c} ({len(rs)})")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of runs with F formation (Kaplan-Meier)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    runlog.save_figure(fig, plt, os.path.join(out, "recall_km.png"))


def plot_ablation(plt, runs, configs, out):
    """per config: accuracy per bin at the last eval with each ablation (rows) and the far bin's
    accuracy under each ablation over the ablation evals (mean over seeds)"""
    configs = [c for c in configs if runs[c][0].evals[-1][1].get("ablation")]
    if not configs:
        return
    fig, axes = plt.subplots(2, len(configs), figsize=(3.4 * len(configs), 6.4), squeeze=False)
    for j, c in enumerate(configs):
        rs = runs[c]
        names = rs[0].evals[-1][1]["ablation"]["names"]
        final = [[sum(r.evals[-1][1]["ablation"]["acc"][a][b] for r in rs) / len(rs) for b in range(rs[0].n_bins)] for a in range(len(names))]
        ax = axes[0][j]
        im = ax.imshow(final, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(rs[0].n_bins))
        ax.set_xticklabels(bin_names(rs[0].edges), fontsize=7)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_title(f"{c}: at the end", fontsize=9)
        abl_evals = [(s, r) for s, r in rs[0].evals if r.get("ablation")]
        by_step = [dict(r.evals) for r in rs]  # each seed's records by step, built once
        over = [[sum(d[s]["ablation"]["acc"][a][rs[0].far] for d in by_step if s in d) / len(rs)
                 for s, _ in abl_evals] for a in range(len(names))]
        ax2 = axes[1][j]
        ax2.imshow(over, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax2.set_yticks(range(len(names)))
        ax2.set_yticklabels(names, fontsize=7)
        ticks = list(range(0, len(abl_evals), max(1, len(abl_evals) // 4)))
        ax2.set_xticks(ticks)
        ax2.set_xticklabels([abl_evals[i][0] for i in ticks], fontsize=7)
        ax2.set_xlabel("step")
        ax2.set_title("far bin over training", fontsize=9)
    axes[0][0].set_ylabel("ablated (mean)")
    axes[1][0].set_ylabel("ablated (mean)")
    fig.colorbar(im, ax=axes, shrink=0.6, label="accuracy")
    runlog.save_figure(fig, plt, os.path.join(out, "recall_ablation.png"))


def pilot(runs, out, plt):
    """the pilot's rule: a learning rate passes when all-F forms by PILOT_MAX_STEP; the earliest
    formation wins, ties to the smaller rate; writes lr.txt ('none' when none passes)"""
    md = ["## Recall protocol: pilot\n",
          f"All-F, seed 1, one run per learning rate. A rate passes when the run's F formation step is ≤ {PILOT_MAX_STEP} "
          "(RECALL_PROTOCOL.md); the grid takes the passing rate with the earliest formation (ties: the smaller).\n",
          "| learning rate | F formation step | class | far-bin accuracy at the end | best F head, far bin, at the end | final train loss |",
          "|---|---|---|---|---|---|"]
    rows = []
    for c in sorted(runs, key=lambda c: float(c.split("_lr")[-1]) if "_lr" in c else 0):
        m = re.match(r"F_lr(.+)$", c)
        if not m:
            continue
        r = runs[c][0]
        rows.append((float(m.group(1)), m.group(1), r.formation()))
        md.append(f"| {m.group(1)} | {fmt(r.formation(), '{}')} | {r.klass()} | {r.acc(r.far)[-1]:.2f} | {fmt(r.best_f_far()[-1])} | {fmt(r.final_loss(), '{:.3f}')} |")
    passing = sorted((s, lr, text) for lr, text, s in rows if s is not None and s <= PILOT_MAX_STEP)
    choice = passing[0][2] if passing else "none"
    md.append("")
    md.append(f"Choice: **{choice}**" + ("" if passing else " (no rate passes: the protocol changes the task, not the rules)") + ".\n")
    runlog.write_text(os.path.join(out, "lr.txt"), choice + "\n")
    plot_bins(plt, runs, sorted(runs), out)
    return md


def finding1(runs, out, plt, md):
    configs = [c for c in F1_CONFIGS if c in runs]
    if not configs:
        return
    rs0 = runs[configs[0]][0]
    md.append("### Finding 1 on the recall task\n")
    md.append("The step at which the far bin's accuracy first reaches 0.9, and the accuracy per bin (" +
              " / ".join(bin_names(rs0.edges)) + ") at equal steps (equal tokens). Mean over seeds, per seed in brackets.\n")
    md.append("| config | runs | first step far bin ≥ 0.9 | " + " | ".join(f"step {s}" for s in F1_STEPS) + " |")
    md.append("|---|---|---|" + "---|" * len(F1_STEPS))
    for c in configs:
        rs = runs[c]
        cells = []
        for s in F1_STEPS:
            per = [r.acc_at_step(s) for r in rs]
            cells.append(" / ".join(seeds([p[b] if p else None for p in per]) for b in range(rs0.n_bins)))
        md.append(f"| {c} | {len(rs)} | {seeds([r.first_reach(r.far, 0.9) for r in rs], '{:.0f}')} | " + " | ".join(cells) + " |")
    md.append("")
    plot_bins(plt, runs, configs, out)


def report(runs, out, name, plt, jt_test):
    """the markdown of one recall folder's runs ({config: [RecallRun per seed]}: report.py's
    load_runs); writes its plots (and the pilot's lr.txt) into out"""
    if not runs:
        return None
    runlog.out_folder(out, "--out", [])
    if name.endswith("_pilot"):
        return pilot(runs, out, plt)
    md = [f"## Recall protocol: `{name}`\n", f"Runs: {sum(len(v) for v in runs.values())} complete logs in {len(runs)} configs.\n"]
    if name.endswith("_f1"):
        finding1(runs, out, plt, md)
        return md
    grid = [c for c in ["F"] + [f"SSSF_w{w}" for w in GRID_WINDOWS] if c in runs]
    extra = [c for c in INTERVENTIONS if c in runs] + sorted(c for c in runs if c not in grid and c not in INTERVENTIONS)
    md.append("### Finding 2: Large-Window Laziness\n")
    md.append("F formation step: the first eval at which the far bin (distances beyond every window) has accuracy > 0.5 and "
              "an F-layer head scores > 0.5 there, both still at the next two evals ('-': never, censored at the end). "
              "Classes: formed / retrieves otherwise (some bin > 0.5 at the end, no F formation) / learned nothing. "
              "S formation: the first eval an S head scores > 0.5 in a bin wholly inside its window. The last columns: "
              "the far bin's accuracy at the end with every F, or every S, layer's mixer output replaced by its mean "
              "(which layers answer the far bin).\n")
    if grid:
        config_table(runs, grid, md)
    v, lines = verdict(runs, jt_test)
    md += lines
    if extra:
        md.append("#### Interventions and other configs (outside the test)\n")
        config_table(runs, extra, md)
    plot_bins(plt, runs, grid + extra, out)
    plot_km(plt, runs, grid + extra, out)
    plot_ablation(plt, runs, grid + extra, out)
    return md
