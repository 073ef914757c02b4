#!/usr/bin/env python3
"""plot.py — PNG plots of train_hybrid's JSONL logs (matplotlib; Debian: apt-get install python3-matplotlib).

    python3 dev/plot.py train_cpu.jsonl                          # -> train_cpu_plots/*.png
    python3 dev/plot.py w16.jsonl w64.jsonl --labels W16,W64 -o plots --step 500

Writes, into -o (default: <first log's name>_plots/, next to that log):
    loss.png             train loss (smoothed) and val loss vs step, one colour per log
    needle_acc.png       needle exact-match accuracy (mean over depths) vs step, one panel per length
    needle_grid.png      accuracy heatmap, length x depth, at --step (default: the last eval), per log
    retrieval_heads.png  retrieval score of every head of every attention layer (layer x head) at up
                         to six eval steps of the first log, those around the emergence included
    retrieval_best.png   the best F-layer and S-layer retrieval score vs step, per log
"""
import argparse
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker
except ImportError:
    sys.exit(f"error: plot.py needs matplotlib, which {sys.executable} does not have: "
             "apt-get install python3-matplotlib (Debian/Ubuntu) and run it with /usr/bin/python3")

import runlog  # noqa: E402  (dev/runlog.py: the log reader and checks, the output rule)


def read_log(path):
    """(train steps, val steps, needle evals) of one JSONL log (optionally .gz), every record checked
    (runlog.read); steps whose loss was not finite (null) are left out of the curves"""
    log = runlog.read(path)
    train = [(s, r["loss"]) for s, r in log.train if r["loss"] is not None]
    val = [(s, v) for s, v in log.val if v is not None]
    return train, val, log.evals


def smooth(ys, k):
    """running mean over the last k points"""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= k:
            acc -= ys[i - k]
        out.append(acc / min(i + 1, k))
    return out


def mean_over_depths(needle):
    return [sum(row) / len(row) for row in needle["acc"]]


def plot_loss(logs, labels, out):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, ((train, val, _), label) in enumerate(zip(logs, labels)):
        c = f"C{i}"
        if train:
            xs, ys = zip(*train)
            ax.plot(xs, smooth(list(ys), 20), color=c, alpha=0.5, label=f"{label} train (mean of 20)")
        if val:
            xs, ys = zip(*val)
            ax.plot(xs, ys, "o-", color=c, label=f"{label} val (text only, no needles)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats, log scale)")
    ax.set_yscale("log")
    # labels on the minor ticks too: a loss from 5.8 to 0.7 spans one decade, with one major label
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    runlog.save_figure(fig, plt, out)


def plot_needle_acc(logs, labels, out):
    first = next((ev for _, _, ev in logs if ev), None)
    if first is None:
        return False
    lengths = first[0][1]["lengths"]
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.2 * len(lengths), 3.4), sharey=True, squeeze=False)
    for j, length in enumerate(lengths):
        ax = axes[0][j]
        for i, ((_, _, evals), label) in enumerate(zip(logs, labels)):
            pts = [(s, mean_over_depths(n)[n["lengths"].index(length)]) for s, n in evals if length in n["lengths"]]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "o-", ms=3, color=f"C{i}", label=label)
        rl = first[0][1]["retrieval_len"]
        ax.set_title(f"length {length}" + (" (= T)" if length == rl else f" ({length / rl:g} T)"), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("needle exact match (mean over depths)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    runlog.save_figure(fig, plt, out)
    return True


def eval_at(evals, step):
    """the eval at step (default: the last one)"""
    if step is None:
        return evals[-1]
    for s, n in evals:
        if s == step:
            return s, n
    raise runlog.LogError(f"--step {step}: no needle eval at that step (have {[s for s, _ in evals]})")


def save_heatmaps(fig, axes, im, what, out):
    """one colour bar for a row of heatmap panels, then the file"""
    fig.colorbar(im, ax=axes[0].tolist(), label=what)
    runlog.save_figure(fig, plt, out, bbox_inches="tight")


def plot_needle_grid(logs, labels, step, out):
    panels = [(label, eval_at(ev, step)) for (_, _, ev), label in zip(logs, labels) if ev]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (label, (s, n)) in zip(axes[0], panels):
        im = ax.imshow(n["acc"], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(n["depths"])), [f"{d:g}" for d in n["depths"]])
        ax.set_yticks(range(len(n["lengths"])), [str(x) for x in n["lengths"]])
        for li, row in enumerate(n["acc"]):
            for di, a in enumerate(row):
                ax.text(di, li, f"{a:.2f}", ha="center", va="center", fontsize=7, color="w" if a < 0.5 else "k")
        ax.set_xlabel("needle depth")
        ax.set_ylabel("length")
        ax.set_title(f"{label}, step {s}", fontsize=9)
    save_heatmaps(fig, axes, im, "exact match", out)
    return True


def plot_retrieval_heads(evals, label, out):
    if not evals or not evals[0][1]["attn_layers"]:  # no evals, or no attention layers (all R)
        return False
    # the evals around the first one whose best head scores > 0.5 (the emergence), then evenly spaced
    best = [max((max(a["score"]) for a in n["attn_layers"]), default=0) for _, n in evals]
    cross = next((i for i, b in enumerate(best) if b > 0.5), None)
    picks = {0, len(evals) - 1}
    if cross is not None:
        picks |= {max(cross - 1, 0), cross, min(cross + 1, len(evals) - 1)}
    for i in range(1, 6):
        if len(picks) < 6:
            picks.add(round(i * (len(evals) - 1) / 5))
    picks = sorted(picks)
    chosen = [evals[i] for i in picks]
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.6 * len(chosen), 3.6), squeeze=False)
    for k, (ax, (s, n)) in enumerate(zip(axes[0], chosen)):
        layers = n["attn_layers"]
        im = ax.imshow([a["score"] for a in layers], vmin=0, vmax=1, cmap="magma", aspect="auto")
        ax.set_yticks(range(len(layers)), [f"l{a['layer']} {a['type']}" for a in layers] if k == 0 else [], fontsize=7)
        ax.set_xticks(range(len(layers[0]["score"])), [f"h{h}" for h in range(len(layers[0]["score"]))], fontsize=7)
        ax.set_title(f"step {s}", fontsize=9)
    fig.suptitle(f"{label}: retrieval score per head (length {chosen[0][1]['retrieval_len']})", fontsize=10)
    save_heatmaps(fig, axes, im, "retrieval score", out)
    return True


