#!/usr/bin/env bash
# test_experiments.sh — the paper-mini pipeline (dev/experiments) on the CPU, with train_cpu and the
# tiny size:
#   grid:      f3_nope.sh trains its four configs and leaves complete, gzipped logs
#   skip:      run again, every run is skipped as complete; progress lines every PROGRESS seconds
#   failed:    a grid whose runs fail goes on and exits 1 naming how many (all.sh likewise)
#   ONLY:      a regex picks the configs that run
#   all.sh:    runs f1, f2, f3 in turn; a run two findings share is trained once
#   GPUS:      two seeds side by side give the logs of one at a time
#   LEVER:     runs off the protocol at mini need a LEVER name (clear error without), and with one
#              they log to LOGDIR/SIZE_LEVER
#   resume:    SIGTERM to the grid's shell reaches its trainer; the grid exits 143 once the checkpoint is
#              written, the run resumes from it, and its finished log equals, number
#              for number (timings aside), the log of the same run never stopped
#   cpu_probe: cpu_probe.sh's three runs (F, RF gla, RF gdn) leave their logs; ONLY picks runs
#   t4096, t2048: f2_laziness.sh's T 4096 and T 2048 grids (a stand-in trainer records the runs):
#              all-F, then SSSF W 64, 1024, 256 (t2048: 32, 512, 128), five seeds each, with the
#              size's flags
#   eval-long: train_cpu --eval-long-every 2 logs the whole grid at steps 0, 2, 4, the lengths up
#              to T at steps 1 and 3
#   log config: the log's first record holds the run's flags (a data path with a quote escaped)
#   needle_share: the share of training questions inside a window, in [0, 1], rising with W, 1 at
#              W = T; with earlier answers counted, at least as large; a bad -w is a clear error
#   report:    report.py reads logs with known events (synthetic: accuracy over 0.5 at step 30,
#              an F head over 0.5 at step 20 / 30 / never for W 32 / 64 / 128, 100k tokens per
#              step) and reports exactly those, in the findings' tables (with the share of
#              questions inside W: needle_share's with each seed's config record, the formula),
#              the trend test (p = 1/90; every run censored: not settled), the all-F reference
#              row, a run stopped between long evals ("-" at 2T, 4T), the layers' table and the
#              calibration table (T, a run stopped before its schedule's end); the trend test's
#              exact p-values equal those of enumerating every assignment (report.py --self-test);
#              draws the plots of the real tiny logs (skipped without matplotlib)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
source test/test_lib.sh  # pass, fail, skip, summary, numbers
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT  # every way out, skips and early failures included
# evals every 15 / 50 steps, not 40 per run: on a CPU they cost more than the training
export SIZE=tiny SEEDS=1 DATA=builtin TRAINER=./train_cpu STEPS=60 CKPT_EVERY=10 EVAL_EVERY=15

out=$(PROGRESS=1 LOGDIR="$dir/a" bash dev/experiments/f3_nope.sh 2>&1)
n=$(ls "$dir/a/tiny/"*.jsonl.gz 2>/dev/null | wc -l)
ticks=$(echo "$out" | grep -c '^  SSSF_w[0-9a-z_]*\.s1: step *[0-9]*/60 | loss')
if [ "$n" = 4 ] && [ -z "$(ls "$dir/a/tiny/" | grep -v 'jsonl.gz$')" ] && [ "$ticks" -ge 1 ]; then
    pass "experiments grid" "f3_nope.sh: 4 complete logs, no checkpoints left, $ticks progress lines (PROGRESS=1)"
else fail "experiments grid" "$n logs; $(ls "$dir/a/tiny/" | tr '\n' ' '); $(echo "$out" | tail -n 2 | tr '\n' ' ')"; fi

out=$(LOGDIR="$dir/a" bash dev/experiments/f3_nope.sh 2>&1)
if [ "$(echo "$out" | grep -c '^skip .*: complete$')" = 4 ]; then pass "experiments skip" "a second f3_nope.sh skips its 4 complete runs"
else fail "experiments skip" "$(echo "$out" | head -n 2 | tr '\n' ' ')"; fi

