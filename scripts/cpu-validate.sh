#!/usr/bin/env bash
# Calibrate this CPU from microbenchmarks, then validate the calibrated profile on whole-model
# configurations the fit never saw (issue 4). Everything runs on one libtorch thread: on a
# shared 2-core machine two threads measure with 2-10x outliers, one thread steadily.
#   scripts/cpu-validate.sh [OUT_DIR]     (about 13 minutes; keep the machine otherwise idle)
# Writes OUT_DIR/cpu-calibration.json (samples), cpu-calibrated.toml (profile),
# heldout-*.json (measurements), heldout.txt and heldout-summary.md (comparison), and
# heldout-scatter.svg (predicted vs measured). Then it calibrates a second time
# (cpu-recalibrated.toml, cpu-recalibration.json, recalibration.txt) and writes drift.txt: each
# fit's first coefficient in the two runs and their ratio, and the held-out comparison again
# with the second profile (heldout-recalibrated-summary.md). On a shared machine the device
# drifts between runs; drift.txt is this run's own noise floor (docs/validation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/results/cpu}
mkdir -p "$OUT"
# The machine: CPU model, caches and vCPUs (a shared virtual machine changes between sessions).
lscpu > "$OUT/machine.txt" 2>/dev/null || true
eval "$(scripts/setup-libtorch.sh)"
cargo build --release --features tch
BIN=target/release/costsim
M=docs/results/models
T=1
"$BIN" calibrate --device cpu --threads $T --reps 9 --warmup 2 \
  --out "$OUT/cpu-calibrated.toml" --samples "$OUT/cpu-calibration.json" | tee "$OUT/calibration.txt"
run() {
  local name=$1; shift
  echo "== $name: $*"
  "$BIN" validate --device cpu --threads $T --hw "$OUT/cpu-calibrated.toml" --reps 5 --warmup 2 \
    --precision fp32,bf16 "$@" --out "$OUT/heldout-$name.json" > /dev/null
}
run gpt2-tiny --model-config $M/gpt2-tiny/config.json --batch 2 --seq 128,256
run gpt2-narrow-deep --model-config $M/gpt2-narrow-deep/config.json --batch 1 --seq 128
run gpt2 --model gpt2 --batch 1 --seq 64
run llama-small --model-config $M/llama-small/config.json --batch 2,4 --seq 128
run llama-wide-shallow --model-config $M/llama-wide-shallow/config.json --batch 1 --seq 256
FILES=$(ls "$OUT"/heldout-*.json | paste -sd, -)
"$BIN" validate --from "$FILES" --hw "$OUT/cpu-calibrated.toml" > "$OUT/heldout.txt"
"$BIN" validate --from "$FILES" --hw "$OUT/cpu-calibrated.toml" --format markdown > "$OUT/heldout-summary.md"
"$BIN" plot scatter --from "$FILES" --hw "$OUT/cpu-calibrated.toml" --out "$OUT/heldout-scatter.svg"
cat "$OUT/heldout-summary.md"
# The same microbenchmarks again, after the held-out steps: how far the device moved meanwhile.
"$BIN" calibrate --device cpu --threads $T --reps 9 --warmup 2 \
  --out "$OUT/cpu-recalibrated.toml" --samples "$OUT/cpu-recalibration.json" > "$OUT/recalibration.txt"
"$BIN" validate --from "$FILES" --hw "$OUT/cpu-recalibrated.toml" --format markdown \
  > "$OUT/heldout-recalibrated-summary.md"
scripts/calibration-drift.sh "$OUT/calibration.txt" "$OUT/recalibration.txt" > "$OUT/drift.txt"
cat "$OUT/drift.txt"
