#!/usr/bin/env bash
# Create ./.venv (once) with the CPU build of torch and this project installed editable with
# its development tools. Safe to re-run: it only installs what is missing or changed.
#
# torch==2.13.0 is served as a CPU build by these machines' local wheel store. Elsewhere, add
# the PyTorch CPU wheel index:  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing torch==2.13.0 (CPU)" >&2
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
echo "setup: installing qr-sampler[dev] (editable)" >&2
.venv/bin/python -m pip install --quiet -e ".[dev]"
