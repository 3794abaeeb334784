#!/usr/bin/env bash
# The main job on the embedded default data: write the synthetic RAF-DB-layout set
# (deterministic: its bytes match data.dvc), then run the whole DVC pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
fsrfer synth --out data/raw/synthetic
dvc repro
dvc metrics show 2>/dev/null || true
