#!/usr/bin/env bash
# Create .venv with everything the pipeline and its tests need (about 2-3 minutes).
# torch==2.13.0 first: the CPU build on this machine's disk; later ranges then accept it.
# scripts/constraints.txt pins every package to the versions the suite passed on (a new opencv finds other faces).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -c scripts/constraints.txt -e '.[dev]'
git config user.email >/dev/null || git config user.email "fsrfer@localhost"
git config user.name >/dev/null || git config user.name "fsrfer"
