#!/usr/bin/env bash
# Idempotent: installs PyTorch 2.11.0 (the libtorch that tch 0.24 pairs with) from PyPI into a
# virtualenv outside the repository, with pinned transformers and peft for the ground-truth
# tracer (scripts/trace/), then prints the environment to build and run with:
#   eval "$(scripts/setup-libtorch.sh)"
# Everything but the final `export` lines goes to stderr.
set -euo pipefail
TORCH_VERSION=2.11.0
# The real stack the tracer measures (scripts/trace/README.md). transformers 5.17.0 is also what
# the borrowed GPU machines ship; peft 0.21.2 is the newest release on PyPI (2026-10).
TRANSFORMERS_VERSION=5.17.0
PEFT_VERSION=0.21.2
VENV=${COSTSIM_TORCH_VENV:-$HOME/.cache/costsim/torch-$TORCH_VERSION}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "installing torch==$TORCH_VERSION into $VENV, once: about 4.6 GB with its CUDA libraries" >&2
  echo "(libtorch for the tch harness and the tracer; later runs reuse it)" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on \
    "torch==$TORCH_VERSION" >&2
fi
if ! "$VENV/bin/python" - "$TRANSFORMERS_VERSION" "$PEFT_VERSION" 2>/dev/null <<'PY'
import sys
import importlib.metadata as md
want = {"transformers": sys.argv[1], "peft": sys.argv[2]}
sys.exit(0 if all(md.version(k) == v for k, v in want.items()) else 1)
PY
then
  echo "installing transformers==$TRANSFORMERS_VERSION peft==$PEFT_VERSION into $VENV" >&2
  # torch is pinned in the same call so that pip never swaps it for another version.
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on \
    "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION" "peft==$PEFT_VERSION" >&2
fi
TORCH_LIB=$("$VENV/bin/python" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
cat <<ENV
export LIBTORCH_USE_PYTORCH=1
export PATH="$VENV/bin:\$PATH"
export LD_LIBRARY_PATH="$TORCH_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
