#!/usr/bin/env bash
# test_bad_input.sh — bad input to the programs, as a hostile but realistic user gives it: one row
# per case, each a command that must exit non-zero (not by a signal, not a hang: 30 s) with a given
# message on the last line of its stdout + stderr (so the error is what `> log 2>&1` ends with), no
# sanitizer report, and, for the cases that name outputs, the files it must leave byte for byte
# (sha256) as they were. Then the cases that must succeed: --ckpt-keep deletes only what it wrote,
# a version-1 checkpoint still loads.
#
# Classes: 1 paths that are not regular files; 2 outputs checked at start, never on an input, log
# and checkpoint writes checked; 3 --ckpt-keep; 4 numbers (overflow, non-finite, ranges, products);
# 5 checkpoints (checksum, header ranges, non-finite state); 6 data coherence; 7 flags that
# contradict each other; 8 messages (why an open failed).
#
# Programs: train_cpu and eval_needle from build/sanitize/ (AddressSanitizer + UBSan; make test
# builds them) when there, else ./; train_hybrid (./, when built) runs every row whose error comes
# before its first CUDA call, which is all of the error rows; its rows that train need a GPU.
source test/test_lib.sh  # pass, fail, skip, summary
export ASAN_OPTIONS=detect_leaks=0  # the programs exit through die() with their buffers held
SAN=build/sanitize
EV=$PWD/eval_needle; CPU=$PWD/train_cpu; EDIT=$PWD/test/ckpt_edit
if [ -x $SAN/train_cpu ] && [ -x $SAN/eval_needle ] && [ -x $SAN/test/ckpt_edit ]; then
    EV=$PWD/$SAN/eval_needle; CPU=$PWD/$SAN/train_cpu; EDIT=$PWD/$SAN/test/ckpt_edit
    echo "(train_cpu, eval_needle: the AddressSanitizer + UBSan builds in $SAN)"
fi
for p in "$EV" "$CPU" "$EDIT"; do [ -x "$p" ] || { fail "setup" "$p not built (make test builds it)"; summary; exit 1; }; done
ROOT=$PWD
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT  # every way out, skips and early failures included
cd "$dir" || exit 1
GPU=0
if [ -x "$ROOT/train_hybrid" ] && nvidia-smi -L > /dev/null 2>&1; then GPU=1; fi
# every row's model: small, fast on a CPU, head dim 32 (the GPU kernels' smallest)
M=(-L 2 -C 64 -H 2 -F 64 -B 2 -T 32 -p SF -w 8 --needle-frac 0 -v 0 --eval-every 0)

