# common.sh — sourced by the finding scripts (f1_emergence.sh, f2_laziness.sh, f3_nope.sh): the
# model sizes, the data, and run_config, which trains one config for every seed, skipping runs
# whose log is complete. Settings come from the environment:
#
#   SIZE      mini (default: C 512, L 8, H 8, T 1024, B 32; dev/experiments/README.md), small (C 256, L 8, H 4,
#             T 1024, B 32: the second model size), tiny (C 32, L 4, H 2, T 64, B 4: the CPU test),
#             t4096 (the mini model at T 4096, B 8: the same tokens a step; finding 2 where the
#             windows lie well below the needle distances);
#             at T 1024: 30 needles per 1000 tokens (31 a sequence, the most that 1-symbol keys
#             over 64 symbols allow: they differ within a sequence) and 128 queries a sequence;
#             the calibration that chose these and the learning rate is in dev/experiments/README.md;
#             at t4096: 256 needle symbols (30 needles per 1000 tokens need 123 distinct keys a
#             sequence) and 496 queries: 0.082 questions a token as at mini (needle_share measures it);
#             its evals run the lengths 2T and 4T (16384 tokens: most of an eval's cost) only every
#             STEPS/4 steps and at the end (--eval-long-every), the lengths up to T at every eval;
#             t2048 (the mini model at T 2048, B 16; 128 symbols, 248 queries, the same scaling): the
#             longest T at which all-F learned retrieval well inside 4000 steps (the t4096
#             calibration, dev/experiments/README.md), where f2_laziness.sh runs its grid at W 32, 128, 512;
#             recall (the mini model on the recall task, dev/experiments/RECALL_PROTOCOL.md): 64
#             one-token key/value pairs a sequence over 256 symbols, query distances uniform on
#             [4, 1022] (amendment 1; log-uniform before it, whose pilot logs are recall_a0_pilot/),
#             WSD (warmup 100 steps, the last 10% decaying), lr RECALL_LR (the pilot's
#             choice), the recall eval on 64 held-out sequences with layer ablations every 4th eval,
#             the needle grid (4 samples a cell, 2T and 4T every STEPS/4) as the transfer check
#   STEPS     optimizer steps per run (default 4000 = 131M tokens at mini or small; the protocol
#             allows 5 minutes of H100 per run)
#   SEEDS     seeds per config (default "1 2"; "1 2 3 4 5" at t4096)
#   DATA      a text file read as bytes (default dev/experiments/data/gcide.txt, made by
#             prepare_text.sh), or "builtin" for the built-in text stream
#   TRAINER   default ./train_hybrid (./train_cpu works for tiny runs)
#   LOGDIR    default dev/experiments/logs; logs go to LOGDIR/SIZE/NAME.sSEED.jsonl.gz
#   LEVER     a name for runs off the protocol (required at mini and small when STEPS, EXTRA or DATA
#             differ from the defaults; e.g. LEVER=n8000 with STEPS=8000): their logs go to
#             LOGDIR/SIZE_LEVER, so report.py tables them apart from the protocol's runs
#   DEADLINE  seconds since the script started after which no new run starts (default: none); a
#             run stopped by SIGTERM/SIGINT (e.g. `timeout`) leaves its checkpoint and resumes
#             from it the next time
#   EXTRA     more trainer flags for every run (e.g. needle tuning: "--needle-density 32"); a flag
#             the size or the grid already gives is an error (the trainers refuse a flag given twice)
#   EVAL_EVERY, EVAL_EARLY  the needle evals' period and early span (default STEPS/40 and STEPS/4)
#   CKPT_EVERY  checkpoint period of a run in steps (default 500)
#   GPUS      e.g. "0 1": the seeds of a config run side by side, one per GPU; "0 0": two at a time on
#             GPU 0 (default: one at a time)
#   ONLY      a regex: only the configs whose name it matches (e.g. ONLY=F for the emergence check
#             the protocol asks for first, ONLY='SSSF_w(32|512)')
#   PROGRESS  seconds between the progress lines of a training run (its last step line; default 60)
#
# A run: NAME.sSEED.jsonl while it trains, with checkpoint NAME.sSEED.ckpt every CKPT_EVERY steps; when
# the trainer exits 0 the log is gzipped to NAME.sSEED.jsonl.gz (complete: skipped from then on)
# and the checkpoint deleted. A log without a checkpoint (a run that died before its first save)
# starts over. A run that fails (not a signal) is reported and the grid goes on; the grid then exits
# 1 naming how many failed.
set -euo pipefail