# a grid whose runs fail goes on through them and exits 1 saying how many; all.sh goes on through
# the findings and exits 1 too
rc=0; out=$(LOGDIR="$dir/fail" TRAINER=/bin/false bash dev/experiments/f3_nope.sh 2>&1) || rc=$?
rc2=0; out2=$(LOGDIR="$dir/fail" TRAINER=/bin/false ONLY=SSSF_w32 bash dev/experiments/all.sh 2>&1) || rc2=$?
if [ $rc = 1 ] && [ "$(echo "$out" | grep -c '^stopped ')" = 4 ] && [[ "$out" == *"error: 4 run(s) failed"* ]] \
    && [ $rc2 = 1 ] && [[ "$out2" == *"error: 3 of the three findings had runs that failed"* ]]; then
    pass "experiments failed runs" "f3_nope.sh: 4 runs stopped, exit 1; all.sh: exit 1 after all three findings"
else fail "experiments failed runs" "exit $rc / $rc2: $(echo "$out" | tail -n 1); $(echo "$out2" | tail -n 1)"; fi

out=$(LOGDIR="$dir/e" ONLY='SSSF_w512.*' bash dev/experiments/f3_nope.sh 2>&1)
if [ "$(LC_ALL=C ls "$dir/e/tiny/")" = "$(printf 'SSSF_w512.s1.jsonl.gz\nSSSF_w512_fnope.s1.jsonl.gz')" ]; then pass "experiments ONLY" "ONLY='SSSF_w512.*' runs those 2 configs of f3_nope.sh, not the W 32 ones"
else fail "experiments ONLY" "$(ls "$dir/e/tiny/" | tr '\n' ' ')"; fi

out=$(LOGDIR="$dir/f" ONLY='SSSF_w(32|64)' bash dev/experiments/all.sh 2>&1)
if [ "$(LC_ALL=C ls "$dir/f/tiny/")" = "$(printf 'SSSF_w32.s1.jsonl.gz\nSSSF_w64.s1.jsonl.gz')" ] \
    && [ "$(echo "$out" | grep -c '^skip .*SSSF_w32.s1: complete$')" = 2 ]; then
    pass "experiments all.sh" "ONLY='SSSF_w(32|64)': W 32 trained by f1, skipped by f2 and f3; W 64 by f2"
else fail "experiments all.sh" "$(LC_ALL=C ls "$dir/f/tiny/" | tr '\n' ' '); $(echo "$out" | tr '\n' ' ' | cut -c1-200)"; fi

# one thread each: two OpenMP trainers of two threads on two cores spin against each other
out=$(OMP_NUM_THREADS=1 LOGDIR="$dir/d" SEEDS="1 2" GPUS="0 1" bash -c 'source dev/experiments/common.sh; run_config SSSF_w32 -p SSSF -w 32' 2>&1)
if [[ "$out" == *"on GPU 1"* ]] && [ -s "$dir/d/tiny/SSSF_w32.s2.jsonl.gz" ] \
    && cmp -s <(numbers "$dir/d/tiny/SSSF_w32.s1.jsonl.gz") <(numbers "$dir/a/tiny/SSSF_w32.s1.jsonl.gz"); then
    pass "experiments GPUS" "seeds 1 and 2 side by side (GPUS=\"0 1\"); seed 1's log equal to the sequential grid's"
else fail "experiments GPUS" "$(echo "$out" | tr '\n' ' ' | cut -c1-200)"; fi

rc=0
err=$(SIZE=mini STEPS=8000 DATA=builtin bash dev/experiments/f1_emergence.sh 2>&1 > /dev/null) || rc=$?
out=$(LOGDIR="$dir/lever" LEVER=n60 ONLY=F bash dev/experiments/f1_emergence.sh 2>&1)
if [ $rc = 1 ] && [[ "$err" == "error: STEPS=8000"*"LEVER="* ]] && [ "$(ls "$dir/lever")" = tiny_n60 ] && [ -s "$dir/lever/tiny_n60/F.s1.jsonl.gz" ]; then
    pass "experiments LEVER" "off the protocol without LEVER: $err; LEVER=n60: $dir/lever/tiny_n60/F.s1.jsonl.gz"
else fail "experiments LEVER" "exit $rc: $err; $out; $(ls -R "$dir/lever" 2>&1 | tr '\n' ' ')"; fi

