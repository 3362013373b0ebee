#!/usr/bin/env bash
# The sweep engine's speed against llm-analysis's, in one run (issue 10's "≥ 100× llm-analysis
# per configuration in-process"): both measured as CPU time on one thread, alternated ROUNDS
# times, so that the machine's drift (a third and more between minutes on the 2-vCPU machines)
# falls on both alike and each round's ratio compares like with like.
#
#   scripts/bench-llm-analysis.sh [ROUNDS]      (default 5; about 10 s a round)
#
# Each round runs
#   - llm-analysis 0.2.2 (pinned; installed once into its own virtualenv outside the
#     repository, $COSTSIM_LLM_ANALYSIS_VENV or ~/.cache/costsim/llm-analysis-0.2.2): five
#     passes of scripts/bench/llm_analysis_per_config.py over 200 configurations (Llama-2-7B,
#     batch 1, 2, 4, 8 × sequence 16..800:+16), CPU µs a configuration;
#   - costsim: `RANKS=100 RAYON_NUM_THREADS=1 sweep_cpu bsr 5` (model/examples/sweep_cpu.rs),
#     five passes over the same model, batches and sequence lengths with LoRA at ranks 1..100 on
#     an H200 (20 000 points a pass), CPU µs a point;
# and prints both and their ratio. docs/sweeps.md ("Against llm-analysis") records what it
# measured and what differs between the two (llm-analysis has no adapters, so no rank axis).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [ROUNDS]   (ROUNDS a positive integer, default 5)" >&2
  exit 2
fi
LLM_ANALYSIS_VERSION=0.2.2
VENV=${COSTSIM_LLM_ANALYSIS_VENV:-$HOME/.cache/costsim/llm-analysis-$LLM_ANALYSIS_VERSION}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('llm-analysis') == '$LLM_ANALYSIS_VERSION' else 1)" 2>/dev/null; then
  echo "installing llm-analysis==$LLM_ANALYSIS_VERSION into $VENV" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "llm-analysis==$LLM_ANALYSIS_VERSION" >&2
fi
cargo build -q --release --example sweep_cpu -p costsim-model
BIN=${CARGO_TARGET_DIR:-target}/release/examples/sweep_cpu

echo "round  llm-analysis µs/config  costsim µs/point  ratio"
ratios=()
for i in $(seq 1 "$ROUNDS"); do
  llm=$("$VENV/bin/python" scripts/bench/llm_analysis_per_config.py --passes 5 2>/dev/null |
    "$PY" -c "import json, sys; r = json.loads(sys.stdin.read()); p = r['cpu_us_per_config']; print(f'{sum(p) / len(p):.1f}')")
  cs=$(RANKS=100 RAYON_NUM_THREADS=1 "$BIN" bsr 5 | sed -n 's/.* \([0-9.]*\) µs CPU\/point.*/\1/p')
  ratio=$("$PY" -c "print(f'{$llm / $cs:.1f}')")
  ratios+=("$ratio")
  "$PY" -c "print(f'{$i:5d}  {$llm:22.1f}  {$cs:16.2f}  {$ratio:5.0f}×')"
done
"$PY" - "${ratios[@]}" <<'PY'
import statistics, sys
r = sorted(float(x) for x in sys.argv[1:])
q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
print(f"ratio over {len(r)} rounds: median {statistics.median(r):.0f}×, quartiles "
      f"{q[0]:.0f}–{q[2]:.0f}×, range {r[0]:.0f}–{r[-1]:.0f}×; "
      f"{sum(x >= 100 for x in r)} of {len(r)} rounds at 100× or more")
PY