SIZE=${SIZE:-mini}
STEPS=${STEPS:-4000}
case "$SIZE" in t4096 | t2048) SEEDS=${SEEDS:-"1 2 3 4 5"} ;; recall) SEEDS=${SEEDS:-"1 2 3 4 5 6"} ;; *) SEEDS=${SEEDS:-"1 2"} ;; esac
RECALL_LR=${RECALL_LR:-}  # the recall grid's learning rate: the pilot's choice (RECALL_PROTOCOL.md)
PROTOCOL_DATA=dev/experiments/data/gcide.txt
DATA=${DATA:-$PROTOCOL_DATA}
TRAINER=${TRAINER:-./train_hybrid}
LOGDIR=${LOGDIR:-dev/experiments/logs}
DEADLINE=${DEADLINE:-0}
EXTRA=${EXTRA:-}
CKPT_EVERY=${CKPT_EVERY:-500}
ONLY=${ONLY:-}
LEVER=${LEVER:-}
PROGRESS=${PROGRESS:-60}
EXP_START=${EXP_START:-$(date +%s)}  # all.sh shares its start (and so DEADLINE) with the three grids

case "$SIZE" in
    mini)  MODEL=(-C 512 -L 8 -H 8 -T 1024 -B 32 -l 5e-4 --needle-density 30 --needle-queries 128) ;;
    small) MODEL=(-C 256 -L 8 -H 4 -T 1024 -B 32 -l 1e-3 --needle-density 30 --needle-queries 128) ;;
    t4096) MODEL=(-C 512 -L 8 -H 8 -T 4096 -B 8 -l 5e-4 --needle-density 30 --needle-queries 496 --needle-symbols 256
                  --eval-long-every $(( STEPS / 4 ))) ;;
    t2048) MODEL=(-C 512 -L 8 -H 8 -T 2048 -B 16 -l 5e-4 --needle-density 30 --needle-queries 248 --needle-symbols 128
                  --eval-long-every $(( STEPS / 4 ))) ;;
    tiny)  MODEL=(-C 32 -L 4 -H 2 -T 64 -B 4 -l 3e-3 --eval-samples 2) ;;
    recall | recall_tiny)
        if [ -z "$RECALL_LR" ]; then echo "error: SIZE=$SIZE needs RECALL_LR (the pilot's learning rate, RECALL_PROTOCOL.md)" >&2; exit 1; fi
        MODEL=(-l "$RECALL_LR" --needle-kind recall --schedule wsd --decay-frac 0.1 --warmup 100
               --eval-long-every $(( STEPS / 4 )) --ablate-every 4)
        if [ "$SIZE" = recall ]; then  # the task of RECALL_PROTOCOL.md's amendment 1: distances uniform
            MODEL+=(-C 512 -L 8 -H 8 -T 1024 -B 32 --needle-symbols 256 --recall-keys 64 --recall-dist uniform --recall-eval 64 --eval-samples 4)
        else MODEL+=(-C 32 -L 4 -H 2 -T 64 -B 4 --recall-keys 4 --recall-eval 4 --eval-samples 1); fi ;;
    *) echo "error: SIZE=$SIZE: expected mini, small, t4096, t2048, recall, recall_tiny or tiny" >&2; exit 1 ;;
