#!/usr/bin/env bash
# cpu_probe.sh — finding 1's Gated DeltaNet hybrid that did not retrieve at mini, checked on the CPU fp32
# reference (train_cpu: the recurrence token by token as README.md's model section writes it; no GPU kernel, no
# bf16): all-F, RF with gla and RF with Gated DeltaNet, 2 layers, C 64, T 128, the built-in text
# with dense symbol needles, 6000 steps (about 9 minutes a run on 2 cores). Each run's log goes to
# OUT/<name>.jsonl.gz; the last line of each run's needle eval is printed. ONLY (a regex of the names
# F, RF_gla, RF_gdn) picks runs; a longer schedule (STEPS) is a lever: give it its own OUT. EXTRA adds
# trainer flags the probe does not give (a flag given twice is an error); EVAL_SAMPLES=1 for a quick check.
#
#     bash dev/experiments/cpu_probe.sh                   # logs to dev/experiments/probes/cpu/
#     STEPS=12000 ONLY=RF_gdn OUT=dev/experiments/probes/cpu_n12000 bash dev/experiments/cpu_probe.sh
#     STEPS=20 OUT=/tmp/p bash dev/experiments/cpu_probe.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-6000}
OUT=${OUT:-dev/experiments/probes/cpu}
ONLY=${ONLY:-}
EXTRA=${EXTRA:-}
EVAL_SAMPLES=${EVAL_SAMPLES:-8}
[ -x ./train_cpu ] || { echo "error: ./train_cpu: not built (make train_cpu)" >&2; exit 1; }
mkdir -p "$OUT"

# probe NAME FLAGS...: one run of the model FLAGS pick; its output is kept only if it fails
probe() {
    local name=$1; shift
    if [ -n "$ONLY" ] && ! [[ "$name" =~ ^($ONLY)$ ]]; then return 0; fi
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    if ! ./train_cpu "$@" -L 2 -C 64 -H 2 -T 128 -B 8 --needle-frac 1 --needle-density 30 --needle-queries 32 \
        -n "$STEPS" -l 3e-3 -v 1000 --eval-every 500 --eval-samples "$EVAL_SAMPLES" --eval-text 0 -o "$OUT/$name.jsonl" -c "" $EXTRA > "$OUT/$name.out" 2>&1; then
        echo "error: $name: train_cpu failed ($(tail -n 1 "$OUT/$name.out")); output in $OUT/$name.out" >&2
        exit 1
    fi
    echo "$name: $(grep 'needle acc' "$OUT/$name.out" | tail -n 1)"
    gzip -9 -f "$OUT/$name.jsonl"
    rm "$OUT/$name.out"
}
probe F -p F
probe RF_gla -p RF --mixer gla
probe RF_gdn -p RF --mixer gdn