# cpu_probe.sh at 20 steps: three logs, each ending on a needle eval, with the F layers of its pattern
# (F: layers 0 and 1; RF: layer 1 only)
out=$(STEPS=20 OUT="$dir/probe" EVAL_SAMPLES=1 bash dev/experiments/cpu_probe.sh 2>&1)
f_layers() { gzip -dc "$1" | grep '"needle"' | tail -n 1 | grep -o '"layer": [0-9]*, "type": "F"' | grep -o '[0-9]' | tr -d '\n'; }
if [ "$(f_layers "$dir/probe/F.jsonl.gz")" = 01 ] && [ "$(f_layers "$dir/probe/RF_gla.jsonl.gz")" = 1 ] \
    && [ "$(f_layers "$dir/probe/RF_gdn.jsonl.gz")" = 1 ] && [ "$(echo "$out" | grep -c '^RF_g[dl][na]: step    20 | needle acc')" = 2 ]; then
    pass "experiments cpu_probe" "STEPS=20: F, RF_gla, RF_gdn logs with their F layers; $(echo "$out" | tail -n 1)"
else fail "experiments cpu_probe" "$(echo "$out" | tr '\n' ' ' | cut -c1-300); $(ls "$dir/probe" | tr '\n' ' ')"; fi
out=$(STEPS=2 ONLY=RF_gdn OUT="$dir/probe1" EVAL_SAMPLES=1 bash dev/experiments/cpu_probe.sh 2>&1)
if [ "$(ls "$dir/probe1")" = RF_gdn.jsonl.gz ]; then pass "experiments cpu_probe ONLY" "ONLY=RF_gdn: only its log"
else fail "experiments cpu_probe ONLY" "$(ls "$dir/probe1" | tr '\n' ' '); $out"; fi

# stop the first run of a fresh grid once it has a checkpoint and 25 logged steps, then go on
export STEPS=100 EVAL_EVERY=50
LOGDIR="$dir/b" setsid bash dev/experiments/f3_nope.sh > "$dir/b.out" 2>&1 &
pid=$!
log="$dir/b/tiny/SSSF_w32.s1.jsonl"
waited=0
while { [ ! -s "$log" ] || [ ! -s "${log%.jsonl}.ckpt" ] || [ "$(grep -c '"loss"' "$log")" -lt 25 ]; } && [ $waited -lt 600 ]; do sleep 0.1; waited=$((waited + 1)); done
# the signal goes to the grid's shell only: it passes it on to the trainer and exits 143 once the
# trainer has written its checkpoint (the step it stopped at, before the end)
kill -TERM $pid 2> /dev/null
rc=0
wait $pid 2> /dev/null || rc=$?
s_stop=$(ckpt_step "${log%.jsonl}.ckpt")
out=$(LOGDIR="$dir/b" SEEDS=1 bash -c 'source dev/experiments/common.sh; run_config SSSF_w32 -p SSSF -w 32' 2>&1)
LOGDIR="$dir/c" bash -c 'source dev/experiments/common.sh; run_config SSSF_w32 -p SSSF -w 32' > /dev/null 2>&1
if [ $rc = 143 ] && [ "$s_stop" -ge 25 ] && [ "$s_stop" -lt 100 ] && [[ "$out" == *"resume $dir/b/tiny/SSSF_w32.s1 from step $s_stop"* ]] && [ -s "$log.gz" ] \
    && cmp -s <(numbers "$log.gz") <(numbers "$dir/c/tiny/SSSF_w32.s1.jsonl.gz"); then
    pass "experiments resume" "$(echo "$out" | grep -o 'from step [0-9]*'), finished log equal to the uninterrupted run's ($(numbers "$log.gz" | wc -l) records)"
else fail "experiments resume" "grid exit $rc, checkpoint at step $s_stop; $(echo "$out" | tr '\n' ' ' | cut -c1-200)"; fi

