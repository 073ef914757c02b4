#!/usr/bin/env bash
# scaling.sh — data-parallel scaling of train_hybrid --gpus N on the gpt2s SSSF W 512 of dev/bench/README.md
# (C 768, L 12, H 12, SwiGLU 2048, B 8 x T 4096 per GPU), random GPT-2 tokens, next to the target
# (>= 90% efficiency: N-GPU tok/s / (N x 1-GPU tok/s); the first count given is the baseline).
#
#     bash dev/bench/scaling.sh            # 1 GPU and every count up to the host's GPUs: 1 2 4 8
#     bash dev/bench/scaling.sh 1 2        # the counts to run
#
# Each count trains STEPS (default 20) steps; tok/s is train_hybrid's mean over the steps after the
# first. Each count N > 1 is then trained on one GPU with -a N (the same global batch and the same
# micro-batches: train_hybrid.cu gives rank r micro-batch a x N + r), and the worst relative
# difference of the two loss curves is printed next to its tolerance, 1e-3: only the order and
# rounding of the gradient sums differ, amplified over the steps by the bf16 rounding of the
# weights; a run on other micro-batches differs by far more (the 1-GPU run's own curve is printed
# against the N-GPU one's as that yardstick). The data is an llm.c shard made here (train =
# val; the vocabulary is GPT-2's plus the needle block, no needles in training): a random chain over
# 4096 of the token ids, 8 successors each, so the loss falls within the run (in 20 steps from
# ln 50257 = 10.8 to the chain's unigram entropy, ln 4096 = 8.3) and two curves on other batches
# part (one GPU with and without -a 2: 3.1e-1 at worst, on an H200). Per-run logs are kept in
# $OUT_DIR (default a temporary folder, printed).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-20}
n_gpu=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)
[ "${n_gpu:-0}" -ge 1 ] || { echo "error: scaling.sh: no CUDA GPU here" >&2; exit 1; }
[ -x ./train_hybrid ] || { echo "error: scaling.sh: build train_hybrid first (make train_hybrid)" >&2; exit 1; }
counts=("$@")
if [ ${#counts[@]} -eq 0 ]; then for n in 1 2 4 8; do [ "$n" -le "$n_gpu" ] && counts+=("$n"); done; fi
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
shard="$OUT_DIR/chain_gpt2.bin"
python3 - "$shard" << 'PY'
import random, struct, sys
n = 1 << 22  # 4M tokens; the loader wraps around
rng = random.Random(1)
ids = rng.sample(range(50257), 4096)  # the chain's tokens
succ = {t: rng.sample(ids, 8) for t in ids}  # each token's 8 possible successors
toks, t = [], ids[0]
for _ in range(n):
    toks.append(t)
    t = succ[t][rng.randrange(8)]
header = [20240520, 1, n] + [0] * 253
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", *header))
    f.write(struct.pack(f"<{n}H", *toks))
PY
model=(-L 12 -C 768 -H 12 -F 2048 -B 8 -T 4096 -p SSSF -w 512 -i "$shard" -j "$shard" --needle-frac 0
       -n "$STEPS" -v 0 --eval-every 0 -c "")
echo "device: $(nvidia-smi -L | head -n 1 | sed -e 's/ (UUID.*//'), logs in $OUT_DIR"
# run NAME FLAGS...: one train_hybrid run logging to $OUT_DIR/NAME.jsonl
run() {
    local name=$1; shift
    ./train_hybrid "${model[@]}" "$@" -o "$OUT_DIR/$name.jsonl" > "$OUT_DIR/$name.out" 2>&1 \
        || { echo "error: $* failed: $(tail -n 1 "$OUT_DIR/$name.out")" >&2; exit 1; }
}
# losses LOG: the per-step losses of a log, one a line
losses() { grep '"loss"' "$1" | sed -e 's/.*"loss": \([^,]*\),.*/\1/'; }
# worst_rel A B: the worst relative difference of the per-step losses of two logs
worst_rel() {
    paste -d ' ' <(losses "$1") <(losses "$2") |
        awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.1e", w }'
}
echo "| GPUs | tok/s | tok/s per GPU | efficiency | target | loss vs 1 GPU x -a N (tol 1e-3) |"
echo "|------|-------|---------------|------------|--------|------------------------------|"
base=""
for n in "${counts[@]}"; do
    run "gpus$n" --gpus "$n"
    tok=$(sed -n -e 's/^mean \([0-9]*\) tok\/s.*/\1/p' "$OUT_DIR/gpus$n.out")
    [ -n "$base" ] || base=$(( tok / n ))
    same="-"
    if [ "$n" -gt 1 ]; then
        run "accum$n" -a "$n"
        rel=$(worst_rel "$OUT_DIR/gpus$n.jsonl" "$OUT_DIR/accum$n.jsonl")
        same="$rel $(awk -v w="$rel" 'BEGIN { print (w <= 1e-3 ? "match" : "DIFFER") }')"
        if [ -s "$OUT_DIR/gpus1.jsonl" ]; then
            same="$same (other batches: $(worst_rel "$OUT_DIR/gpus1.jsonl" "$OUT_DIR/gpus$n.jsonl"))"
        fi
    fi
    awk -v n="$n" -v t="$tok" -v b="$base" -v same="$same" 'BEGIN { e = t / (n * b); printf "| %d | %.1fk | %.1fk | %.1f%% | %s | %s |\n", n, t / 1e3, t / n / 1e3, 100 * e, n == 1 ? "" : (e >= 0.9 ? ">= 90%: met" : ">= 90%: gap"), same }'
done
