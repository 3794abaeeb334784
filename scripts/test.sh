#!/usr/bin/env bash
# The test suite (code, data, model and end-to-end tiers) in the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python -m pytest -q --durations=25 "$@"
