#!/usr/bin/env bash
# Create .venv with everything the pipeline and its tests need (about 1 minute; pip alone took 2-4).
# torch==2.13.0 first, by pip: the CPU build on this machine's disk (uv does not look there); later ranges accept it.
# scripts/constraints.txt pins every package to the versions the suite passed on (a new opencv finds other faces).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -c scripts/constraints.txt torch==2.13.0 uv
# uv installs the same pinned set 4.5x faster than pip here (benchmarks/README.md, "Setup"); pip if uv cannot
.venv/bin/uv pip install -q --python .venv/bin/python -c scripts/constraints.txt -e '.[dev]' ||
  .venv/bin/pip install -q --disable-pip-version-check -c scripts/constraints.txt -e '.[dev]'
git config user.email >/dev/null || git config user.email "fsrfer@localhost"
git config user.name >/dev/null || git config user.name "fsrfer"