# the t4096 and t2048 grids of f2_laziness.sh, with a stand-in trainer that logs its flags: all-F
# first, then SSSF at the size's three windows (the ends of the range first), five seeds each, at
# their T with their needle symbols and queries
stub="$dir/stub_trainer.sh"
printf '#!/bin/sh\necho "$*" >> "$CALLS"\nwhile [ $# -gt 1 ]; do [ "$1" = -o ] && : > "$2"; shift; done\n' > "$stub"
chmod +x "$stub"
for grid in "t4096 4096 8 496 256 64 1024 256" "t2048 2048 16 248 128 32 512 128"; do
    read -r size T B q sym w1 w2 w3 <<< "$grid"
    want=$(for c in F "SSSF_w$w1" "SSSF_w$w2" "SSSF_w$w3"; do for s in 1 2 3 4 5; do printf '%s.s%s.jsonl ' "$c" "$s"; done; done)
    calls="$dir/calls_$size"
    out=$(CALLS="$calls" SIZE=$size SEEDS= STEPS=4000 EXTRA= LEVER=plan LOGDIR="$dir/$size" TRAINER="$stub" bash dev/experiments/f2_laziness.sh 2>&1) || true
    plan=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "-o") { n = split($(i + 1), a, "/"); print a[n] } }' "$calls" 2> /dev/null | tr '\n' ' ')
    if [ "$plan" = "$want" ] && [ "$(grep -c -- "-T $T -B $B .*--needle-queries $q --needle-symbols $sym --eval-long-every 1000" "$calls")" = 20 ] \
        && [ "$(grep -c -- "-p SSSF -w $w2 " "$calls")" = 5 ]; then
        pass "experiments $size grid" "20 runs: F, SSSF W $w1, $w2, $w3 x 5 seeds at T $T, $sym symbols, $q queries, 2T and 4T every 1000 steps"
    else fail "experiments $size grid" "runs: $plan; $(echo "$out" | tail -n 2 | tr '\n' ' ')"; fi
done

# --eval-long-every 2 in a real run: the evals at steps 0, 2, 4 (the last) log the whole grid (5
# lengths), those at steps 1 and 3 the lengths up to T (3)
log="$dir/long.jsonl"
./train_cpu -L 2 -C 32 -H 2 -p SF -B 2 -T 64 -n 4 -v 0 --eval-every 1 --eval-long-every 2 --eval-samples 1 --eval-text 0 -o "$log" > "$dir/long.out" 2>&1
got=$(grep -o '"step": [0-9]*, "needle": {"lengths": \[[0-9, ]*\]' "$log" 2> /dev/null | awk -F'[][]' '{ split($1, s, " "); print s[2] + 0 ":" split($2, x, ",") }' | tr '\n' ' ')
if [ "$got" = "0:5 1:3 2:5 3:3 4:5 " ]; then pass "experiments --eval-long-every" "train_cpu -n 4 --eval-every 1 --eval-long-every 2: step:lengths $got"
else fail "experiments --eval-long-every" "step:lengths '$got'; $(tail -n 2 "$dir/long.out" | tr '\n' ' ')"; fi

# the log's first record is the run's config: model, schedule, data (a path with a quote, escaped)
# and needle flags; a resumed run does not write it again (the resume check above compares logs)
mkdir -p "$dir/q"
printf 'some text %.0s' $(seq 1 400) > "$dir/q/te\"xt.txt"
./train_cpu -L 2 -C 32 -H 2 -p SF -w 8 -B 2 -T 64 -n 1 -v 0 --eval-every 0 -s 5 --bytes -i "$dir/q/te\"xt.txt" --needle-queries 3 \
    -o "$dir/q/c.jsonl" > "$dir/q/c.out" 2>&1
got=$("$PY" - "$dir/q/c.jsonl" << 'EOF'
import json, sys
c = json.loads(open(sys.argv[1]).readline()).get("config", {})
print(c.get("data", "").endswith('/te"xt.txt'), c.get("pattern"), c.get("window"), c.get("T"), c.get("seed"), c.get("bytes"), c.get("needle_queries"), c.get("needle_symbols"))
EOF
)
if [ "$got" = "True SF 8 64 5 1 3 64" ]; then pass "experiments log config" "first record: data path with a quote, pattern, W, T, seed, bytes, queries, symbols = $got"
else fail "experiments log config" "got '$got'; $(tail -n 2 "$dir/q/c.out" | tr '\n' ' ')"; fi

