#!/usr/bin/env python3
"""kernel_breakdown.py — where a training step's GPU time goes, per kernel, from Nsight Compute.

    ncu --metrics gpu__time_duration.sum --csv --print-units base \\
        ./dev/bench/bench_step -c F -n 1 > /tmp/F.csv
    python3 dev/bench/kernel_breakdown.py /tmp/F.csv --steps 2

bench_step -n 1 runs two steps (one warm-up, one timed), hence --steps 2: every kernel's summed time
is divided by it. Prints one row per kernel name (template arguments dropped), largest first, with
ms per step, share, and launches per step; then the same time by stage of the step (matmuls,
attention, recurrence, norms, cross-entropy, optimizer, ...). With --step-ms (bench_step's ms/step
without the profiler) the stage table ends with the gaps: step time not covered by any kernel
(launches, host work, synchronisation). Standard library only.
"""
import argparse
import csv
import re
import sys
from collections import defaultdict

# stage of the step for a kernel name, first match wins (cuBLAS's kernels: gemm / nvjet / xmma / cutlass)
STAGES = [
    ("matmuls (cuBLAS)", r"gemm|nvjet|xmma|cutlass|splitKreduce|Kernel2"),
    ("attention", r"flash|attention"),
    ("recurrence", r"delta"),
    ("R layer: conv, L2 norms, gates", r"conv|silu_backward|l2norm|gates"),
    ("norms (RMSNorm, residual adds)", r"rmsnorm|sum_slices"),
    ("RoPE", r"rope"),
    ("SwiGLU", r"swiglu"),
    ("cross-entropy", r"crossentropy|gather_rows"),
    ("embedding", r"encoder"),
    ("optimizer (AdamW, grad norm)", r"adamw|sumsq"),
]


def stage_of(kernel):
    for name, pattern in STAGES:
        if re.search(pattern, kernel):
            return name
    return "other"


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
    ap.add_argument("--step-ms", type=float, default=0.0, help="the step's wall time without the profiler: adds the gaps row")
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
    stage = defaultdict(float)
    for k, t in total.items():
        stage[stage_of(k)] += t / a.steps
    whole = max(a.step_ms, step)
    print(f"\n| {'stage':<32} | ms/step | share |")
    print(f"|{'-' * 34}|---------|-------|")
    for k, t in sorted(stage.items(), key=lambda kv: -kv[1]):
        print(f"| {k:<32} | {t:7.2f} | {100 * t / whole:4.1f}% |")
    if a.step_ms > 0:
        gap = a.step_ms - step
        print(f"| {'gaps (step - kernels)':<32} | {gap:7.2f} | {100 * gap / whole:4.1f}% |")
        print(f"| {'step (bench_step)':<32} | {a.step_ms:7.2f} |       |")


if __name__ == "__main__":
    main()
