#!/usr/bin/env bash
# test_plot.sh — dev/plot.py draws every plot from the committed example log (Debian's python3 with
# python3-matplotlib; skipped with the reason when matplotlib is missing), by default into a folder
# next to the log; a python3 without matplotlib gets a one-line hint instead of a traceback. Bad
# input to plot.py and report.py (damaged, foreign or cut logs, non-UTF-8 bytes, a folder as a log,
# outputs that are files, inputs or unwritable, a config T the evals lack, seeds of two models): one
# line "error: ...", exit 1, a table of 20 rows; a log still being written and a null loss still plot.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT  # every way out, the skip included
passed=0; failed=0; skipped=0
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

# Bad input to the tools (plot.py; report.py through the same reader, dev/runlog.py): each row must
# exit 1 with one line on stderr, "error: " and the fault, never a traceback. The damaged logs are
# made from the example log's first 300 records, in the scratch folder $out/bad.
bad="$out/bad"
mkdir -p "$bad/dir.jsonl" "$bad/lg/mini" "$bad/lg2/mini" "$bad/lg3/mini" "$bad/lg4/recall" "$bad/out_is_input"
"$PY" - "$bad" << 'PYEOF'
import gzip, json, os, sys
bad = sys.argv[1]
with gzip.open("dev/example/default.jsonl.gz", "rt") as f:
    recs = [json.loads(line) for _, line in zip(range(300), f)]
