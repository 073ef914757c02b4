# test_lib.sh — sourced by the shell tests: the PASS/FAIL/SKIP lines and counters test/run.sh
# reads, and what the trainer tests look at in logs and checkpoints.
passed=0; failed=0; skipped=0
pass() { echo "PASS $1: $2"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }
# the summary line; the exit status says whether all passed
summary() {
    echo "$passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
}
# the numbers of a log (plain or .gz) that must not depend on timing: tok/s, MFU and ms dropped
numbers() { gzip -dcf "$1" | sed -e 's/, "tok_per_s".*$//'; }
# the optimizer step recorded in a checkpoint header (int32 [14])
ckpt_step() { od -An -t d4 -j 56 -N 4 "$1" | tr -d ' '; }