# needle_share at the mini protocol: shares in [0, 1], rising with W, 1 at W = T; the needle or an
# earlier answer within W at least as often as the needle (a key is asked about ~4 times a
# sequence), and more often at W 32; a bad -w is an error
out=$(./dev/experiments/needle_share -T 1024 -w 32,128,512,1024 -n 300 2>&1)
shares=$(echo "$out" | awk -F'|' '/^\| +[0-9]/ { printf "%s ", $3 + 0 }')
near=$(echo "$out" | awk -F'|' '/^\| +[0-9]/ { printf "%s ", $4 + 0 }')
rc=0
err=$(./dev/experiments/needle_share -w 32,x 2>&1) || rc=$?
if echo "$shares" | awk '{ ok = NF == 4 && $4 == 1; for (i = 1; i <= NF; i++) { ok = ok && $i >= 0 && $i <= 1 && (i == 1 || $i >= $(i - 1)) } exit !ok }' \
    && echo "$shares $near" | awk '{ ok = NF == 8 && $5 > $1; for (i = 1; i <= 4; i++) { ok = ok && $(i + 4) >= $i && $(i + 4) <= 1 } exit !ok }' \
    && [ $rc = 1 ] && [[ "$err" == "error: -w '32,x': expected numbers separated by commas"* ]]; then
    pass "experiments needle_share" "T 1024, W 32/128/512/1024: needle $shares(rising, 1 at W = T), needle or an earlier answer $near; -w 32,x: $err"
else fail "experiments needle_share" "shares '$shares', near '$near', exit $rc: $err; $out"; fi

if ! "$PY" -c "import matplotlib" 2>/dev/null; then
    skip "experiments report" "no matplotlib for $PY (apt-get install python3-matplotlib)"
    skip "experiments report plots" "no matplotlib for $PY"
else
    # synthetic logs (the evals at steps 10 and 30 stop at T, as with --eval-long-every): 100k
    # tokens per step; accuracy 0 / 0.3 / 0.7 / 1.0 at steps 10..40 at every
    # depth but the farthest (depth 0 of length T: 0 until step 40, then 1; so the mean at T passes
    # 0.5 at step 30, the farthest needle at 40), the F head 0.2 / 0.6 / 0.9 / 1.0; val loss 2.5 at
    # the end
    # SSSF_w64 and SSSF_w128 the same but for the F head: over 0.5 first at step 30 (W 64) and never
    # (W 128): the trend test's one ordering of 90 that is wholly increasing, p = 1/90; all-F (the
    # reference row) as W 64. A second size, cens: W 32 and W 512 whose F head never passes 0.5
    # (every run censored: not settled), W 512 stopped after its step-30 eval, which stops at T
    # (final accuracy 0.56 at T, "-" at 2T and 4T)
    mkdir -p "$dir/syn/mini"
    "$PY" - "$dir/syn/mini" "$dir/syn/cens" << 'EOF'
import gzip, json, os, sys
mini, cens = sys.argv[1], sys.argv[2]
runs = [(mini, "SSSF_w32", 32, (0.2, 0.6, 0.9, 1.0), (1, 2)), (mini, "SSSF_w64", 64, (0.2, 0.3, 0.6, 1.0), (1, 2)),
        (mini, "SSSF_w128", 128, (0.1, 0.2, 0.3, 0.4), (1, 2)), (mini, "F", 0, (0.2, 0.3, 0.6, 1.0), (1, 2)),
        (cens, "SSSF_w32", 32, (0.1, 0.2, 0.3, 0.4), (1,)), (cens, "SSSF_w512", 512, (0.1, 0.2, 0.3, 0.4), (2,))]
for (folder, name, w, head_of, seeds), seed in ((run, s) for run in runs for s in run[4]):
    os.makedirs(folder, exist_ok=True)
    with gzip.open(f"{folder}/{name}.s{seed}.jsonl.gz", "wt") as f:
        if w != 128:  # W 128 as a log from before the config record
            config = {"T": 1024, "window": w, "seed": seed, "needle_key": 1, "needle_val": 2, "needle_density": 30, "needle_queries": 128, "needle_symbols": 64}
            if w == 64:  # as a run of 50 steps stopped after 40
                config["steps"] = 50
            f.write(json.dumps({"step": 0, "config": config}) + "\n")
        f.write(json.dumps({"step": 1, "loss": 5.0, "lr": 1e-3, "grad_norm": 1.0, "tok_per_s": 1e6, "ms": 100.0}) + "\n")
        evals = ((10, 0.0), (20, 0.3), (30, 0.7), (40, 1.0))[:3 if w == 512 else 4]  # W 512: stopped after step 30
        for (step, acc), head in zip(evals, head_of):
            rows = [[a] * 5 for a in (acc, acc, acc, acc / 2, 0.0)]
            rows[2][0] = 1.0 if step == 40 else 0.0
            layers = [{"layer": 0, "type": "S", "score": [0.1, 0.0], "mass": [0, 0]}, {"layer": 1, "type": "F", "score": [head, 0.0], "mass": [0, 0]}]
            lengths = [256, 512, 1024, 2048, 4096][:5 if step in (20, 40) else 3]  # --eval-long-every 20: 2T and 4T at 20 and 40
            f.write(json.dumps({"step": step, "needle": {"lengths": lengths, "depths": [0, 0.25, 0.5, 0.75, 1], "acc": rows[:len(lengths)], "retrieval_len": 1024, "attn_layers": layers}}) + "\n")
        f.write(json.dumps({"step": 40, "val_loss": 2.5}) + "\n")
