#!/usr/bin/env python3
"""kernel_breakdown.py — where a training step's GPU time goes, per kernel, from Nsight Compute.

    ncu --metrics gpu__time_duration.sum --csv --print-units base \\
        ./dev/bench/bench_step -c F -n 1 > /tmp/F.csv
    python3 dev/bench/kernel_breakdown.py /tmp/F.csv --steps 2

bench_step -n 1 runs two steps (one warm-up, one timed), hence --steps 2: every kernel's summed time
is divided by it. Prints one row per kernel name (template arguments dropped), largest first, with
ms per step, share, and launches per step. Standard library only.
"""
import argparse
import csv
import re
import sys
from collections import defaultdict


def short_name(name):
    # "void flash_forward_kernel<64>(...)" -> "flash_forward_kernel"
    name = re.sub(r"\(.*$", "", name)
    name = re.sub(r"<.*>$", "", name)
    return name.replace("void ", "").strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="ncu --csv output with gpu__time_duration.sum")
    ap.add_argument("--steps", type=float, default=1.0, help="steps the profiled run executed")
    ap.add_argument("--top", type=int, default=25, help="rows to print")
    a = ap.parse_args()
    total = defaultdict(float)
    count = defaultdict(int)
    with open(a.csv, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prints its own log lines before the table
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        k = short_name(row["Kernel Name"])
        total[k] += float(row["Metric Value"].replace(",", "")) * 1e-6  # ns -> ms
        count[k] += 1
    if not total:
        sys.exit(f"{a.csv}: no gpu__time_duration.sum rows (expected ncu --csv output)")
    step = sum(total.values()) / a.steps
    print(f"GPU time per step: {step:.1f} ms (sum of kernel durations)\n")
    print(f"| {'kernel':<44} | ms/step | share | launches/step |")
    print(f"|{'-' * 46}|---------|-------|---------------|")
    for k, t in sorted(total.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"| {k[:44]:<44} | {t / a.steps:7.2f} | {100 * t / a.steps / step:4.1f}% | {count[k] / a.steps:13.0f} |")


if __name__ == "__main__":
    main()
