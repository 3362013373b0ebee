#!/usr/bin/env bash
# Everything a borrowed CUDA machine can tell costsim, as one prepared script (under 8 minutes on
# an A100/H100/H200-class GPU), using that machine's own PyTorch 2.11, transformers and peft:
#   1. ground-truth traces of the real stack on tiny configs: the kernels each aten op launches
#      (torch.profiler), saved bytes, the caching allocator's peaks (scripts/trace/);
#   2. costsim calibrate on the GPU, then costsim validate (libtorch harness) for gpt2-medium and
#      tinyllama-1.1b at batch 4, bf16, against the datasheet and the calibrated profile;
#   3. traces at real sizes (tinyllama, gpt2-medium, llama2-7b at batch 8 × 512): allocator peaks
#      and eager-stack step times per phase;
#   4. the host costs of this machine's eager stack (scripts/trace/host-grid.txt, micro widths,
#      CUDA launch call included) fitted into a profile (costsim calibrate --host), and eager step
#      times from the host-bound to the device-bound regime (gpu-grid-timing.txt) to check it.
#   5. a Trainer loop's own work per micro-batch, nn.Module and step (scripts/trace/step_overhead.py
#      over 18 micro configurations of scripts/trace/step-grid.txt, about two minutes), fitted into
#      a profile (costsim calibrate --loop), and 8 held-out Trainer steps checked against it
#      (costsim validate --steps, about two minutes).
# Build here with the tch feature, carry target/release/costsim to the GPU machine, then run:
#   scripts/gpu-validate.sh [OUT_DIR]      (PACK=file.tgz also packs OUT_DIR after each stage)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-docs/results/gpu}
BIN=${COSTSIM_BIN:-target/release/costsim}
mkdir -p "$OUT_DIR"
pack() { if [ -n "${PACK:-}" ]; then tar czf "$PACK.tmp" -C "$OUT_DIR" . && mv "$PACK.tmp" "$PACK"; fi; }
TORCH_LIB=$(python3 -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, transformers, peft, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__)"
  lscpu | grep -E 'Model name|^CPU\(s\)|MHz' || true
} 2>&1 | tee "$OUT_DIR/machine.txt"

echo "== 1. traces, tiny configs"
timeout 150 python3 scripts/trace/run_grid.py scripts/trace/gpu-grid-tiny.txt "$OUT_DIR/traces" --device cuda \
  2>&1 | grep -v -i warn | tee "$OUT_DIR/traces-tiny.log"
pack

echo "== 2. calibrate and validate"
timeout 130 "$BIN" calibrate --device cuda --reps 9 --out "$OUT_DIR/gpu-calibrated.toml" \
  --samples "$OUT_DIR/gpu-calibration.json" 2>&1 | tee "$OUT_DIR/gpu-calibration.txt" || echo "calibration failed"
pack
run() {
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  timeout "$limit" "$BIN" validate --device cuda "$@" --reps 10 --warmup 3 --out "$OUT_DIR/results-$name.json" \
    2>&1 | tee "$OUT_DIR/compare-$name.txt"
  if [ -f "$OUT_DIR/gpu-calibrated.toml" ] && [ -f "$OUT_DIR/results-$name.json" ]; then
    "$BIN" validate --from "$OUT_DIR/results-$name.json" --hw "$OUT_DIR/gpu-calibrated.toml" \
      2>&1 | tee "$OUT_DIR/compare-$name-calibrated.txt"
  fi
  pack
}
run gpt2-medium 90 --model gpt2-medium --batch 4 --seq 512,1024 --precision bf16
run tinyllama 70 --model tinyllama-1.1b --batch 4 --seq 512 --precision bf16

echo "== 3. traces, real sizes"
timeout 170 python3 scripts/trace/run_grid.py scripts/trace/gpu-grid-large.txt "$OUT_DIR/traces" --device cuda \
  2>&1 | grep -v -i warn | tee "$OUT_DIR/traces-large.log"
pack
echo "== 4. host costs of the eager stack, and eager step times"
timeout 150 python3 scripts/trace/run_grid.py scripts/trace/host-grid.txt "$OUT_DIR/host" --device cuda \
  2>&1 | grep -v -i warn > "$OUT_DIR/host.log"
"$BIN" calibrate --host "$OUT_DIR/host" --base h200 --name h200-host --out "$OUT_DIR/h200-host.toml" \
  2>&1 | tee "$OUT_DIR/host-fit.txt"
timeout 140 python3 scripts/trace/run_grid.py scripts/trace/gpu-grid-timing.txt "$OUT_DIR/timing" --device cuda \
  2>&1 | grep -v -i warn > "$OUT_DIR/timing.log"
# The kernel ledger of those steps (their --profile-kernels device time per aten op against
# costsim's kernels, and the idle rest against its host wait; docs/host.md), seconds of CPU.
"$BIN" validate --trace "$OUT_DIR/timing" --hw "$OUT_DIR/h200-host.toml" --ops \
  > "$OUT_DIR/timing-ledger.txt" 2>&1 || true
pack
echo "== 5. a Trainer loop's own work (per micro-batch, per nn.Module, per step), fitted"
mkdir -p "$OUT_DIR/step"
grep -E '^(gpt2|llama)-micro(1|4|8)-(full|lora-all):|accum4' scripts/trace/step-grid.txt | \
while IFS=: read -r name args; do
  timeout 60 python3 scripts/trace/step_overhead.py $args --device cuda --reps 30 \
    --out "$OUT_DIR/step/$name.json" 2>&1 | grep -v -i warn | tee -a "$OUT_DIR/step.log" || true
done
"$BIN" calibrate --loop "$OUT_DIR/step" --base h200 --name h200-loop --out "$OUT_DIR/h200-loop.toml" \
  2>&1 | tee "$OUT_DIR/loop-fit.txt"
# Held-out Trainer steps (the four held-out models at batch 1 x 128, full and LoRA): the whole
# Trainer step and its loop work predicted with the datasheet profile and with the fitted one.
mkdir -p "$OUT_DIR/step-heldout"
grep -E '^[a-z0-9-]+-(full|lora-all):' scripts/trace/step-heldout-grid.txt | \
while IFS=: read -r name args; do
  timeout 60 python3 scripts/trace/step_overhead.py $args --device cuda --reps 20 \
    --out "$OUT_DIR/step-heldout/$name.json" 2>&1 | grep -v -i warn | tee -a "$OUT_DIR/step.log" || true
done
for hw in h200 "$OUT_DIR/h200-loop.toml"; do
  "$BIN" validate --steps "$OUT_DIR/step-heldout" --hw "$hw" 2>&1 | tee -a "$OUT_DIR/step-heldout.txt"
done
pack
echo "done: $OUT_DIR"