esac
if [ "$SIZE" != tiny ] && [ "$SIZE" != recall_tiny ] && [ -z "$LEVER" ] && { [ "$STEPS" != 4000 ] || [ -n "$EXTRA" ] || [ "$DATA" != "$PROTOCOL_DATA" ] || [ -n "${EVAL_EVERY:-}${EVAL_EARLY:-}" ]; }; then
    echo "error: STEPS=$STEPS EXTRA='$EXTRA' DATA=$DATA EVAL_EVERY=${EVAL_EVERY:-} EVAL_EARLY=${EVAL_EARLY:-} is off the protocol (4000 steps, no EXTRA, gcide.txt, the evals' default period): name these runs with LEVER=... so they log apart" >&2
    exit 1
fi
RUNS=$SIZE${LEVER:+_$LEVER}  # the folder of LOGDIR the runs log to
if [ "$DATA" = builtin ]; then DATA_FLAGS=()
elif [ -s "$DATA" ]; then DATA_FLAGS=(--bytes -i "$DATA")
else echo "error: DATA=$DATA: no such file (run bash dev/experiments/prepare_text.sh, or DATA=builtin)" >&2; exit 1; fi
[ -x "$TRAINER" ] || { echo "error: TRAINER=$TRAINER: not built (make)" >&2; exit 1; }
# every step of training carries needles; the symbol-needle grid and retrieval heads every STEPS/40
# steps and 4 times as often through the first quarter, where retrieval emerges (70 evals a run;
# no text-needle grid: symbol-trained models score ~0 there); val 10 times
EVERY=$(( STEPS / 40 > 0 ? STEPS / 40 : 1 ))
VAL_EVERY=$(( STEPS / 10 > 0 ? STEPS / 10 : 1 ))
COMMON=(-n "$STEPS" --needle-frac 1 --eval-every "${EVAL_EVERY:-$EVERY}" --eval-early "${EVAL_EARLY:-$(( STEPS / 4 ))}" --eval-text 0
        -v "$VAL_EVERY" -V 8)
mkdir -p "$LOGDIR/$RUNS"

# A signal to the grid (timeout, Ctrl-C, kill) is passed on to the trainers it runs, which finish
# their step, write their checkpoint and exit 128 + signal; the grid waits for them and then exits
# with that status, so whoever stopped it finds the checkpoints complete. A background shell (the
# GPUS case) starts without the traps: run_seed sets them again.
forward_signals() {
    trap 'kill -TERM $(jobs -p) 2> /dev/null || true' TERM
    trap 'kill -INT $(jobs -p) 2> /dev/null || true' INT
}
forward_signals

# Runs that failed (not stopped by a signal); the grid's exit status says so
RUNS_FAILED=0
grid_end() {
    local rc=$?
    if [ $rc -eq 0 ] && [ "$RUNS_FAILED" -gt 0 ]; then
        echo "error: $RUNS_FAILED run(s) failed (the 'stopped' lines above; each run's .out is kept)" >&2
        exit 1
    fi
}
trap grid_end EXIT

# progress OUT PID: every PROGRESS seconds while PID runs, its last step line from OUT (the sleep
# writes nowhere, so a killed ticker leaves nothing holding the grid's stdout)
progress() {
    local line
    while sleep "$PROGRESS" > /dev/null 2>&1 && kill -0 "$2" 2> /dev/null; do
        line=$(tail -n 40 "$1" 2> /dev/null | grep '^step *[0-9]*/' | tail -n 1)
        if [ -n "$line" ]; then echo "  $(basename "${1%.out}"): $line"; fi
    done
}

# wait_for PID: its exit status, waiting on after a signal interrupted the wait (the trap above ran)
wait_for() {
    local rc=0
    wait "$1" || rc=$?
    while [ $rc -gt 128 ] && kill -0 "$1" 2> /dev/null; do rc=0; wait "$1" || rc=$?; done
    return $rc
}

