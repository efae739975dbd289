#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run every test. Exits non-zero on any
# failure. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k settings`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: ruff" >&2
.venv/bin/ruff check qr_sampler qrs_cli tests benchmarks
echo "test: mypy" >&2
.venv/bin/mypy qr_sampler qrs_cli
echo "test: pytest" >&2
.venv/bin/pytest "$@"
