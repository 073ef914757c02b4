#!/usr/bin/env bash
# f2_laziness.sh — finding 2 (dev/experiments/README.md), "Large-Window Laziness": the larger the SWA window, the
# later the full-attention layers form retrieval heads. The SSSF runs of f1_emergence.sh (W 32, 128,
# 512; reused, not re-run) plus W 64 and 256, so the step where the best F-layer head first scores
# over 0.5 can be read against W. Settings: common.sh.
#
#     bash dev/experiments/f2_laziness.sh
#     SIZE=t4096 DEADLINE=540 bash dev/experiments/f2_laziness.sh   # T 4096, in pieces of 9 minutes
#     SIZE=t2048 DEADLINE=540 bash dev/experiments/f2_laziness.sh   # T 2048: W 32, 512, 128
#
# At SIZE=t4096 the grid is all-F (the reference, and the calibration that must show retrieval well
# inside the run: run ONLY=F first) and SSSF W 64, 1024, 256 (the ends of the range first), 5 seeds
# each; at SIZE=t2048 the same with W 32, 512, 128: the same shares of questions inside the window
# at half the length. A grid stopped at its DEADLINE, or by a signal, resumes where it stopped.
cd "$(dirname "$0")/../.."
source dev/experiments/common.sh
case "$SIZE" in
    t4096) run_config F -p F; windows="64 1024 256" ;;
    t2048) run_config F -p F; windows="32 512 128" ;;
    *) windows="32 64 128 256 512" ;;
esac
for w in $windows; do run_config "SSSF_w$w" -p SSSF -w "$w"; done
