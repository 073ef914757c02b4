#!/usr/bin/env bash
# f2_laziness.sh — finding 2 (dev/experiments/README.md), "Large-Window Laziness": the larger the SWA window, the
# later the full-attention layers form retrieval heads. The SSSF runs of f1_emergence.sh (W 32, 128,
# 512; reused, not re-run) plus W 64 and 256, so the step where the best F-layer head first scores
# over 0.5 can be read against W. Settings: common.sh.
#
#     bash dev/experiments/f2_laziness.sh
cd "$(dirname "$0")/../.."
source dev/experiments/common.sh
for w in 32 64 128 256 512; do run_config "SSSF_w$w" -p SSSF -w "$w"; done
