#!/usr/bin/env bash
# Run scripts/trace/step_overhead.py over a grid file (lines "name: arguments"; # comments),
# one process per configuration, into OUT_DIR/NAME.json. Extra arguments go to every run.
#   scripts/trace/run_steps.sh scripts/trace/step-grid.txt OUT_DIR --reps 60 --clock cpu
set -euo pipefail
grid=$1
out=$2
shift 2
mkdir -p "$out"
here=$(dirname "$0")
grep -v '^[[:space:]]*#' "$grid" | while IFS=: read -r name args; do
  [ -z "$name" ] && continue
  # shellcheck disable=SC2086
  python3 "$here/step_overhead.py" $args "$@" --out "$out/$name.json" 2>&1 \
    | grep -v -i -e warn -e '^\[transformers\]' | tail -1
done
