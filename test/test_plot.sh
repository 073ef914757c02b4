#!/usr/bin/env bash
# test_plot.sh — dev/plot.py draws every plot from the committed example log (Debian's python3 with
# python3-matplotlib; skipped with the reason when matplotlib is missing), by default into a folder
# next to the log; a python3 without matplotlib gets a one-line hint instead of a traceback.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
out=$(mktemp -d)
passed=0; failed=0
# without matplotlib (a Python that lacks it): one line that says how to get it, exit 1
PLAIN=$(command -v python3)
if [ -n "$PLAIN" ] && ! "$PLAIN" -c "import matplotlib" 2> /dev/null; then
    msg=$("$PLAIN" dev/plot.py dev/example/default.jsonl.gz -o "$out" 2>&1); rc=$?
    if [ $rc -ne 0 ] && [ "$(echo "$msg" | wc -l)" = 1 ] && [[ "$msg" == "error: plot.py needs matplotlib"*"apt-get install python3-matplotlib"* ]]; then
        echo "PASS plot.py without matplotlib -> one-line hint: $msg"; passed=$((passed + 1))
    else echo "FAIL plot.py without matplotlib -> one-line hint: rc $rc: $msg"; failed=$((failed + 1)); fi
fi
if ! "$PY" -c "import matplotlib" 2>/dev/null; then
    echo "SKIP plot.py draws the example log (3 checks): no matplotlib for $PY (apt-get install python3-matplotlib)"
    echo "$passed passed, $failed failed, 3 skipped"
    [ "$failed" -eq 0 ]; exit
fi
msg=$("$PY" dev/plot.py dev/example/default.jsonl.gz -o "$out" --step 200 2>&1)
missing=""
for f in loss needle_acc needle_grid retrieval_heads retrieval_best; do
    [ -s "$out/$f.png" ] || missing="$missing $f.png"
done
if [ -z "$missing" ]; then echo "PASS plot.py draws the example log: $msg"; passed=$((passed + 1))
else echo "FAIL plot.py draws the example log: missing$missing ($msg)"; failed=$((failed + 1)); fi
msg=$("$PY" dev/plot.py dev/example/default.jsonl.gz -o "$out" --step 123 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ "$msg" == *"--step 123: no needle eval at that step"* ]]; then echo "PASS plot.py bad --step -> error: $msg" | cut -c1-160; passed=$((passed + 1))
else echo "FAIL plot.py bad --step -> error: rc $rc, $msg"; failed=$((failed + 1)); fi
# the default folder: <log name>_plots next to the log
cp dev/example/default.jsonl.gz "$out/run.jsonl.gz"
msg=$("$PY" dev/plot.py "$out/run.jsonl.gz" 2>&1)
if [ -s "$out/run_plots/loss.png" ]; then echo "PASS plot.py default folder next to the log: $msg"; passed=$((passed + 1))
else echo "FAIL plot.py default folder next to the log: $msg"; failed=$((failed + 1)); fi
rm -rf "$out"
echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
