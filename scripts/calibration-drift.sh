#!/usr/bin/env bash
# Each fit's first coefficient in two `costsim calibrate` reports and their ratio:
#   scripts/calibration-drift.sh BEFORE.txt AFTER.txt
# (seconds per FLOP or per byte: a ratio above 1 means the device ran slower in AFTER). Used by
# cpu-validate.sh and cpu-eager-validate.sh to record how far the device moved during a run.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BEFORE.txt AFTER.txt" >&2; exit 2; }
echo "fit                              before        after  after/before"
# Fit lines: the name (the words before n), n, R², worst, then the first coefficient.
awk 'function parse(  i, j) {
       for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) break
       key = $1; for (j = 2; j < i; j++) key = key " " $j
       coef = $(i + 3)
     }
     FNR == NR && / s per / { parse(); v[key] = coef; next }
     / s per / { parse(); if ((key in v) && v[key] + 0 > 0)
                 printf "%-26s %12.4e %12.4e %8.3f\n", key, v[key], coef, coef / v[key] }' "$1" "$2"
