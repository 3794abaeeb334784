#!/usr/bin/env bash
# The default teacher's seed spread against its schedule: on a prepared store (the embedded
# default's, from a main job or `dvc repro prepare`), train the teacher for E epochs with seeds
# S, cache its features and evaluate the bicubic column (the teacher on every LR scale), then put
# the tables side by side per schedule (benchmarks/seed_spread.py).
#   bash benchmarks/teacher_seed_spread.sh <project with data/prepared> <epochs...> -- <seeds...>
#   bash benchmarks/teacher_seed_spread.sh ../fsrfer-seed1 15 30 -- 0 1 2
# Work goes to <project>/data/teacher_spread/; about 3 minutes per 15 epochs with OMP_NUM_THREADS=1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
project=$(cd "$1" && pwd); shift
epochs=(); while [ "$1" != "--" ]; do epochs+=("$1"); shift; done; shift
seeds=("$@")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$project"
source scripts/env.sh
work=data/teacher_spread
mkdir -p "$work"
for e in "${epochs[@]}"; do
  tables=()
  for s in "${seeds[@]}"; do
    tag="e${e}_s${s}"
    if [ ! -f "$work/$tag.json" ]; then
      fsrfer teacher --set teacher.epochs="$e" --set teacher.seed="$s" --set teacher.out="$work/$tag.pt" \
        --set mlflow.experiment=teacher-seed-spread --summary "$work/${tag}_teacher.json"
      fsrfer features --set features.teacher="$work/$tag.pt" --set features.out="$work/features_$tag"
      fsrfer evaluate --set evaluate.features="$work/features_$tag" --set evaluate.teacher="$work/$tag.pt" \
        --set 'evaluate.fsr=""' --set evaluate.metrics="$work/$tag.json" --set evaluate.plots="$work/plots_$tag" \
        --set mlflow.experiment=teacher-seed-spread
    fi
    tables+=("seed$s=$work/$tag.json")
  done
  echo "== teacher, $e epochs"
  (cd "$here" && .venv/bin/python benchmarks/seed_spread.py --out "$project/$work/spread_e$e.json" \
    $(for t in "${tables[@]}"; do echo "${t%%=*}=$project/${t#*=}"; done))
done