EOF
    msg=$("$PY" dev/experiments/report.py --logs "$dir/syn" --out "$dir/synres" --calibration "$dir/syn/mini" 2>&1)
    md="$dir/synres/mini/results.md"
    # W 32's shares of questions inside the window (needle; nearest copy): needle_share with each
    # seed's flags, their means, then the formula
    cell() { ./dev/experiments/needle_share -T 1024 -w 32 -s "$1" | awk -F'|' -v c="$2" '/^\| +32 \|/ { printf "%.3f", $c }'; }
    mean2() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (a + b) / 2 }'; }
    s1=$(cell 1 3); s2=$(cell 2 3); c1=$(cell 1 4); c2=$(cell 2 4)
    share32="$(mean2 "$s1" "$s2") ($s1, $s2) | $(mean2 "$c1" "$c2") ($c1, $c2) | 0.140"
    if grep -q '^| SSSF_w32 | 2 | 3 (3, 3) | 4 (4, 4) | 1.00 (1.00, 1.00) | 0.50 (0.50, 0.50) | 0.00 (0.00, 0.00) | 2.500 (2.500, 2.500) |$' "$md" 2> /dev/null \
        && grep -qF "| SSSF W 32 | 2 | 20 (20, 20) | 4 (4, 4) | 1.00 (1.00, 1.00) | 1.00 (1.00, 1.00) / 0.50 (0.50, 0.50) / 0.00 (0.00, 0.00) | $share32 |" "$md" \
        && [ -n "$s1" ] && [ -n "$c2" ] \
        && grep -q '^| SSSF W 128 | 2 | - (-, -) | 4 (4, 4) | 0.40 (0.40, 0.40) | .* | - (-, -) | - (-, -) | 0.385 |$' "$md" \
        && grep -q 'JT = 12 (null mean 6); p = 0.0111 for heads forming later with larger W, p = 1.0000 for earlier. At α = 0.05: \*\*reproduced' "$md" \
        && grep -q '^| all-F (reference) | 2 | 30 (30, 30) | 4 (4, 4) | 1.00 (1.00, 1.00) | 1.00 (1.00, 1.00) / 0.50 (0.50, 0.50) / 0.00 (0.00, 0.00) | - | - | - |$' "$md" \
        && grep -q '^| SSSF W 512 | 1 | - (-) | - (-) | 0.30 (0.30) | 0.56 (0.56) / - (-) / - (-) | ' "$dir/synres/cens/results.md" \
        && grep -q 'over 2 runs, 2 censored at their end): .* \*\*not settled (no F head formed in any of the 2 runs)\*\*' "$dir/synres/cens/results.md" \
        && grep -q '^| SSSF_w32 | 2 | 1.00 | 1: 1.00 | 0: 0.10 |$' "$md" \
        && grep -q '^| SSSF_w32.s2 | 1024 | 40 | 30 | 20 | 1.00 / 0.50 / 0.00 | 1.00 | 1.00 |$' "$dir/synres/calibration.md" \
        && grep -q '^| SSSF_w64.s1 | 1024 | 40 of 50 | 30 | 30 | 1.00 / 0.50 / 0.00 | 1.00 | 1.00 |$' "$dir/synres/calibration.md"; then
        pass "experiments report" "known events: acc > 0.5 after 3M tokens (step 30), the farthest needle after 4M, F head > 0.5 at step 20 (W 32), 30 (W 64), never (W 128: censored), questions within W 32 $share32 (needle and nearest copy by needle_share per seed, formula; W 128 without config: -), trend p = 1/90 -> reproduced, all-F reference row, every run censored -> not settled, a stopped run's final acc 0.56 / - / -, final acc 1.00 / 0.50 / 0.00 at T / 2T / 4T, final F head 1.00 in layer 1, S 0.10 in layer 0; the calibration table too (T, a run stopped at step 40 of 50)"
    else fail "experiments report" "$msg; $(grep SSSF "$md" 2> /dev/null | tr '\n' ' ')"; fi
    msg=$("$PY" dev/experiments/report.py --self-test 2>&1)
    if [[ "$msg" == *"self-test: 10 passed, 0 failed" ]]; then pass "experiments trend test" "exact JT p-values by counting = by enumerating every assignment, 9 cases with ties and censored runs; strictly increasing groups p = 1/90"
    else fail "experiments trend test" "$(echo "$msg" | grep -v '^ok' | tr '\n' ' ')"; fi
    msg=$("$PY" dev/experiments/report.py --logs "$dir/a" --out "$dir/res" --calibration "$dir/none" 2>&1)
    missing=""
    for f in f1_emergence f2_laziness f3_nope; do [ -s "$dir/res/tiny/$f.png" ] || missing="$missing $f.png"; done
    if [ -z "$missing" ] && grep -q '^| SSSF_w32 | NoPE | 1 |' "$dir/res/tiny/results.md"; then pass "experiments report plots" "$msg"
    else fail "experiments report plots" "missing$missing: $msg"; fi
