#!/usr/bin/env bash
# test_resume.sh — the trainers' reliability, run as a user runs them: train_cpu always,
# train_hybrid when there is a GPU (else skipped with the reason).
#   exact resume: a run resumed from its step-8 checkpoint logs the same train and val losses,
#                 lr and gradient norms, to the last digit, as the uninterrupted run
#   keep:         --ckpt-keep 2 leaves the newest checkpoint and the one before (.step<k>)
#   determinism:  the same seed twice gives the same log
#   SIGTERM:      the trainer finishes its step, writes the checkpoint of that step, exits 143
#   non-finite:   a parameter that overflows the forward stops the run before its first update
#                 with one clear line, the existing checkpoint untouched; --skip-nonfinite skips
#                 the updates instead
#   --sample:     a checkpoint's sample is the same every time
#   bad resume:   a data vocabulary that is not the checkpoint's -> one clear line, exit != 0
source test/test_lib.sh  # pass, fail, skip, summary, numbers, ckpt_step
dir=$(mktemp -d)

run_suite() {  # trainer name, then its flags for a small fast model
    local tr=$1; shift
    local fl=("$@")
    local d="$dir/$tr"
    mkdir -p "$d"
    ./"$tr" "${fl[@]}" -n 12 -o "$d/a.jsonl" -c "$d/a.ckpt" > "$d/a.out" 2>&1 || { fail "$tr runs" "$(tail -n 2 "$d/a.out")"; return; }
    ./"$tr" "${fl[@]}" -n 12 -o "$d/b.jsonl" -c "$d/b.ckpt" --ckpt-every 4 --ckpt-keep 2 > "$d/b.out" 2>&1
    if cmp -s <(numbers "$d/a.jsonl") <(numbers "$d/b.jsonl"); then pass "$tr determinism" "same seed, same $(grep -c loss "$d/a.jsonl")-step log"
    else fail "$tr determinism" "logs differ: $(diff <(numbers "$d/a.jsonl") <(numbers "$d/b.jsonl") | head -n 2 | tr '\n' ' ')"; fi
    local kept
    kept=$(cd "$d" && ls b.ckpt* | tr '\n' ' ')
    if [ "$kept" = "b.ckpt b.ckpt.step8 " ] && [ "$(ckpt_step "$d/b.ckpt")" = 12 ] && [ "$(ckpt_step "$d/b.ckpt.step8")" = 8 ]; then
        pass "$tr --ckpt-keep 2" "saves at 4, 8, 12 leave: $kept"
    else fail "$tr --ckpt-keep 2" "left: $kept"; fi
    # resume from step 8 with the same flags: steps 9..12 and the val at 12 as in the uninterrupted run
    ./"$tr" "${fl[@]}" -n 12 -r "$d/b.ckpt.step8" -o "$d/c.jsonl" -c "$d/c.ckpt" > "$d/c.out" 2>&1
    local want got
    want=$(numbers "$d/a.jsonl" | grep -E '"step": (9|10|11|12),')
    got=$(numbers "$d/c.jsonl" | grep -E '"step": (9|10|11|12),')
    if [ -n "$want" ] && [ "$want" = "$got" ]; then pass "$tr exact resume" "steps 9-12 from the step-8 checkpoint: $(echo "$got" | grep -c loss) losses and norms identical"
    else fail "$tr exact resume" "resumed: $(echo "$got" | head -n 1) vs $(echo "$want" | head -n 1)"; fi
    # SIGTERM mid-run: the checkpoint holds the last logged step, exit 143
    ./"$tr" "${fl[@]}" -n 100000 -o "$d/s.jsonl" -c "$d/s.ckpt" > "$d/s.out" 2>&1 &
    local pid=$!
    wait_logged "$d/s.jsonl" 3
    kill -TERM $pid
    wait $pid
    local rc=$? last
    last=$(grep loss "$d/s.jsonl" | tail -n 1 | sed -e 's/^{"step": \([0-9]*\),.*/\1/')
    if [ $rc -eq 143 ] && [ -n "$last" ] && [ "$(ckpt_step "$d/s.ckpt")" = "$last" ] && grep -q "signal 15: stopped after step $last" "$d/s.out"; then
        pass "$tr SIGTERM" "exit 143 after step $last, checkpoint at step $(ckpt_step "$d/s.ckpt")"
    else fail "$tr SIGTERM" "exit $rc, last logged step '$last', checkpoint step '$(ckpt_step "$d/s.ckpt" 2>/dev/null)'"; fi
    # layer 0's norm weight 1e38 (finite, so the checkpoint loads; resealed by ckpt_edit): attention
    # scores overflow, the loss is not finite: stop before the update, keep the checkpoint
    cp "$d/a.ckpt" "$d/nan.ckpt"
    test/ckpt_edit "$d/nan.ckpt" param "$LN1_AT" 1e38
    cp "$d/a.ckpt" "$d/good.ckpt"
    ./"$tr" "${fl[@]}" -n 14 -r "$d/nan.ckpt" -c "$d/good.ckpt" > "$d/n.out" 2> "$d/n.err"
    rc=$?
    if [ $rc -ne 0 ] && grep -qE "step 13: loss [-a-z0-9.e+]*, gradient norm [-a-z0-9.e+]*: not finite; stopped before the update" "$d/n.err" && cmp -s "$d/a.ckpt" "$d/good.ckpt"; then
        pass "$tr non-finite loss -> stop" "$(head -c 150 "$d/n.err")"
    else fail "$tr non-finite loss -> stop" "exit $rc: $(head -c 200 "$d/n.err")"; fi
    ./"$tr" "${fl[@]}" -n 14 -r "$d/nan.ckpt" -c "" --skip-nonfinite > "$d/k.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ "$(grep -c 'not finite, update skipped' "$d/k.out")" = 2 ]; then pass "$tr --skip-nonfinite" "2 steps skipped, exit 0"
    else fail "$tr --skip-nonfinite" "exit $rc, $(grep -c 'update skipped' "$d/k.out") skipped"; fi
    # --sample: the same continuation of the same val prompt every time, nothing written
    ./"$tr" "${fl[@]}" --sample -r "$d/a.ckpt" > "$d/s1.out" 2>&1; ./"$tr" "${fl[@]}" --sample -r "$d/a.ckpt" > "$d/s2.out" 2>&1
    if grep -q "^sample at step 12:" "$d/s1.out" && grep -q " >>> " "$d/s1.out" && cmp -s "$d/s1.out" "$d/s2.out"; then
        pass "$tr --sample" "$(grep -A1 '^sample at' "$d/s1.out" | tail -n 1 | cut -c1-100)"
    else fail "$tr --sample" "$(tail -n 2 "$d/s1.out" | tr '\n' ' ')"; fi
    local other=() i  # the same flags with --needle-symbols 17 in place of the suite's (a flag goes once)
    for ((i = 0; i < ${#fl[@]}; i++)); do
        if [ "${fl[i]}" = --needle-symbols ]; then other+=(--needle-symbols 17); i=$((i + 1)); else other+=("${fl[i]}"); fi
    done
    ./"$tr" "${other[@]}" -n 14 -r "$d/a.ckpt" -c "" > /dev/null 2> "$d/v.err"
    rc=$?
    if [ $rc -ne 0 ] && grep -q "checkpoint vocabulary .*, the data's is" "$d/v.err"; then pass "$tr resume vocab mismatch -> error" "$(head -c 150 "$d/v.err")"
    else fail "$tr resume vocab mismatch -> error" "exit $rc: $(head -c 200 "$d/v.err")"; fi
}

# head dim 16 on the CPU; 32 on the GPU, the smallest its attention kernels take
small=(-L 3 -H 2 -F 64 -B 4 -T 32 -p SRF -w 8 -v 4 -V 2 --needle-symbols 16)
# the first parameter of layer 0's norm weight: after wte (Vp 384 rows of C: 256 bytes + 2 markers + 16 symbols, padded)
LN1_AT=$((384 * 32)) run_suite train_cpu "${small[@]}" -C 32
if [ -x ./train_hybrid ] && nvidia-smi -L > /dev/null 2>&1; then
    LN1_AT=$((384 * 64)) run_suite train_hybrid "${small[@]}" -C 64 --eval-every 0
else
    skip_n 8 "train_hybrid" "no CUDA GPU found (or train_hybrid not built)"
fi
rm -rf "$dir"
summary