def plot_retrieval_best(logs, labels, out):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for i, ((_, _, evals), label) in enumerate(zip(logs, labels)):
        for kind, style in (("F", "o-"), ("S", "x--")):
            pts = [(s, max((max(a["score"]) for a in n["attn_layers"] if a["type"] == kind), default=None)) for s, n in evals]
            pts = [(s, b) for s, b in pts if b is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, ms=3, color=f"C{i}", label=f"{label} best {kind} head")
                drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.axhline(0.5, color="gray", lw=0.8, ls=":", label="0.5: a retrieval head")
    ax.set_xlabel("step")
    ax.set_ylabel("retrieval score")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    runlog.save_figure(fig, plt, out)
    return True


def main():
    p = argparse.ArgumentParser(description="PNG plots of train_hybrid JSONL logs")
    p.add_argument("logs", nargs="+", help="JSONL logs (train_hybrid -o), plain or .gz")
    p.add_argument("-o", "--out", help="output folder (default: <first log's name>_plots/, next to that log)")
    p.add_argument("--labels", help="comma-separated names of the logs (default: file names)")
    p.add_argument("--step", type=int, help="eval step of the length x depth heatmap (default: the last eval)")
    a = p.parse_args()
    labels = a.labels.split(",") if a.labels else [os.path.basename(x).split(".")[0] for x in a.logs]
    if len(labels) != len(a.logs):
        raise runlog.LogError(f"--labels has {len(labels)} names for {len(a.logs)} logs")
    logs = [read_log(x) for x in a.logs]
    if a.out is None:  # train_cpu.jsonl -> train_cpu_plots/ in the same folder
        name = os.path.basename(a.logs[0])
        for ext in (".gz", ".jsonl"):
            name = name[: -len(ext)] if name.endswith(ext) else name
        a.out = os.path.join(os.path.dirname(a.logs[0]), name + "_plots")
    runlog.out_folder(a.out, "-o", a.logs)
    written = []
    plot_loss(logs, labels, os.path.join(a.out, "loss.png"))
    written.append("loss.png")
    if plot_needle_acc(logs, labels, os.path.join(a.out, "needle_acc.png")):
        written.append("needle_acc.png")
    if plot_needle_grid(logs, labels, a.step, os.path.join(a.out, "needle_grid.png")):
        written.append("needle_grid.png")
    if plot_retrieval_heads(logs[0][2], labels[0], os.path.join(a.out, "retrieval_heads.png")):
        written.append("retrieval_heads.png")
    if plot_retrieval_best(logs, labels, os.path.join(a.out, "retrieval_best.png")):
        written.append("retrieval_best.png")
    print(f"wrote {', '.join(written)} to {a.out}/")


if __name__ == "__main__":
    runlog.run_tool(main)
