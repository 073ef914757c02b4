#!/usr/bin/env bash
# f1_emergence.sh — finding 1 (dev/experiments/README.md): efficient-attention design changes how fast retrieval
# emerges, and hybrids converge with enough training. Configs: all-F, SSSF with W 32 / 128 / 512,
# RRRF with Gated DeltaNet and with gla; every seed of SEEDS. Settings: common.sh (SIZE=small for the
# second model size). Resumable: complete runs are skipped.
#
#     bash dev/experiments/f1_emergence.sh
#     SIZE=small bash dev/experiments/f1_emergence.sh
cd "$(dirname "$0")/../.."
source dev/experiments/common.sh
run_config F -p F
run_config SSSF_w32 -p SSSF -w 32
run_config SSSF_w128 -p SSSF -w 128
run_config SSSF_w512 -p SSSF -w 512
run_config RRRF_gdn -p RRRF --mixer gdn
run_config RRRF_gla -p RRRF --mixer gla
