#!/usr/bin/env bash
# The default's seed spread: the whole DVC pipeline on the embedded default data, once per
# training seed, each in its own fresh clone of this checkout's HEAD (next to it, so ../shared
# resolves), with every training stage's seed set to N (prepare's seed, and so the data and
# splits, stay as committed). Then benchmarks/seed_spread.py puts the compare tables side by side.
#   bash benchmarks/seed_spread.sh 1 2        # seed 0 is the committed metrics/compare.json
# Each seed takes about 40 minutes here with OMP_NUM_THREADS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
tables=()
for seed in "$@"; do
  dir="$(dirname "$here")/fsrfer-seed$seed"
  rm -rf "$dir"
  git clone -q "$here" "$dir"
  (
    cd "$dir"
    bash scripts/setup.sh
    source scripts/env.sh
    .venv/bin/python - "$seed" <<'EOF'
import sys
from ruamel.yaml import YAML
yaml = YAML()
params = yaml.load(open("params.yaml"))
for section, values in params.items():
    if section != "prepare" and isinstance(values, dict) and "seed" in values:
        values["seed"] = int(sys.argv[1])
yaml.dump(params, open("params.yaml", "w"))
EOF
    fsrfer synth --out data/raw/synthetic
    dvc repro
  ) > "$dir.log" 2>&1
  tables+=("seed$seed=$dir/metrics/compare.json")
done
.venv/bin/python benchmarks/seed_spread.py "seed0=metrics/compare.json" "${tables[@]}"