# run_seed NAME SEED GPU FLAGS...: one run (GPU: the CUDA device it sees, "" = the default one).
# Returns the trainer's exit status (0 when skipped).
run_seed() {
    local name=$1 seed=$2 gpu=$3; shift 3
    local base="$LOGDIR/$RUNS/$name.s$seed"
    if [ -s "$base.jsonl.gz" ]; then echo "skip $base: complete"; return 0; fi
    if [ "$DEADLINE" -gt 0 ] && [ $(( $(date +%s) - EXP_START )) -ge "$DEADLINE" ]; then
        echo "deadline: $base not started"; return 0
    fi
    local resume=()
    if [ -s "$base.ckpt" ]; then
        # the trainer cuts the log back to the checkpoint's step s0 (its val and evals run again)
        local s0
        s0=$(od -An -t d4 -j 56 -N 4 "$base.ckpt" | tr -d ' ')
        resume=(-r "$base.ckpt")
        echo "resume $base from step $s0"
    else
        rm -f "$base.jsonl"
        echo "run $base${gpu:+ on GPU $gpu}"
    fi
    local rc=0 on_gpu=()
    if [ -n "$gpu" ]; then on_gpu=(env CUDA_VISIBLE_DEVICES="$gpu"); fi
    forward_signals
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    "${on_gpu[@]}" "$TRAINER" "${MODEL[@]}" "${DATA_FLAGS[@]}" "${COMMON[@]}" -s "$seed" "$@" \
        $EXTRA "${resume[@]}" -o "$base.jsonl" -c "$base.ckpt" --ckpt-every "$CKPT_EVERY" > "$base.out" 2>&1 &
    local pid=$!
    progress "$base.out" $pid &
    local ticker=$!
    wait_for $pid || rc=$?
    kill $ticker 2> /dev/null || true
    wait $ticker 2> /dev/null || true
    if [ $rc -ne 0 ]; then
        echo "stopped $base: exit $rc ($(tail -n 1 "$base.out"))"
        return $rc
    fi
    gzip -9 -f "$base.jsonl"
    rm -f "$base.ckpt" "$base.ckpt.tmp" "$base.ckpt.lock" "$base.out"
    echo "done $base"
}

# run_config NAME FLAGS...: trains NAME (the config's flags) once per seed; with GPUS="0 1" the seeds
# run side by side, one per GPU. A run stopped by a signal stops the whole grid (its checkpoint
# resumes it); a run that failed otherwise is reported and the grid goes on.
run_config() {
    local name=$1; shift
    if [ -n "$ONLY" ] && ! [[ "$name" =~ ^($ONLY)$ ]]; then return 0; fi
    local gpus=(${GPUS:-}) seed i=0 pids=() rc=0
    if [ ${#gpus[@]} -le 1 ]; then
        for seed in $SEEDS; do
            rc=0
            run_seed "$name" "$seed" "${gpus[0]:-}" "$@" || rc=$?
            if [ $rc -ge 128 ]; then exit $rc; fi
            if [ $rc -ne 0 ]; then RUNS_FAILED=$((RUNS_FAILED + 1)); fi
        done
        return 0
    fi
    local n_seeds
    n_seeds=$(echo $SEEDS | wc -w)
    for seed in $SEEDS; do
        run_seed "$name" "$seed" "${gpus[i % ${#gpus[@]}]}" "$@" &
        pids+=($!)
        i=$((i + 1))
        if [ ${#pids[@]} -eq ${#gpus[@]} ] || [ $i -eq "$n_seeds" ]; then
            for p in "${pids[@]}"; do
                local r=0
                wait_for "$p" || r=$?
                if [ $r -ne 0 ] && [ $r -lt 128 ]; then RUNS_FAILED=$((RUNS_FAILED + 1)); fi
                if [ $r -gt $rc ]; then rc=$r; fi
            done
            if [ $rc -ge 128 ]; then exit $rc; fi
            pids=()
        fi
    done
}
