#!/usr/bin/env bash
# Idempotent: installs PyTorch 2.11.0 (the libtorch that tch 0.24 pairs with) from PyPI into a
# virtualenv outside the repository, then prints the environment to build and run with:
#   eval "$(scripts/setup-libtorch.sh)"
# Everything but the final `export` lines goes to stderr.
set -euo pipefail
TORCH_VERSION=2.11.0
VENV=${COSTSIM_TORCH_VENV:-$HOME/.cache/costsim/torch-$TORCH_VERSION}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "installing torch==$TORCH_VERSION into $VENV (large download, once)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" >&2
fi
TORCH_LIB=$("$VENV/bin/python" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
cat <<ENV
export LIBTORCH_USE_PYTORCH=1
export PATH="$VENV/bin:\$PATH"
export LD_LIBRARY_PATH="$TORCH_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
