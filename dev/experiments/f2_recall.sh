#!/usr/bin/env bash
# f2_recall.sh — finding 2 on the recall task, by the preregistered protocol
# (dev/experiments/RECALL_PROTOCOL.md: committed before any of its runs). Settings: common.sh.
#
#     PHASE=pilot bash dev/experiments/f2_recall.sh          # all-F at lr 5e-4, 1e-3, 2e-3, seed 1, 1500 steps
#     PHASE=grid bash dev/experiments/f2_recall.sh           # F, SSSF W 32, 512, 128; seeds 1-6, 4000 steps
#     PHASE=interventions bash dev/experiments/f2_recall.sh  # W 512 S frozen, W 512 and W 32 far-only loss
#     PHASE=f1 bash dev/experiments/f2_recall.sh             # finding 1: F, W 32, W 512, RRRF gla; seeds 1-3, 12000 steps
#     DEADLINE=540 GPUS="0 0 0" PHASE=grid bash ...          # in pieces, three runs side by side on one GPU
#
# The grid, its interventions and f1 run at the learning rate the pilot's rule chose: report.py
# writes it to dev/experiments/results/recall_pilot/lr.txt (<SIZE>_pilot) from the pilot's logs (RECALL_LR
# overrides it only for runs off the protocol, with a LEVER name); every phase logs to its own folder of dev/experiments/logs:
# recall_pilot/, recall/, recall_f1/. The grid runs the ends of the window range first (W 32 and
# W 512), then W 128; a stopped grid resumes where it stopped (common.sh).
cd "$(dirname "$0")/../.."
PHASE=${PHASE:-grid}
SIZE=${SIZE:-recall}
export SIZE
pilot_lr=dev/experiments/results/${SIZE}_pilot/lr.txt  # report.py writes it from the pilot logs of this size
if [ "$PHASE" != pilot ] && [ -z "${RECALL_LR:-}" ]; then
    [ -s "$pilot_lr" ] || { echo "error: PHASE=$PHASE: no $pilot_lr: run PHASE=pilot and python3 dev/experiments/report.py first (RECALL_PROTOCOL.md)" >&2; exit 1; }
    RECALL_LR=$(cat "$pilot_lr")
    [[ "$RECALL_LR" =~ ^[0-9.e-]+$ ]] || { echo "error: $pilot_lr holds '$RECALL_LR', expected a learning rate (the pilot found none: see its results.md)" >&2; exit 1; }
elif [ "$PHASE" != pilot ] && [ -z "${LEVER:-}" ] && [ "$SIZE" = recall ]; then
    echo "error: RECALL_LR=$RECALL_LR by hand is off the protocol (the grid takes the pilot's lr): name these runs with LEVER=..." >&2; exit 1
fi
case "$PHASE" in
    pilot)  # the three learning rates side by side (one GPU holds them), each in its own shell
        pids=()
        for lr in 5e-4 1e-3 2e-3; do
            (RECALL_LR=$lr LEVER=pilot STEPS=${STEPS:-1500} SEEDS=${SEEDS:-1} && source dev/experiments/common.sh && run_config "F_lr$lr" -p F) &
            pids+=($!)
        done
        trap 'kill -TERM "${pids[@]}" 2> /dev/null || true' TERM INT
        rc=0
        for p in "${pids[@]}"; do  # waiting on after a signal interrupted the wait (the trap passed it on)
            r=0; wait "$p" || r=$?
            while [ $r -gt 128 ] && kill -0 "$p" 2> /dev/null; do r=0; wait "$p" || r=$?; done
            [ $r -eq 0 ] || rc=$r
        done
        exit $rc ;;
    grid)
        source dev/experiments/common.sh
        run_config F -p F
        for w in 32 512 128; do run_config "SSSF_w$w" -p SSSF -w "$w"; done ;;
    interventions)
        source dev/experiments/common.sh
        run_config SSSF_w512_freezeS -p SSSF -w 512 --freeze S
        run_config SSSF_w512_far512 -p SSSF -w 512 --answer-min-dist 512
        run_config SSSF_w32_far32 -p SSSF -w 32 --answer-min-dist 32 ;;
    f1)
        LEVER=${LEVER:-f1} STEPS=${STEPS:-12000} SEEDS=${SEEDS:-"1 2 3"}
        source dev/experiments/common.sh
        run_config F -p F
        for w in 32 512; do run_config "SSSF_w$w" -p SSSF -w "$w"; done
        run_config RRRF_gla -p RRRF --mixer gla ;;
    *) echo "error: PHASE=$PHASE: expected pilot, grid, interventions or f1" >&2; exit 1 ;;
esac
