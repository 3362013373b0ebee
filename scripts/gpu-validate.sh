#!/usr/bin/env bash
# The validation suite on a CUDA machine, using that machine's own PyTorch 2.11 libraries.
# Build here with the tch feature, carry target/release/costsim to the GPU machine, then run:
#   scripts/gpu-validate.sh [OUT_DIR]
# Writes OUT_DIR/results-<model>.json and the comparison tables; sized to finish in under
# 8 minutes on an A100/H100/H200-class GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-docs/results}}
BIN=${COSTSIM_BIN:-target/release/costsim}
mkdir -p "$OUT"
TORCH_LIB=$(python3 -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# Calibrate the GPU first (about a minute), then validate with both the datasheet profile and the
# calibrated one (the comparison is redone from the JSON for the second).
timeout 240 "$BIN" calibrate --device cuda --reps 9 --out "$OUT/gpu-calibrated.toml" \
  --samples "$OUT/gpu-calibration.json" | tee "$OUT/gpu-calibration.txt" || echo "calibration failed"
run() {
  local name=$1; shift
  echo "== $name: $*"
  timeout 200 "$BIN" validate --device cuda "$@" --reps 10 --warmup 3 --out "$OUT/results-$name.json" \
    | tee "$OUT/compare-$name.txt"
  if [ -f "$OUT/gpu-calibrated.toml" ]; then
    "$BIN" validate --from "$OUT/results-$name.json" --hw "$OUT/gpu-calibrated.toml" \
      | tee "$OUT/compare-$name-calibrated.txt"
  fi
}
run gpt2-medium --model gpt2-medium --batch 4 --seq 512,1024 --precision bf16
run tinyllama --model tinyllama-1.1b --batch 4 --seq 512 --precision bf16
echo "done: $OUT"
