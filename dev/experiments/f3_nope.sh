#!/usr/bin/env bash
# f3_nope.sh — finding 3 (dev/experiments/README.md): NoPE on the full-attention layers only (S layers keep
# RoPE) of a small-window SWA hybrid improves retrieval beyond the training length (the needle grid's
# 2T and 4T) at a negligible cost in short-context val loss. SSSF at W 32 and W 512, F = RoPE
# (f1_emergence.sh's runs, reused) and F = NoPE. Settings: common.sh.
#
#     bash dev/experiments/f3_nope.sh
cd "$(dirname "$0")/../.."
source dev/experiments/common.sh
for w in 32 512; do
    run_config "SSSF_w$w" -p SSSF -w "$w"
    run_config "SSSF_w${w}_fnope" -p SSSF -w "$w" --pos-full nope
done
