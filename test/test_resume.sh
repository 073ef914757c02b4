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
#   --sample:     a checkpoint's sample is the same every time; on other data than the run's it says so
#   bad resume:   a data vocabulary that is not the checkpoint's -> one clear line, exit != 0
#   signals:      SIGHUP stops like SIGTERM (exit 129); a closed stdout (| head) saves and exits 141;
#                 SIGINT during a long eval is answered within 3 s and the cut eval is not logged
#   locks:        a second run naming a running run's -c or -o stops at start, naming the holder
#   kill -9:      killed three times and resumed, the log is valid JSON and equals an uninterrupted
#                 run's (each resume cuts it back to the checkpoint's step)
#   logs:         a data path with a non-UTF-8 byte is escaped (non-finite numbers: test_cpu)
source test/test_lib.sh  # pass, fail, skip, summary, numbers, ckpt_step
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT  # every way out, skips and early failures included
yes "the quick brown fox jumps over the lazy dog." | head -c 4000 > "$dir/fox.txt"  # bytes data for the path test

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
    local pid=$! rc last
    stop_run $pid TERM "$d/s.jsonl"
    if [ $rc -eq 143 ] && [ -n "$last" ] && [ "$(ckpt_step "$d/s.ckpt")" = "$last" ] && grep -q "signal 15: stopped after step $last" "$d/s.out"; then
        pass "$tr SIGTERM" "exit 143 after step $last, checkpoint at step $(ckpt_step "$d/s.ckpt")"
    else fail "$tr SIGTERM" "exit $rc, last logged step '$last', checkpoint step '$(ckpt_step "$d/s.ckpt" 2>/dev/null)'"; fi
    # --ckpt-keep 2 beside a stale run's .step98/.step99: they are neither counted nor removed, this
    # run keeps its own newest save before the last; a stale .tmp that links to another checkpoint is
    # removed, never written through
    touch "$d/st.ckpt.step98" "$d/st.ckpt.step99"
    cp "$d/a.ckpt" "$d/other.ckpt"
    ln -s other.ckpt "$d/st.ckpt.tmp"
    local before
    before=$(sha256sum < "$d/other.ckpt")
    ./"$tr" "${fl[@]}" -n 12 -o "" -c "$d/st.ckpt" --ckpt-every 4 --ckpt-keep 2 > "$d/st.out" 2>&1
    kept=$(cd "$d" && ls st.ckpt* | tr '\n' ' ')
    if [ "$kept" = "st.ckpt st.ckpt.step8 st.ckpt.step98 st.ckpt.step99 " ] && [ "$(sha256sum < "$d/other.ckpt")" = "$before" ]; then
        pass "$tr --ckpt-keep beside a stale run, a stale .tmp link" "left: $kept; the linked checkpoint untouched"
    else fail "$tr --ckpt-keep beside a stale run, a stale .tmp link" "left: $kept; $(tail -n 1 "$d/st.out")"; fi
    # SIGHUP (a closed terminal) stops like SIGTERM: exit 129, the checkpoint at the last logged step
    ./"$tr" "${fl[@]}" -n 100000 -o "$d/h.jsonl" -c "$d/h.ckpt" > "$d/h.out" 2>&1 &
    stop_run $! HUP "$d/h.jsonl"
    if [ $rc -eq 129 ] && [ -n "$last" ] && [ "$(ckpt_step "$d/h.ckpt")" = "$last" ]; then pass "$tr SIGHUP" "exit 129 after step $last, checkpoint at step $last"
    else fail "$tr SIGHUP" "exit $rc, last logged step '$last', checkpoint step '$(ckpt_step "$d/h.ckpt" 2>/dev/null)'"; fi
    # a closed stdout (| head -n 1): the write fails, the run saves and exits 141 at once
    local t0=$SECONDS
    ./"$tr" "${fl[@]}" -n 100000 -o "$d/p.jsonl" -c "$d/p.ckpt" 2> "$d/p.err" | head -n 1 > /dev/null
    rc=${PIPESTATUS[0]}
    if [ $rc -eq 141 ] && [ -s "$d/p.ckpt" ] && [ $((SECONDS - t0)) -lt 30 ] && grep -q "stdout: write failed" "$d/p.err"; then
        pass "$tr closed stdout" "exit 141 after $((SECONDS - t0)) s, checkpoint at step $(ckpt_step "$d/p.ckpt"): $(head -n 1 "$d/p.err")"
    else fail "$tr closed stdout" "exit $rc after $((SECONDS - t0)) s, $(tail -n 1 "$d/p.err")"; fi
    # SIGINT during a long needle eval (step 0's: a grid of 1500 samples a cell): answered within 3 s,
    # the cut eval not logged
    local ev=() i  # the suite's flags but its --eval-every (a flag goes once)
    for ((i = 0; i < ${#fl[@]}; i++)); do if [ "${fl[i]}" = --eval-every ]; then i=$((i + 1)); else ev+=("${fl[i]}"); fi; done
    ./"$tr" "${ev[@]}" -n 100 --eval-every 50 --eval-samples 1500 -o "$d/i.jsonl" -c "" > "$d/i.out" 2>&1 &
    pid=$!
    local waited=0
    while ! grep -q "val loss" "$d/i.out" 2> /dev/null && [ $waited -lt 300 ]; do sleep 0.1; waited=$((waited + 1)); done
    sleep 0.5
    t0=$(date +%s%N)
    kill -INT $pid
    wait $pid
    rc=$?
    local took=$(( ($(date +%s%N) - t0) / 1000000 ))  # ms
    # the cut is step 0's eval on most machines; where that one ends first, the step-50 one is cut
    local cut
    cut=$(sed -n 's/^step *\([0-9]*\) | evals cut short by signal 2: not logged$/\1/p' "$d/i.out")
    if [ $rc -eq 130 ] && [ $took -lt 3000 ] && [ -n "$cut" ] && ! grep -q "\"step\": $cut, \"needle\": {" "$d/i.jsonl"; then
        pass "$tr SIGINT during an eval" "exit 130 $took ms after the signal, step $cut's cut eval not logged"
    else fail "$tr SIGINT during an eval" "exit $rc after $took ms; $(tail -n 2 "$d/i.out" | tr '\n' ' ')"; fi
    # one run per checkpoint and log: a second run naming the same -c, or the same -o, stops at start
    ./"$tr" "${fl[@]}" -n 100000 -o "$d/l.jsonl" -c "$d/l.ckpt" > "$d/l.out" 2>&1 &
    pid=$!
    wait_logged "$d/l.jsonl" 2
    ./"$tr" "${fl[@]}" -n 5 -o "$d/l2.jsonl" -c "$d/l.ckpt" > "$d/l2.out" 2>&1
    local rc1=$?
    ./"$tr" "${fl[@]}" -n 5 -o "$d/l.jsonl" -c "$d/l3.ckpt" > "$d/l3.out" 2>&1
    local rc2=$?
    kill -TERM $pid; wait $pid
    if [ $rc1 -ne 0 ] && grep -q "is in use by another run (process $pid holds" "$d/l2.out" && [ $rc2 -ne 0 ] \
        && grep -q "is being written by another run" "$d/l3.out" && [ ! -e "$d/l.ckpt.lock" ]; then
        pass "$tr one run per checkpoint and log" "$(tail -n 1 "$d/l2.out" | cut -c1-110)...; the lock file gone after the run"
    else fail "$tr one run per checkpoint and log" "rc $rc1 $rc2: $(tail -n 1 "$d/l2.out") / $(tail -n 1 "$d/l3.out")"; fi
    # kill -9 three times, resuming each time: the log always ends at the checkpoint's step after the
    # resume's cut, every line JSON, every step once, and the finished log equals an uninterrupted run's
    rm -f "$d/k9.jsonl" "$d/k9.ckpt"
    local r=() ok=1
    for kill_after in 40 90 140; do  # (-a 2: steps slow enough to be killed mid-run)
        ./"$tr" "${fl[@]}" -a 2 -n 200 --ckpt-every 10 "${r[@]}" -o "$d/k9.jsonl" -c "$d/k9.ckpt" > "$d/k9.out" 2>&1 &
        pid=$!
        wait_logged "$d/k9.jsonl" "$kill_after"
        kill -9 $pid; wait $pid 2> /dev/null
        r=(-r "$d/k9.ckpt")
    done
    ./"$tr" "${fl[@]}" -a 2 -n 200 --ckpt-every 10 "${r[@]}" -o "$d/k9.jsonl" -c "$d/k9.ckpt" > "$d/k9.out" 2>&1 || ok=0
    ./"$tr" "${fl[@]}" -a 2 -n 200 -o "$d/k9ref.jsonl" -c "" > /dev/null 2>&1 || ok=0
    python3 -c "import json, sys; [json.loads(l) for l in open(sys.argv[1], encoding='utf-8')]" "$d/k9.jsonl" || ok=0
    if [ $ok = 1 ] && cmp -s <(numbers "$d/k9.jsonl") <(numbers "$d/k9ref.jsonl"); then
        pass "$tr kill -9 and resume, three times" "the log is valid JSON and equals the uninterrupted run's ($(grep -c loss "$d/k9.jsonl") steps)"
    else fail "$tr kill -9 and resume, three times" "ok $ok: $(diff <(numbers "$d/k9.jsonl") <(numbers "$d/k9ref.jsonl") | head -n 3 | tr '\n' ' ')"; fi
    # a data path with a byte that is not UTF-8: the log's config record stays valid UTF-8 JSON
    head -c 3000 "$d/../fox.txt" > "$d/t"$'\xff'".txt"
    ./"$tr" "${fl[@]}" -n 1 --bytes -i "$d/t"$'\xff'".txt" -o "$d/u.jsonl" -c "" > /dev/null 2>&1
    if python3 -c "import json, sys; c = json.loads(open(sys.argv[1], encoding='utf-8').readline())['config']; assert c['data'].endswith('t\u00ff.txt')" "$d/u.jsonl" 2> /dev/null; then
        pass "$tr a non-UTF-8 path in the log" "escaped as \\u00ff: the log reads as UTF-8 JSON"
    else fail "$tr a non-UTF-8 path in the log" "$(head -c 300 "$d/u.jsonl")"; fi
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
    # --sample on other data than the run's (same vocabulary: bytes, not the built-in text) says so
    ./"$tr" "${fl[@]}" --sample -r "$d/a.ckpt" --bytes -i "$dir/fox.txt" > "$d/s3.out" 2>&1
    if grep -q "was trained on other data than these flags name .*: the prompt comes from the data given" "$d/s3.out" && grep -q " >>> " "$d/s3.out"; then
        pass "$tr --sample on other data" "$(head -n 1 "$d/s3.out" | cut -c1-150)"
    else fail "$tr --sample on other data" "$(head -n 2 "$d/s3.out" | tr '\n' ' ')"; fi
    local other=()  # the same flags with --needle-symbols 17 in place of the suite's (a flag goes once)
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
suite_checks=$((passed + failed))  # the GPU suite runs the same checks
if [ -x ./train_hybrid ] && nvidia-smi -L > /dev/null 2>&1; then
    LN1_AT=$((384 * 64)) run_suite train_hybrid "${small[@]}" -C 64 --eval-every 0
else
    skip_n $suite_checks "train_hybrid" "no CUDA GPU found (or train_hybrid not built)"
fi
summary