# mx FLAG...: M without those flags and their values, for a row that gives them itself (a flag given
# twice is refused)
mx() { local i; for ((i = 0; i < ${#M[@]}; i += 2)); do [[ " $* " == *" ${M[i]} "* ]] || printf '%s %s ' "${M[i]}" "${M[i + 1]}"; done; }

# le32 N: N as 4 little-endian bytes
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))\\x$(printf %02x $((($1 >> 24) & 255)))"; }
# shard FILE MAGIC VERSION N BYTES: an llm.c shard of N tokens of BYTES bytes each, from ascii.txt
shard() {
    { le32 "$2"; le32 "$3"; le32 "$4"; head -c 1012 /dev/zero
      if [ "$5" = 2 ]; then head -c $((2 * $4)) ascii.txt
      else head -c $((2 * $4)) ascii.txt | od -An -v -tx1 -w2 | while read -r a b; do printf "\\x$a\\x$b\\x00\\x00"; done; fi
    } > "$1"
}
yes 'the quick brown fox jumps over the lazy dog.' | head -c 20000 > ascii.txt  # pairs of ASCII bytes: ids < 32896
shard train.bin 20240520 1 4000 2; shard val.bin 20240520 1 2000 2; shard data.bin.step3 20240520 1 4000 2
shard llama.bin 20240801 7 4000 4; shard short.bin 20240520 1 10 2
# two shards whose second holds id 65535 at index 550000 of 600000 zeros (past the up-front check's
# first 1 MiB chunk): the run must stop at start, naming it
shard ids_a.bin 20240520 1 4000 2
{ le32 20240520; le32 1; le32 600000; head -c 1012 /dev/zero; head -c 1200000 /dev/zero; } > ids_b.bin
printf '\xff\xff' | dd of=ids_b.bin bs=1 seek=$((1024 + 2 * 550000)) conv=notrunc status=none
mkfifo fifo.bin; mkdir adir; cp ascii.txt text.txt; head -c 30 ascii.txt > tiny.txt
"$CPU" "${M[@]}" -n 3 -c good.ckpt > fixture.out 2>&1 || { fail "setup" "train_cpu fixture: $(tail -n 1 fixture.out)"; summary; exit 1; }
ln -s good.ckpt link.ckpt; mkdir sub
printf 'not a tokenizer' > tok.bin; printf 'notes\n' > notes.txt; ln -s dangling.ckpt dl.jsonl; cp val.bin val2.bin
LONG=$(printf 'c%.0s' {1..250})  # a name the save's ".step<k>" pushes past 255 bytes
"$CPU" "${M[@]}" -n 3 -c p0.ckpt --ckpt-opt 0 -o p0.jsonl > p0.out 2>&1 || { fail "setup" "params-only fixture: $(tail -n 1 p0.out)"; summary; exit 1; }
cp good.ckpt seed.ckpt; "$EDIT" seed.ckpt header 22 1073741825  # seed high word: past 2^62
cp good.ckpt nan_m.ckpt; "$EDIT" nan_m.ckpt m 5 nan
cp good.ckpt inf_p.ckpt; "$EDIT" inf_p.ckpt param 0 inf
cp good.ckpt neg_v.ckpt; "$EDIT" neg_v.ckpt v 9 -1
cp good.ckpt step.ckpt; "$EDIT" step.ckpt header 14 -1
cp good.ckpt tzero.ckpt; "$EDIT" tzero.ckpt header 17 0
cp good.ckpt wbig.ckpt; "$EDIT" wbig.ckpt header 8 2000000
cp good.ckpt h1.ckpt; printf '\001\000\000\000' | dd of=h1.ckpt bs=1 seek=24 conv=notrunc status=none  # H 2 -> 1, checksum stale
cp good.ckpt ver.ckpt; printf '\007' | dd of=ver.ckpt bs=1 seek=4 conv=notrunc status=none
cp good.ckpt flip.ckpt; printf '\377' | dd of=flip.ckpt bs=1 seek=5000 conv=notrunc status=none
head -c 3000 good.ckpt > trunc.ckpt
cp good.ckpt keep_me.ckpt

# bad NAME MESSAGE FILES CMD...: CMD exits non-zero with MESSAGE in its last output line, no sanitizer
# report, and every file of FILES (space-separated, "" = none) unchanged
bad() {
    local name=$1 msg=$2 files=$3; shift 3
    local before="" after="" rc=0 f
    for f in $files; do before+="$(sha256sum "$f") "; done
    timeout 30 "$@" > out.txt 2>&1 || rc=$?
    for f in $files; do after+="$(sha256sum "$f" 2> /dev/null) "; done
    local last
    last=$(tail -n 1 out.txt)
    if [ $rc -eq 0 ]; then fail "$name" "exit 0: $last"
    elif [ $rc -eq 124 ] || [ $rc -gt 128 ]; then fail "$name" "exit $rc (hang or signal): $last"
    elif grep -qE "Sanitizer|runtime error" out.txt; then fail "$name" "sanitizer report: $(grep -m1 -E "Sanitizer|runtime error" out.txt)"
    elif [[ "$last" != *"$msg"* ]]; then fail "$name" "last line is not '$msg': $last"
    elif [ "$before" != "$after" ]; then fail "$name" "changed: $files"
    else pass "$name" "$last"; fi
}

# rows both trainers take: TR is the trainer, TAG its name in the row names
trainer_rows() {
    local TR=$1 T=$2
    # round three: no file destroyed, no silent accept (flags once, exact ranges, the schedule on resume)
    bad "$T a flag given twice" "flag -n given twice: give it once" "" "$TR" "${M[@]}" -n 3 -n 4
    bad "$T -s 2^62+1" "flag -s: '4611686018427387905' is out of range" "" "$TR" "${M[@]}" -s 4611686018427387905
    bad "$T -i and -j one file" "-i 'val*.bin' and -j 'val.bin' both name val.bin" "" "$TR" "${M[@]}" -i 'val*.bin' -j val.bin -c ""
    bad "$T -o = --tokenizer" "-o tok.bin would overwrite or delete tok.bin, the file of --tokenizer" "tok.bin" "$TR" "${M[@]}" --tokenizer tok.bin -o tok.bin
    bad "$T -o a dangling link to -c's name" "-o dl.jsonl is a file the checkpoint saves of -c dangling.ckpt write or delete" "" "$TR" "${M[@]}" -o dl.jsonl -c dangling.ckpt
    bad "$T -c too long for its saves' names" "the names its saves derive from it (<-c>.tmp, <-c>.step<k>) would pass the OS's limits" "" "$TR" "${M[@]}" -c "$LONG"
    bad "$T -o not a log" "-o notes.txt exists and is not a log of this trainer" "notes.txt" "$TR" "${M[@]}" -o notes.txt
    bad "$T parameters-only resume onto a log" "-r p0.ckpt holds parameters only: a new run from step 0 starts from them and a new log, but -o p0.jsonl holds one already" "p0.jsonl" "$TR" "${M[@]}" -n 5 -r p0.ckpt -o p0.jsonl
    bad "$T resume with another schedule" "-r good.ckpt: this run's schedule differs: -l 0.001 (was 0.003) --wd 0.05 (was 0.1)" "good.ckpt" "$TR" "${M[@]}" -n 9 -r good.ckpt -l 1e-3 --wd 0.05
    bad "$T resume with another window list" "-w or --freeze (other windows or frozen layers); a resume continues the run's own schedule" "good.ckpt" "$TR" $(mx -w) -n 9 -r good.ckpt -w 4,8
    bad "$T resume -p longer than its L" "-r good.ckpt: its model is SF, L 2; -p FFF has 3 layers" "" "$TR" $(mx -p) -n 9 -r good.ckpt -p FFF
    bad "$T a pattern past 64 layers" "-p: a pattern of 65 layers, at most 64" "" "$TR" $(mx -p -L) -L 64 -p "$(printf 'F%.0s' {1..65})"
    bad "$T checkpoint seed outside -s's range" "seed.ckpt: corrupt checkpoint header: seed" "" "$TR" "${M[@]}" -n 9 -r seed.ckpt
    # 1. paths that are not regular files
    bad "$T FIFO as -i" "shard 'fifo.bin' is a FIFO (named pipe), expected a regular file" "" "$TR" "${M[@]}" -i fifo.bin -j val.bin
    bad "$T FIFO as -j" "shard 'fifo.bin' is a FIFO (named pipe)" "" "$TR" "${M[@]}" -i train.bin -j fifo.bin
    bad "$T directory as -i" "shard 'adir' is a directory" "" "$TR" "${M[@]}" -i adir -j val.bin
    bad "$T --bytes directory" "bytes data 'adir' is a directory" "" "$TR" "${M[@]}" --bytes -i adir
    bad "$T --bytes FIFO" "bytes data 'fifo.bin' is a FIFO" "" "$TR" "${M[@]}" --bytes -i fifo.bin
    bad "$T -r FIFO" "checkpoint 'fifo.bin' is a FIFO" "" "$TR" "${M[@]}" -n 9 -r fifo.bin
    bad "$T -r directory" "checkpoint 'adir' is a directory" "" "$TR" "${M[@]}" -n 9 -r adir
    bad "$T -r /dev/null" "checkpoint '/dev/null' is a device" "" "$TR" "${M[@]}" -n 9 -r /dev/null
    bad "$T -c directory" "-c adir is a directory, expected a regular file" "" "$TR" "${M[@]}" -c adir
    bad "$T -c FIFO" "-c fifo.bin is a FIFO" "" "$TR" "${M[@]}" -c fifo.bin
    bad "$T -o FIFO" "-o fifo.bin is a FIFO" "" "$TR" "${M[@]}" -o fifo.bin
    bad "$T -o directory" "-o adir is a directory" "" "$TR" "${M[@]}" -o adir
    bad "$T -o /dev/full" "-o /dev/full is a device" "" "$TR" "${M[@]}" -o /dev/full
    mkdir -p blocked.ckpt.tmp
    bad "$T -c whose .tmp is a directory" "-c blocked.ckpt.tmp is a directory" "" "$TR" "${M[@]}" -c blocked.ckpt
    # 2. outputs checked at start, never an input
    bad "$T -o = -r" "-o good.ckpt would overwrite or delete good.ckpt, the file of -r" "good.ckpt" "$TR" "${M[@]}" -n 5 -r good.ckpt -o good.ckpt
    bad "$T -o = -r via symlink" "-o link.ckpt would overwrite or delete good.ckpt, the file of -r" "good.ckpt" "$TR" "${M[@]}" -n 5 -r good.ckpt -o link.ckpt
    bad "$T -o = -r via .." "-o sub/../good.ckpt would overwrite or delete good.ckpt, the file of -r" "good.ckpt" "$TR" "${M[@]}" -n 5 -r good.ckpt -o sub/../good.ckpt
    bad "$T -o = -i" "-o train.bin would overwrite or delete train.bin, the file of -i" "train.bin" "$TR" "${M[@]}" -i train.bin -j val.bin -o train.bin
    bad "$T -c = -j" "-c ./val.bin would overwrite or delete val.bin, the file of -j" "val.bin" "$TR" "${M[@]}" -i 'tr*.bin' -j val.bin -c ./val.bin
    bad "$T -c = --bytes -i" "-c text.txt would overwrite or delete text.txt, the file of -i" "text.txt" "$TR" "${M[@]}" --bytes -i text.txt -c text.txt
    bad "$T -o = -c" "-o run.out is a file the checkpoint saves of -c ./run.out write or delete" "" "$TR" "${M[@]}" -o run.out -c ./run.out
    bad "$T -o = a kept save of -c" "-o run.ckpt.step7 is a file the checkpoint saves of -c run.ckpt write or delete" "" "$TR" "${M[@]}" -o run.ckpt.step7 -c run.ckpt
    bad "$T -o = the .tmp of -c" "-o x.ckpt.tmp is a file the checkpoint saves of -c x.ckpt write or delete" "" "$TR" "${M[@]}" -o x.ckpt.tmp -c x.ckpt
    bad "$T -c whose kept saves hit -i" "-c data.bin would overwrite or delete data.bin.step3, the file of -i" "data.bin.step3" "$TR" "${M[@]}" -i data.bin.step3 -j val.bin -c data.bin --ckpt-keep 2
    bad "$T -c in a missing directory" "-c nodir/x.ckpt: directory 'nodir': No such file or directory" "" "$TR" "${M[@]}" -c nodir/x.ckpt
    bad "$T -o in a missing directory" "-o nodir/x.jsonl: directory 'nodir'" "" "$TR" "${M[@]}" -o nodir/x.jsonl
    bad "$T -c under a file" "-c good.ckpt/x: 'good.ckpt' is not a directory" "" "$TR" "${M[@]}" -c good.ckpt/x
    # 4. numbers: overflow, non-finite, ranges, products; the value as typed
    bad "$T -n 2^32+3" "flag -n: '4294967299' is out of range, expected 0..1000000000" "" "$TR" "${M[@]}" -n 4294967299
    bad "$T -T beyond long" "flag -T: '99999999999999999999' is out of range" "" "$TR" $(mx -T) -T 99999999999999999999
    bad "$T -B 0" "flag -B: '0' is out of range, expected 1..65536" "" "$TR" $(mx -B) -B 0
    bad "$T -B hex" "flag -B: '0x10' is not an integer" "" "$TR" $(mx -B) -B 0x10
    bad "$T -l nan" "flag -l: 'nan' is not a finite number" "" "$TR" "${M[@]}" -l nan
    bad "$T -l -inf" "flag -l: '-inf' is not a finite number" "" "$TR" "${M[@]}" -l -inf
    bad "$T -l 0" "flag -l: '0' is out of range" "" "$TR" "${M[@]}" -l 0
    bad "$T --warmup -2" "flag --warmup: '-2' is out of range, expected -1..1000000000" "" "$TR" "${M[@]}" --warmup -2
    bad "$T --needle-frac -0.1" "flag --needle-frac: '-0.1' is out of range, expected 0..1" "" "$TR" $(mx --needle-frac) --needle-frac -0.1
    bad "$T --min-lr-frac 1.5" "flag --min-lr-frac: '1.5' is out of range" "" "$TR" "${M[@]}" --min-lr-frac 1.5
    bad "$T --decay-frac nan" "flag --decay-frac: 'nan' is not a finite number" "" "$TR" "${M[@]}" --decay-frac nan
    bad "$T --wd 1e400" "flag --wd: '1e400' is not a finite number" "" "$TR" "${M[@]}" --wd 1e400
    bad "$T --clip -1" "flag --clip: '-1' is out of range" "" "$TR" "${M[@]}" --clip -1
    bad "$T -s -1" "flag -s: '-1' is out of range" "" "$TR" "${M[@]}" -s -1
    bad "$T --needle-symbols 2^31" "flag --needle-symbols: '2147483648' is out of range" "" "$TR" "${M[@]}" --needle-symbols 2147483648
    bad "$T -L 65" "flag -L: '65' is out of range, expected 1..64" "" "$TR" $(mx -L) -L 65
    bad "$T B x T overflow" "-B 65536 -T 1048576: 68719476736 tokens per micro-batch, at most 16777216" "" "$TR" $(mx -B -T) -B 65536 -T 1048576
    # 5. checkpoints
    bad "$T -r NaN in AdamW m" "AdamW m of wte[5] is nan; refusing a non-finite checkpoint" "keep_me.ckpt" "$TR" "${M[@]}" -n 9 -r nan_m.ckpt -c keep_me.ckpt --ckpt-every 1
    bad "$T -r inf parameter" "parameter wte[0] is inf" "" "$TR" "${M[@]}" -n 9 -r inf_p.ckpt
    bad "$T -r negative AdamW v" "AdamW v of wte[9] is -1 (must be finite and >= 0)" "" "$TR" "${M[@]}" -n 9 -r neg_v.ckpt
    bad "$T -r H edited, checksum stale" "h1.ckpt: checksum mismatch" "" "$TR" "${M[@]}" -n 9 -r h1.ckpt
    bad "$T -r payload byte flipped" "flip.ckpt: checksum mismatch" "" "$TR" "${M[@]}" -n 9 -r flip.ckpt
    bad "$T -r step -1 (resealed)" "corrupt checkpoint header: step = -1, expected 0..1000000000" "" "$TR" "${M[@]}" -n 9 -r step.ckpt
    bad "$T -r T 0 (resealed)" "corrupt checkpoint header: T = 0, expected 1..1048576" "" "$TR" "${M[@]}" -n 9 -r tzero.ckpt
    bad "$T -r W 2000000 (resealed)" "corrupt checkpoint header: W = 2000000" "" "$TR" "${M[@]}" -n 9 -r wbig.ckpt
    bad "$T -r version 7" "checkpoint version 7, this build reads versions 1 and 2" "" "$TR" "${M[@]}" -n 9 -r ver.ckpt
    bad "$T -r truncated" "trunc.ckpt: 3000 bytes, expected" "" "$TR" "${M[@]}" -n 9 -r trunc.ckpt
    # 6. data coherence
    bad "$T a text file as shards" "it starts with text: to train on a text file as bytes, add --bytes" "" "$TR" "${M[@]}" -i text.txt -j val.bin
    bad "$T a later shard's bad id" "shard 'ids_b.bin': token 65535 at index 550000 is >= the data vocabulary 50257" "" "$TR" "${M[@]}" -i 'ids_*.bin' -j val.bin
    bad "$T llama-3 train, GPT-2 val" "-i 'llama.bin' holds llama-3 tokens (vocabulary 128256), -j 'val.bin' GPT-2 tokens (vocabulary 50257)" "" "$TR" "${M[@]}" -i llama.bin -j val.bin
    bad "$T shards shorter than a sequence" "shards 'short.bin': 10 tokens in all, need at least 33 (one sequence)" "" "$TR" "${M[@]}" -i short.bin -j val.bin
    bad "$T val shards shorter than a sequence" "shards 'short.bin': 10 tokens in all, need at least 33" "" "$TR" "${M[@]}" -i train.bin -j short.bin
    bad "$T --bytes shorter than a sequence" "bytes data 'tiny.txt': 30 bytes in all, its train split has 27, need at least 33" "" "$TR" "${M[@]}" --bytes -i tiny.txt
    # 7. flags that contradict each other
    bad "$T pattern longer than -L" "-p SSSF -L 2: the pattern has 4 layers, more than -L" "" "$TR" $(mx -p -L) -p SSSF -L 2
    bad "$T needle longer than T" "-T 6: a symbol needle with its question and answer takes 8 tokens" "" "$TR" $(mx -T --needle-frac) -T 6 --needle-frac 1 --needle-density 1
    bad "$T text needle longer than T" "a text needle with its question and answer takes" "" "$TR" $(mx --needle-frac) --needle-frac 1 --needle-kind text --needle-density 1
    bad "$T eval grid shorter than a needle" "the needle grid's shortest sample (T/4 = 4 tokens)" "" "$TR" $(mx -T --eval-every) -T 16 --eval-every 5
    bad "$T -j with --bytes" "-j with --bytes" "" "$TR" "${M[@]}" --bytes -i text.txt -j val.bin
    bad "$T resume -n = its step" "-r good.ckpt is at step 3 already: -n 3 trains nothing; give -n > 3" "good.ckpt" "$TR" "${M[@]}" -n 3 -r good.ckpt -c good.ckpt
    bad "$T resume -n < its step" "-r good.ckpt is at step 3 already: -n 1 trains nothing" "" "$TR" "${M[@]}" -n 1 -r good.ckpt
    bad "$T resume with another model's flags" "-r good.ckpt: its model is SF, L 2, C 64, H 2, F 64, W 8, pos F rope / S rope, mixer gdn; the flags -L 4 -p SFSF -w 16 describe another" "" "$TR" $(mx -L -w) -n 9 -r good.ckpt -L 4 -w 16
    bad "$T --warmup longer than -n" "--warmup 50 is longer than the run (-n 10)" "" "$TR" "${M[@]}" -n 10 --warmup 50
    bad "$T --ckpt-every without -c" "--ckpt-every 5 --ckpt-keep 1 without -c: no checkpoint is written" "" "$TR" "${M[@]}" --ckpt-every 5 -c ""
    bad "$T --ckpt-keep without -c" "--ckpt-every 0 --ckpt-keep 3 without -c" "" "$TR" "${M[@]}" --ckpt-keep 3 -c ""
    bad "$T --eval-early without --eval-every" "--eval-early 100 without --eval-every" "" "$TR" "${M[@]}" --eval-early 100
    bad "$T --eval-long-every without --eval-every" "--eval-long-every 100 without --eval-every: there are no needle evals to shorten" "" "$TR" "${M[@]}" --eval-long-every 100
    bad "$T resume other -T" "-r good.ckpt was trained with -T 32, this run gives -T 64" "" "$TR" $(mx -T) -n 9 -r good.ckpt -T 64
    bad "$T resume other -B" "-r good.ckpt was trained with -B 2, this run gives -B 3" "" "$TR" $(mx -B) -n 9 -r good.ckpt -B 3
    bad "$T resume other -a" "-r good.ckpt was trained with -a 1 on 1 GPU(s) (1 micro-batches a step), this run has -a 2 on 1 (2)" "" "$TR" "${M[@]}" -n 9 -r good.ckpt -a 2
    bad "$T resume other -s" "-r good.ckpt was trained with -s 1337, this run gives -s 7" "" "$TR" "${M[@]}" -n 9 -r good.ckpt -s 7
    bad "$T resume other needle mixture" "-r good.ckpt was trained on other data" "" "$TR" $(mx --needle-frac) -n 9 -r good.ckpt --needle-frac 0.5
    bad "$T resume other data files" "-r good.ckpt was trained on other data" "" "$TR" "${M[@]}" -n 9 -r good.ckpt --bytes -i text.txt
    bad "$T --sample without -r" "--sample needs -r CHECKPOINT" "" "$TR" "${M[@]}" --sample
    bad "$T --tokenizer FIFO" "--tokenizer 'fifo.bin' is a FIFO" "" "$TR" "${M[@]}" -i train.bin -j val.bin --tokenizer fifo.bin
    bad "$T --tokenizer not a tokenizer" "--tokenizer val.bin: magic 20240520 version 1, expected 20240328" "" "$TR" "${M[@]}" -i train.bin -j val.bin --tokenizer val.bin
    # 8. messages say why
    bad "$T missing -r" "checkpoint 'none.ckpt': No such file or directory" "" "$TR" "${M[@]}" -n 9 -r none.ckpt
    bad "$T missing shards" "shards: no file matches 'none*.bin'" "" "$TR" "${M[@]}" -i 'none*.bin' -j val.bin
}

# rows that train: a failing log or checkpoint write, --ckpt-keep with the user's own files around
trainer_run_rows() {
    local TR=$1 T=$2
    # a file size limit stands in for a full disk; the output goes through a pipe, which it does not limit
    bad "$T log write fails (file size limit)" "-o big.jsonl: write failed: File too large" "" \
        bash -c "set -o pipefail; (ulimit -f 1; trap '' XFSZ; exec $TR ${M[*]} -n 40 -o big.jsonl) 2>&1 | cat"
    cp good.ckpt save.ckpt
    bad "$T checkpoint write fails: old file kept" "save.ckpt.tmp: write failed: File too large (the checkpoint under its real name is untouched)" "save.ckpt" \
        bash -c "set -o pipefail; (ulimit -f 100; trap '' XFSZ; exec $TR $(mx -C) -C 128 -n 2 -c save.ckpt) 2>&1 | cat"
    if [ -e save.ckpt.tmp ]; then fail "$T failed save leaves no .tmp" "save.ckpt.tmp is there"; else pass "$T failed save leaves no .tmp" "only save.ckpt"; fi
    rm -f 'r[u]n.ckpt'* run.ckpt*
    touch run.ckpt.step_backup run.ckpt.step3 run.ckpt.step run.ckpt.step12x 'r[u]n.ckpt.step_old'
    timeout 60 "$TR" "${M[@]}" -n 6 -c 'r[u]n.ckpt' --ckpt-every 1 --ckpt-keep 2 > keep.out 2>&1
    local left
    left=$(LC_ALL=C ls run.ckpt* 'r[u]n.ckpt'* | tr '\n' ' ')
    if [ "$left" = "r[u]n.ckpt r[u]n.ckpt.step5 r[u]n.ckpt.step_old run.ckpt.step run.ckpt.step12x run.ckpt.step3 run.ckpt.step_backup " ]; then
        pass "$T --ckpt-keep deletes only its own saves" "left: $left"
    else fail "$T --ckpt-keep deletes only its own saves" "left: $left; $(tail -n 1 keep.out)"; fi
}

trainer_rows "$CPU" train_cpu
trainer_run_rows "$CPU" train_cpu
if [ -x "$ROOT/train_hybrid" ]; then
    trainer_rows "$ROOT/train_hybrid" train_hybrid
    # the GPU kernels' head dims, checked before the first CUDA call (R layers only: no attention check first)
    bad "train_hybrid R layers at head dim 96" "-C 192 -H 2: head dim 96, the GPU recurrent mixer takes 16, 32, 48, 64 or 128" "" \
        "$ROOT/train_hybrid" $(mx -p -C -H) -p RR -C 192 -H 2
    if [ $GPU = 1 ]; then trainer_run_rows "$ROOT/train_hybrid" train_hybrid
    else skip "train_hybrid rows that train (log and checkpoint write failures, --ckpt-keep)" "no CUDA GPU found"; fi
else
    skip "train_hybrid rows" "train_hybrid not built (no nvcc)"
fi

# eval_needle
bad "eval_needle -c FIFO" "checkpoint 'fifo.bin' is a FIFO" "" "$EV" -c fifo.bin
bad "eval_needle -c directory" "checkpoint 'adir' is a directory" "" "$EV" -c adir
bad "eval_needle -c /dev/null" "checkpoint '/dev/null' is a device" "" "$EV" -c /dev/null
bad "eval_needle --depths nan" "--depths 'nan': 'nan' is not a number in 0..1" "" "$EV" -c good.ckpt --depths nan --lengths 32 -N 1
bad "eval_needle --depths 0,1.5" "--depths '0,1.5': '1.5' is not a number in 0..1" "" "$EV" -c good.ckpt --depths 0,1.5 -N 1
bad "eval_needle --depths inf" "'inf' is not a number" "" "$EV" -c good.ckpt --depths inf -N 1
bad "eval_needle --lengths 1e12" "--lengths '1e12': '1e12' is not an integer in 1..4194304" "" "$EV" -c good.ckpt --lengths 1e12 -N 1
bad "eval_needle --lengths 3.5" "'3.5' is not an integer" "" "$EV" -c good.ckpt --lengths 3.5 -N 1
bad "eval_needle --lengths 0" "'0' is not an integer in 1..4194304" "" "$EV" -c good.ckpt --lengths 0 -N 1
bad "eval_needle --lengths shorter than a needle" "length 4 of the grid (-T 32 or --lengths) cannot hold a needle with its question (8 tokens)" "" "$EV" -c good.ckpt --lengths 4,32 -N 1
bad "eval_needle -N 2^32+1" "flag -N: '4294967297' is out of range, expected 1..100000" "" "$EV" -c good.ckpt -N 4294967297
bad "eval_needle -T -1" "flag -T: '-1' is out of range" "" "$EV" -c good.ckpt -T -1
bad "eval_needle -T 2" "length 0 of the grid" "" "$EV" -c good.ckpt -T 2
bad "eval_needle grid too large" "needle grid: 2097152000000 tokens in all" "" "$EV" -c good.ckpt --lengths 4194304 -N 100000
bad "eval_needle checksum" "h1.ckpt: checksum mismatch" "" "$EV" -c h1.ckpt
bad "eval_needle NaN state" "AdamW m of wte[5] is nan" "" "$EV" -c nan_m.ckpt
bad "eval_needle --lengths empty" "--lengths: empty list" "" "$EV" -c good.ckpt --lengths ''
bad "eval_needle --lengths twice the same" "--lengths '32,32': 32 is there twice" "" "$EV" -c good.ckpt --lengths 32,32
bad "eval_needle -j with --bytes" "-j with --bytes: byte data takes its val split from the last 10% of -i" "" "$EV" -c good.ckpt --bytes -i text.txt -j val.bin
bad "eval_needle a flag given twice" "flag -N given twice" "" "$EV" -c good.ckpt -N 1 -N 2
bad "needle_share key and value past the needle's room" "--needle-key 61 --needle-val 61: together at most 62" "" "$ROOT/dev/experiments/needle_share" --needle-key 61 --needle-val 61
bad "eval_needle data of another vocabulary" "vocabulary 322, the data gives 128322" "" "$EV" -c good.ckpt -i llama.bin -j llama.bin

# a version-1 checkpoint (no run record, no checksum) still evaluates and resumes
cp good.ckpt v1.ckpt
printf '\001' | dd of=v1.ckpt bs=1 seek=4 conv=notrunc status=none
head -c 56 /dev/zero | dd of=v1.ckpt bs=1 seek=72 conv=notrunc status=none  # ints 18..31: the run record and checksum
head -c 68 /dev/zero | dd of=v1.ckpt bs=1 seek=192 conv=notrunc status=none  # ints 48..64: the schedule record
if timeout 60 "$EV" -c v1.ckpt -N 1 > v1.out 2>&1 && timeout 60 "$CPU" "${M[@]}" -n 5 -r v1.ckpt > v1r.out 2>&1 \
    && grep -q "a version-1 checkpoint records no -B, -a, -s or data" v1r.out; then
    pass "version-1 checkpoint" "eval_needle reads it; a resume says what it cannot check: $(grep version-1 v1r.out)"
else fail "version-1 checkpoint" "$(tail -n 1 v1.out) / $(tail -n 1 v1r.out)"; fi

cd "$ROOT"
summary