fi
# the recall protocol (f2_recall.sh): the pilot's three learning rates side by side leave complete
# logs (one thread each: three OpenMP runs on two cores would spin against each other); the grid
# refuses to start before the pilot's choice exists
out=$(OMP_NUM_THREADS=1 LOGDIR="$dir/r" SIZE=recall_tiny STEPS=104 EVAL_EVERY=52 EVAL_EARLY=0 PHASE=pilot bash dev/experiments/f2_recall.sh 2>&1)
n=$(ls "$dir/r/recall_tiny_pilot/"*.jsonl.gz 2>/dev/null | wc -l)
grid=$(LOGDIR="$dir/r" SIZE=recall_tiny PHASE=grid bash dev/experiments/f2_recall.sh 2>&1)
if [ "$n" = 3 ] && zcat "$dir/r/recall_tiny_pilot/F_lr2e-3.s1.jsonl.gz" | grep -q '"recall": {"edges": \[2, 8, 32\]' \
    && [[ "$grid" == "error: PHASE=grid: no dev/experiments/results/recall_tiny_pilot/lr.txt: run PHASE=pilot"* ]]; then
    pass "experiments recall pilot" "f2_recall.sh PHASE=pilot: 3 complete logs (lr 5e-4, 1e-3, 2e-3) with recall records; PHASE=grid without the pilot's choice: one clear line"
else fail "experiments recall pilot" "$n logs; $(echo "$out" | tail -n 2 | tr '\n' ' '); $grid"; fi

# report_recall.py on synthetic recall logs with known events (evals every 50 steps to 400; the far
# bin and the best F head there at 1.0 / 0.9 from a run's formation step on, 0.1 before):
#   pilot: lr 5e-4 never, 1e-3 and 2e-3 at step 300 -> the tie goes to the smaller rate, 1e-3
#   grid: F at 200; W 32 at 100 and 150 (seed 2 also over the bar at step 50 alone, which does not count); W 128
#   at 200; W 512 never (its S layers answer the bins inside the window) and a seed 3 that learned
#   nothing (left out of the test): p_later = 1/90, R >= 400/100 -> reproduced
#   lever: every run forms, W 512 earlier (50, 100) than W 32 (200, 250): p_earlier = 1/6 but R's
#   bootstrap interval lies below 1.1 -> refuted
if "$PY" -c "import matplotlib" 2> /dev/null; then
    "$PY" - "$dir/rs" << 'EOF'
