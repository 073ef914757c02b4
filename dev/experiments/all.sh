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
for finding in f1_emergence f2_laziness f3_nope; do
    bash "dev/experiments/$finding.sh" &
    wait_for $! || exit $?
done
