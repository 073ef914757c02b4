#!/usr/bin/env bash
# test_multigpu.sh — train_hybrid --gpus 2 (data parallel over NCCL) on a host with 2 GPUs or more;
# skipped with the reason elsewhere.
#   same run:  2 GPUs x B 4 log the losses and gradient norms of 1 GPU x B 4 x -a 2 (the same global
#              batch, the same micro-batches) to 1e-4 relative over 12 steps: only the order and
#              rounding of the gradient sums differ (an all-reduce of two gradients, not an
#              accumulation into one); other micro-batches would differ by percents
#   evals:     rank 0 alone runs the needle evals (steps 0, 6, 12), matching the 1-GPU run's
#   resume:    the 2-GPU run resumed from its step-8 checkpoint (written by rank 0) logs steps 9-12
#              as the uninterrupted 2-GPU run does, to the last digit
#   SIGTERM:   every rank stops after the same step; exit 143, rank 0's checkpoint holds that step
#   log:       the config table names both GPUs; tok/s counts the tokens of both
#   flags:     a bad --gpus / --nodes / --node-rank, or --nodes without --nccl-id: one clear line
#              (these run without a GPU); on a host without a GPU, --gpus 2 exits with the ranks'
#              error instead of hanging
source test/test_lib.sh  # pass, fail, skip, summary, numbers, ckpt_step, wait_logged
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT  # every way out, skips and early failures included
cols() { grep '"loss"' "$1" | sed -e 's/.*"loss": \([^,]*\), .*"grad_norm": \([^,]*\),.*/\1 \2/'; }  # loss, norm per step
# the flags are checked before any GPU is touched: these run everywhere
if [ -x ./train_hybrid ]; then
    for bad in "--gpus 0|flag --gpus: '0' is out of range, expected 1..64" "--nodes 2|--nodes 2: needs --nccl-id FILE" \
               "--nodes 2 --node-rank 2 --nccl-id x|--nodes 2 --node-rank 2: expected 0 <= node-rank < nodes"; do
        args=${bad%%|*}; want=${bad#*|}
        # shellcheck disable=SC2086  # args is a list of flags
        err=$(./train_hybrid $args 2>&1 > /dev/null); rc=$?
        if [ $rc -ne 0 ] && [[ "$err" == "error: $want"* ]]; then pass "train_hybrid $args -> error" "$err"
        else fail "train_hybrid $args -> error" "exit $rc: $err"; fi
    done
fi
# no GPU here: both forked ranks fail, and the parent must exit with their error, not hang
if [ -x ./train_hybrid ] && ! nvidia-smi -L > /dev/null 2>&1; then
    err=$(timeout 60 ./train_hybrid --gpus 2 2>&1 > /dev/null); rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [[ "$err" == *"error: "* ]]; then pass "train_hybrid --gpus 2, no GPU -> error" "exit $rc: $(echo "$err" | head -n 1)"
    else fail "train_hybrid --gpus 2, no GPU -> error" "exit $rc (124: hung): $err"; fi
fi
names=("2 GPUs = 1 GPU x -a 2" "2 GPUs evals" "2 GPUs exact resume" "2 GPUs SIGTERM" "2 GPUs log")
n_gpu=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU')
why=""
if [ ! -x ./train_hybrid ]; then why="train_hybrid not built"
elif [ "${n_gpu:-0}" -lt 2 ]; then why="needs 2 CUDA GPUs, this host has ${n_gpu:-0}"
elif ./train_hybrid --gpus 2 -n 0 -c "" -o "" --eval-every 0 -v 0 2>&1 | grep -q "has no NCCL"; then why="train_hybrid built without NCCL"; fi
if [ -n "$why" ]; then
    skip_n ${#names[@]} "2-GPU checks" "$why"
    summary
    exit
fi

small=(-L 3 -C 64 -H 2 -F 128 -B 4 -T 64 -p SRF -w 16 -v 4 -V 2 --needle-symbols 16 --eval-every 6 --eval-samples 2)
./train_hybrid "${small[@]}" --gpus 2 -n 12 -o "$dir/two.jsonl" -c "$dir/two.ckpt" --ckpt-every 4 --ckpt-keep 2 > "$dir/two.out" 2>&1
./train_hybrid "${small[@]}" -a 2 -n 12 -o "$dir/one.jsonl" -c "" > "$dir/one.out" 2>&1
worst=$(paste -d ' ' <(cols "$dir/two.jsonl") <(cols "$dir/one.jsonl") | awk '
    { for (i = 1; i <= 2; i++) { d = $i - $(i + 2); if (d < 0) d = -d; d /= ($(i + 2) > 0 ? $(i + 2) : 1); if (d > w) w = d }; n++ }
    END { printf "%d %.1e", n, w }')
steps=${worst%% *}; rel=${worst##* }
if [ "$steps" = 12 ] && awk -v r="$rel" 'BEGIN { exit !(r <= 1e-4) }'; then pass "${names[0]}" "12 steps, losses and gradient norms within $rel relative (tol 1e-4)"
else fail "${names[0]}" "$steps steps compared, worst relative difference $rel: $(tail -n 2 "$dir/two.out" | tr '\n' ' ')"; fi

# rank 0 alone runs the needle evals while rank 1 waits at the next all-reduce: the evals at steps 0,
# 6 and 12 match the one-GPU run's (attention masses within 1e-3: the weights agree up to the
# rounding of the gradient sums)
evals=$(python3 - "$dir/two.jsonl" "$dir/one.jsonl" << 'PY'
import json, sys
def evals(path):
    rows = [json.loads(line) for line in open(path)]
    return {r["step"]: r["needle"] for r in rows if "needle" in r}
two, one = evals(sys.argv[1]), evals(sys.argv[2])
worst = max((abs(a - b) for s in one if s in two
             for la, lb in zip(two[s]["attn_layers"], one[s]["attn_layers"])
             for a, b in zip(la["mass"], lb["mass"])), default=1.0)
print(" ".join(str(s) for s in sorted(two)), "|", " ".join(str(s) for s in sorted(one)), "|", "%.1e" % worst)
PY
)
if [ "${evals%% |*}" = "0 6 12" ] && [ "$(echo "$evals" | cut -d '|' -f 2 | xargs)" = "0 6 12" ] \
    && awk -v w="${evals##*| }" 'BEGIN { exit !(w <= 1e-3) }'; then pass "${names[1]}" "rank 0 evaluated at steps 0 6 12 as one GPU does, attention masses within ${evals##*| } (tol 1e-3)"
else fail "${names[1]}" "eval steps, 2 GPUs | 1 GPU | worst mass difference: $evals"; fi

./train_hybrid "${small[@]}" --gpus 2 -n 12 -r "$dir/two.ckpt.step8" -o "$dir/res.jsonl" -c "" > "$dir/res.out" 2>&1
want=$(numbers "$dir/two.jsonl" | grep -E '"step": (9|10|11|12),')
got=$(numbers "$dir/res.jsonl" | grep -E '"step": (9|10|11|12),')
if [ -n "$want" ] && [ "$want" = "$got" ]; then pass "${names[2]}" "steps 9-12 from rank 0's step-8 checkpoint: $(echo "$got" | grep -c loss) losses and norms identical"
else fail "${names[2]}" "resumed: $(echo "$got" | head -n 1) vs $(echo "$want" | head -n 1)"; fi

./train_hybrid "${small[@]}" --gpus 2 -n 100000 -o "$dir/s.jsonl" -c "$dir/s.ckpt" > "$dir/s.out" 2>&1 &
stop_run $! TERM "$dir/s.jsonl"  # once both ranks are in the training loop
if [ $rc -eq 143 ] && [ -n "$last" ] && [ "$(ckpt_step "$dir/s.ckpt")" = "$last" ]; then pass "${names[3]}" "the parent forwards SIGTERM, every rank stops after step $last, exit 143, checkpoint at step $last"
else fail "${names[3]}" "exit $rc, last logged step '$last', checkpoint step '$(ckpt_step "$dir/s.ckpt" 2> /dev/null)'"; fi

if grep -q "| device .*| 2 x " "$dir/two.out" && [ "$(grep -c '| device' "$dir/two.out")" = 1 ] && [ "$(grep -c '^step .*/12 ' "$dir/two.out")" = 12 ]; then pass "${names[4]}" "rank 0 alone prints: $(grep '| device' "$dir/two.out" | tr -s ' ')"
else fail "${names[4]}" "$(head -n 3 "$dir/two.out" | tr '\n' ' ')"; fi
summary
