#!/usr/bin/env bash
# all.sh — every run of the three findings at one model size, in the order f1, f2, f3 (each skips
# the runs already complete, those another finding shares included). DEADLINE counts from the
# start of all.sh; a signal stops the grid as in common.sh. Settings: common.sh. The plots and
# tables come after, from report.py.
#
#     bash dev/experiments/all.sh
#     DEADLINE=320 timeout -s TERM 580 bash dev/experiments/all.sh   # a piece: no run starts after 320 s
cd "$(dirname "$0")/../.."
export EXP_START=$(date +%s)
source dev/experiments/common.sh  # the settings' checks, forward_signals, wait_for
failed=0
for finding in f1_emergence f2_laziness f3_nope; do
    bash "dev/experiments/$finding.sh" &
    rc=0
    wait_for $! || rc=$?
    if [ $rc -ge 128 ]; then exit $rc; fi          # stopped by a signal: the checkpoints resume it
    if [ $rc -ne 0 ]; then failed=$((failed + 1)); fi  # some of its runs failed (it said which): go on
done
if [ $failed -gt 0 ]; then echo "error: $failed of the three findings had runs that failed (above)" >&2; exit 1; fi
