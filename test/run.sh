#!/usr/bin/env bash
# Runs each test program given as an argument, shows its output, and sums the
# "N passed, N failed, N skipped" lines they end with into one final line of the same form; each
# program's own line gets its elapsed time, and a table of the times ends the run.
# A program that dies without its summary line counts as one failure.
# OpenMP sizes its team by the CPUs it may run on, not by a container's CPU quota (cgroup cpu.max):
# under a 2-CPU quota on a many-core host its threads would spin against each other. Unless
# OMP_NUM_THREADS is set, the tests use as many threads as the quota allows.
if [ -z "${OMP_NUM_THREADS:-}" ] && read -r quota period < /sys/fs/cgroup/cpu.max 2> /dev/null && [ "$quota" != max ]; then
    cpus=$(( (quota + period - 1) / period ))
    if [ "$cpus" -lt "$(nproc)" ]; then export OMP_NUM_THREADS=$cpus; echo "OMP_NUM_THREADS=$cpus (the CPU quota of this cgroup)"; fi
fi
passed=0; failed=0; skipped=0; times=()
start=$SECONDS
for prog in "$@"; do
    echo "== $prog"
    out=$(mktemp)
    t0=$SECONDS
    "./$prog" 2>&1 | tee "$out"
    last=$(tail -n 1 "$out")
    if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)?$ ]]; then
        passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2])); skipped=$((skipped + ${BASH_REMATCH[4]:-0}))
    else
        echo "FAIL $prog: ended without its summary line (crashed?)"
        failed=$((failed + 1))
    fi
    times+=("$(printf '%5d s  %s' $((SECONDS - t0)) "$prog")")
    echo "-- $prog: $((SECONDS - t0)) s"
    rm -f "$out"
done
echo "== time per program (all: $((SECONDS - start)) s)"
printf '%s\n' "${times[@]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
