# test_lib.sh — sourced by the shell tests: the PASS/FAIL/SKIP lines and counters test/run.sh
# reads, and what the trainer tests look at in logs and checkpoints.
passed=0; failed=0; skipped=0
pass() { echo "PASS $1: $2"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }
# skip_n N WHAT WHY: N checks skipped for one reason, one line
skip_n() { echo "SKIP $2 ($1 checks): $3"; skipped=$((skipped + $1)); }
# the summary line; the exit status says whether all passed
summary() {
    echo "$passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
}
# the numbers of a log (plain or .gz) that must not depend on timing: tok/s, MFU and ms dropped
numbers() { gzip -dcf "$1" | sed -e 's/, "tok_per_s".*$//'; }
# the optimizer step recorded in a checkpoint header (int32 [14])
ckpt_step() { od -An -t d4 -j 56 -N 4 "$1" | tr -d ' '; }
# waits (60 s at most) until the JSONL log $1 holds $2 steps: the trainer is in its training loop
wait_logged() {
    local n=0 waited=0
    while [ "$n" -lt "$2" ] && [ $waited -lt 600 ]; do
        sleep 0.1; waited=$((waited + 1))
        n=$(grep -c loss "$1" 2> /dev/null) || true  # grep -c prints 0 for none, nothing without the file
        n=${n:-0}
    done
}
# stop_run PID SIGNAL LOG: sends SIGNAL to the run PID once its LOG holds 3 steps, waits for it; sets rc
# (its exit status) and last (the last step its log holds)
stop_run() {
    wait_logged "$3" 3
    kill -"$2" "$1"
    wait "$1"
    rc=$?
    last=$(grep loss "$3" | tail -n 1 | sed -e 's/^{"step": \([0-9]*\),.*/\1/')
}
