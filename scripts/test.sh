#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLIPSCOPE_DATA_DIR="${FLIPSCOPE_DATA_DIR:-$PWD/.flipscope-data/test}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
mkdir -p test-artifacts
.venv/bin/python -m pytest "$@"