DEL = "delete the key"
def write(name, rs, opener=open):
    with opener(os.path.join(bad, name), "wt") as f:
        f.write("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rs))
def edit(kind, key, value):  # recs, the first record of kind (loss / needle) with key = value (DEL: deleted)
    out, done = [], False
    for r in recs:
        r = json.loads(json.dumps(r))
        if kind in r and not done:
            target = r if kind == "loss" else r[kind]
            if value == DEL:
                del target[key]
            else:
                target[key] = value
            done = True
        out.append(r)
    return out
write("good.jsonl", recs)
write("typed.jsonl", edit("loss", "loss", "x"))
write("missing.jsonl", edit("needle", "acc", DEL))
write("rowlen.jsonl", edit("needle", "acc", [[0.0] * 4] * 5))
write("range.jsonl", edit("needle", "acc", [[1.5] * 5] * 5))
write("nostep.jsonl", recs[:3] + [{"loss": 1.0}] + recs[3:])
write("notjson.jsonl", recs[:3] + ["{\"step\": 3, \"loss\": \n"] + recs[3:])
write("foreign.jsonl", recs[:3] + [{"step": 3, "hello": 1}])
write("running.jsonl", recs + ["{\"step\": 999, \"lo"])  # a trainer's last line, half written
write("nullloss.jsonl", edit("loss", "loss", None))
write("good.jsonl.gz", recs, gzip.open)
data = open(os.path.join(bad, "good.jsonl.gz"), "rb").read()
open(os.path.join(bad, "cut.jsonl.gz"), "wb").write(data[: len(data) // 2])
open(os.path.join(bad, "fake.jsonl.gz"), "wb").write(open(os.path.join(bad, "good.jsonl"), "rb").read())
open(os.path.join(bad, "latin1.jsonl"), "wb").write(open(os.path.join(bad, "good.jsonl"), "rb").read().replace(b'"needle"', b'"n\xe9edle"', 1))
write("out_is_input/loss.png", recs)  # a log under a name plot.py writes, in -o's folder
# report.py: a config record whose T is not among the eval lengths; two seeds of one config, two
# models; a wrong-typed tok_per_s; a recall log whose bins change
write("lg/mini/F.s1.jsonl.gz", [{"step": 0, "config": {"T": 2048}}] + recs, gzip.open)
write("lg2/mini/F.s1.jsonl.gz", recs, gzip.open)
fewer = [json.loads(json.dumps(r)) for r in recs]
for r in fewer:
    if "needle" in r:
        r["needle"]["attn_layers"] = r["needle"]["attn_layers"][1:]
write("lg2/mini/F.s2.jsonl.gz", fewer, gzip.open)
write("lg3/mini/F.s1.jsonl.gz", edit("loss", "tok_per_s", "fast"), gzip.open)
rec = {"edges": [32], "acc": [0.5, 0.5], "attn_layers": [{"layer": 0, "type": "F", "score": [[0.5, 0.5]]}]}
write("lg4/recall/F.s1.jsonl.gz", [{"step": 1, "loss": 1.0, "tok_per_s": 1.0, "ms": 1.0}, {"step": 10, "recall": rec},
                                   {"step": 20, "recall": dict(rec, edges=[64])}], gzip.open)
PYEOF
touch "$bad/file"
# row NAME WANT COMMAND...: exit 1, stderr one line "error: ...WANT...", no traceback
row() {
    local name=$1 want=$2 msg rc; shift 2
    msg=$("$@" 2>&1 > /dev/null); rc=$?
    if [ $rc -eq 1 ] && [ "$(echo "$msg" | wc -l)" = 1 ] && [[ "$msg" == "error: "*"$want"* ]]; then
        echo "PASS bad input: $name -> ${msg:0:150}"; passed=$((passed + 1))
    else echo "FAIL bad input: $name -> exit $rc, wanted one line with '$want': $(echo "$msg" | tail -n 3 | tr '\n' ' ' | cut -c1-300)"; failed=$((failed + 1)); fi
}
P=("$PY" dev/plot.py)
row "a wrong-typed field" 'typed.jsonl:3: loss is "x", expected a number or null' "${P[@]}" "$bad/typed.jsonl" -o "$bad/o"
row "a missing field" 'missing.jsonl:2: needle: no "acc"' "${P[@]}" "$bad/missing.jsonl" -o "$bad/o"
row "a row of the wrong length" 'rowlen.jsonl:2: needle.acc[0] is [0.0, 0.0, 0.0, 0.0], expected a list of 5 items' "${P[@]}" "$bad/rowlen.jsonl" -o "$bad/o"
row "an accuracy past 1" 'needle.acc[0][0] is 1.5, expected a number in [0, 1]' "${P[@]}" "$bad/range.jsonl" -o "$bad/o"
row "a record without a step" 'nostep.jsonl:4: no "step"' "${P[@]}" "$bad/nostep.jsonl" -o "$bad/o"
row "a line that is not JSON" 'notjson.jsonl:4: not JSON' "${P[@]}" "$bad/notjson.jsonl" -o "$bad/o"
row "a record of no known kind" "foreign.jsonl:4: a record with none of config" "${P[@]}" "$bad/foreign.jsonl" -o "$bad/o"
row "a cut .gz" "cut.jsonl.gz: cannot read it" "${P[@]}" "$bad/cut.jsonl.gz" -o "$bad/o"
row "a plain file named .gz" "fake.jsonl.gz: cannot read it" "${P[@]}" "$bad/fake.jsonl.gz" -o "$bad/o"
row "non-UTF-8 bytes" "latin1.jsonl: byte 0xe9 is not UTF-8" "${P[@]}" "$bad/latin1.jsonl" -o "$bad/o"
row "a folder as the log" "dir.jsonl: a folder, expected a log file" "${P[@]}" "$bad/dir.jsonl" -o "$bad/o"
row "no such log" "nolog.jsonl: no such log file" "${P[@]}" "$bad/nolog.jsonl" -o "$bad/o"
row "-o an existing file" "-o $bad/file: exists and is not a folder" "${P[@]}" "$bad/good.jsonl" -o "$bad/file"
row "-o under a file" "-o $bad/file/o: cannot create it: Not a directory" "${P[@]}" "$bad/good.jsonl" -o "$bad/file/o"
row "-o holding the log as loss.png" "would overwrite the input $bad/out_is_input/loss.png" "${P[@]}" "$bad/out_is_input/loss.png" -o "$bad/out_is_input"
if [ "$(id -u)" != 0 ]; then
    mkdir -p "$bad/ro"; chmod 555 "$bad/ro"
    row "-o an unwritable folder" "-o $bad/ro: not writable" "${P[@]}" "$bad/good.jsonl" -o "$bad/ro"
else echo "SKIP bad input: -o an unwritable folder: root writes anywhere"; skipped=$((skipped + 1)); fi
R=("$PY" dev/experiments/report.py --calibration "$bad/none")
row "report.py: T not among the eval lengths" "F.s1.jsonl.gz: T 2048 is not among its last eval's lengths [32, 64, 128, 256, 512]" "${R[@]}" --logs "$bad/lg" --out "$bad/r"
row "report.py: two models under one config" "the seeds of one config must train one model" "${R[@]}" --logs "$bad/lg2" --out "$bad/r"
row "report.py: a wrong-typed tok_per_s" 'F.s1.jsonl.gz:3: tok_per_s is "fast"' "${R[@]}" --logs "$bad/lg3" --out "$bad/r"
row "report.py: a recall log whose bins change" "the recall eval at step 10 has bins [32], the last [64]" "${R[@]}" --logs "$bad/lg4" --out "$bad/r"
row "report.py: --out an existing file" "--out $bad/file: exists and is not a folder" "${R[@]}" --logs "$bad/lg3" --out "$bad/file"
# what must still work: a log a trainer is writing (its half-written last line left out, with a
# note), a step whose loss was not finite (null)
for f in running nullloss; do
    msg=$("${P[@]}" "$bad/$f.jsonl" -o "$bad/o_$f" 2>&1); rc=$?
    if [ $rc -eq 0 ] && [ -s "$bad/o_$f/loss.png" ] && { [ $f = nullloss ] || [[ "$msg" == *"the last line is incomplete"* ]]; }; then
        echo "PASS plot.py reads $f.jsonl: $(echo "$msg" | head -n 1 | cut -c1-150)"; passed=$((passed + 1))
    else echo "FAIL plot.py reads $f.jsonl: exit $rc: $msg"; failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
