#!/usr/bin/env bash
# scaling.sh — data-parallel scaling of train_hybrid --gpus N on DESIGN.md §5's gpt2s SSSF W 512
# (C 768, L 12, H 12, SwiGLU 2048, B 8 x T 4096 per GPU), random GPT-2 tokens, next to the target
# (>= 90% efficiency: N-GPU tok/s / (N x 1-GPU tok/s); the first count given is the baseline).
#
#     bash dev/bench/scaling.sh            # 1 GPU and every count up to the host's GPUs: 1 2 4 8
#     bash dev/bench/scaling.sh 1 2        # the counts to run
#
# Each count trains STEPS (default 20) steps; tok/s is train_hybrid's mean over the steps after the
# first. The data is a random-token llm.c shard made here (train = val; the vocabulary is GPT-2's
# plus the needle block, no needles in training). Per-run logs are kept in $OUT_DIR (default a
# temporary folder, printed).
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
shard="$OUT_DIR/random_gpt2.bin"
python3 - "$shard" << 'PY'
import random, struct, sys
n = 1 << 22  # 4M tokens; the loader wraps around
rng = random.Random(1)
header = [20240520, 1, n] + [0] * 253
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", *header))
    f.write(struct.pack(f"<{n}H", *(rng.randrange(50257) for _ in range(n))))
PY
model=(-L 12 -C 768 -H 12 -F 2048 -B 8 -T 4096 -p SSSF -w 512 -i "$shard" -j "$shard" --needle-frac 0
       -n "$STEPS" -v 0 --eval-every 0 -c "")
echo "device: $(nvidia-smi -L | head -n 1 | sed -e 's/ (UUID.*//'), logs in $OUT_DIR"
echo "| GPUs | tok/s | tok/s per GPU | efficiency | target |"
echo "|------|-------|---------------|------------|--------|"
base=""
for n in "${counts[@]}"; do
    ./train_hybrid "${model[@]}" --gpus "$n" -o "$OUT_DIR/gpus$n.jsonl" > "$OUT_DIR/gpus$n.out" 2>&1 \
        || { echo "error: --gpus $n failed: $(tail -n 1 "$OUT_DIR/gpus$n.out")" >&2; exit 1; }
    tok=$(sed -n -e 's/^mean \([0-9]*\) tok\/s.*/\1/p' "$OUT_DIR/gpus$n.out")
    [ -n "$base" ] || base=$(( tok / n ))
    awk -v n="$n" -v t="$tok" -v b="$base" 'BEGIN { e = t / (n * b); printf "| %d | %.1fk | %.1fk | %.1f%% | >= 90%% %s |\n", n, t / 1e3, t / n / 1e3, 100 * e, n == 1 ? "" : (e >= 0.9 ? "met" : "gap") }'
done