import gzip, json, os, sys
root = sys.argv[1]
def write(folder, name, seed, pattern, w, form, blip=False, nothing=False, s_solves=False):
    os.makedirs(f"{root}/{folder}", exist_ok=True)
    with gzip.open(f"{root}/{folder}/{name}.s{seed}.jsonl.gz", "wt") as f:
        f.write(json.dumps({"step": 0, "config": {"pattern": pattern, "windows": [w], "T": 1024, "seed": seed}}) + "\n")
        for step in range(0, 401, 50):
            on = form is not None and step >= form or (blip and step == 50)
            far, head = (1.0, 0.9) if on else (0.1, 0.1)
            near = 0.1 if nothing else 0.9 if (on or s_solves) else 0.1
            s_score = 0.8 if s_solves else 0.05
            layers = [{"layer": 0, "type": "S", "score": [[s_score] * 3 + [0.0]], "mass": [[0.0] * 4]},
                      {"layer": 1, "type": "F", "score": [[0.0, 0.0, 0.0, head]], "mass": [[0.0] * 4]}]
            rec = {"edges": [32, 128, 512], "sequences": 4, "count": [10, 10, 10, 10], "acc": [near, near, near, far], "attn_layers": layers}
            if step == 400:
                rec["ablation"] = {"mode": "mean", "names": ["l0", "l1", "S", "F"], "acc": [[near] * 3 + [far], [near] * 3 + [0.0], [0.1] * 4, [near] * 3 + [0.0]]}
            if step > 0:
                f.write(json.dumps({"step": step, "loss": 2.0, "lr": 1e-3, "grad_norm": 1.0, "tok_per_s": 1e6, "ms": 100.0}) + "\n")
            f.write(json.dumps({"step": step, "recall": rec}) + "\n")
for lr, form in (("5e-4", None), ("1e-3", 300), ("2e-3", 300)):
    write("recall_pilot", f"F_lr{lr}", 1, "F", 16, form)
for seed in (1, 2):
    write("recall", "F", seed, "F", 16, 200)
    write("recall", "SSSF_w32", seed, "SSSF", 32, 100 if seed == 1 else 150, blip=seed == 2)
    write("recall", "SSSF_w128", seed, "SSSF", 128, 200)
    write("recall", "SSSF_w512", seed, "SSSF", 512, None, s_solves=True)
write("recall", "SSSF_w512", 3, "SSSF", 512, None, nothing=True)
for seed, (a, b) in enumerate(((200, 50), (250, 100)), 1):
    write("recall_lever", "SSSF_w32", seed, "SSSF", 32, a)
    write("recall_lever", "SSSF_w512", seed, "SSSF", 512, b)
EOF
    msg=$("$PY" dev/experiments/report.py --logs "$dir/rs" --out "$dir/rsres" --calibration "$dir/none" 2>&1)
    md="$dir/rsres/recall/results.md"
    if [ "$(cat "$dir/rsres/recall_pilot/lr.txt" 2> /dev/null)" = 1e-3 ] && grep -q '^| 5e-4 | - | learned nothing |' "$dir/rsres/recall_pilot/results.md" \
        && grep -q '^| SSSF_w32 | 2 | 100, 150 | 2 / 0 / 0 | 100 | -, - | ' "$md" \
        && grep -q '^| SSSF_w512 | 3 | -, -, - | 0 / 2 / 1 | > 400 | 0, 0, - | ' "$md" \
        && grep -q '^| F | 2 | 200, 200 | 2 / 0 / 0 | 200 | -, - | ' "$md" \
        && grep -q 'over 6 runs, 2 censored at their end; runs that learned nothing, left out: 1): JT = 12 (null mean 6), p_later = 0.0111' "$md" \
        && grep -q 'R = median(W 512) / median(W 32) = >= 4.00' "$md" && grep -q '\*\*reproduced\*\*' "$md" \
        && grep -q 'p_earlier = 0.1667' "$dir/rsres/recall_lever/results.md" && grep -q 'bootstrap 95% interval of R \[0.20, 0.50\]' "$dir/rsres/recall_lever/results.md" \
        && grep -q '\*\*refuted\*\*' "$dir/rsres/recall_lever/results.md" \
        && [ -s "$dir/rsres/recall/recall_km.png" ] && [ -s "$dir/rsres/recall/recall_ablation.png" ] && [ -s "$dir/rsres/recall/recall_bins.png" ]; then
        pass "experiments recall report" "pilot: lr 1e-3 (tie at step 300 to the smaller rate); formation 100 and 150 (a one-eval blip at 50 does not count), 200, censored; 1 run that learned nothing left out; p_later = 1/90, R >= 4.00 -> reproduced; every run formed, W 512 earlier: bootstrap interval [0.20, 0.50] -> refuted; the three plots"
    else fail "experiments recall report" "$msg; $(grep -E '^\| (SSSF|F)' "$md" 2> /dev/null | tr '\n' ' '); $(grep -E 'JT|R =|\*\*' "$md" "$dir/rsres/recall_lever/results.md" 2> /dev/null | tr '\n' ' ')"; fi
else
    skip "experiments recall report" "no matplotlib for $PY"
fi
summary
