#!/usr/bin/env bash
# test_plot.sh — dev/plot.py draws every plot from the committed example log (Debian's python3 with
# python3-matplotlib; skipped with the reason when matplotlib is missing).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
out=$(mktemp -d)
if ! "$PY" -c "import matplotlib" 2>/dev/null; then
    echo "SKIP plot.py draws the example log: no matplotlib for $PY (apt-get install python3-matplotlib)"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
fi
passed=0; failed=0
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
rm -rf "$out"
echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
