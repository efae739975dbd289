#!/usr/bin/env bash
# Set up ./.venv (scripts/setup.sh), then run the embedded default: the reference entropy server
# on a unix socket feeds the sampler, which picks every word of a tiny built-in model; each
# word's provenance (u, z, source, device) is printed. Extra arguments go to `qrs demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/qrs demo "$@"
