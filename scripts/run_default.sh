#!/usr/bin/env bash
# The main job on the embedded default data, the way users run it: write the synthetic
# RAF-DB-layout set (deterministic: its bytes match data.dvc), start a local Prefect
# server + worker with the deployments of prefect.yaml, and run
# `prefect deployment run train-fsrfer/default`: every DVC stage (prepare -> teacher ->
# features -> tune -> train_fsr -> evaluate -> register) as a task, then the gated
# promotion; then `train-gmenet/default`: gme_teacher -> gme_train -> compare (the table
# with every column) -> register_gmenet, and its promotion.
# The server and worker are stopped at the end unless KEEP_PREFECT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
export PREFECT_API_URL="http://127.0.0.1:${PREFECT_PORT:-4200}/api"
fsrfer synth --out data/raw/synthetic
[ "${KEEP_PREFECT:-0}" = 1 ] || trap 'bash scripts/prefect_down.sh' EXIT
bash scripts/prefect_up.sh
for deployment in train-fsrfer/default train-gmenet/default; do
  log="$PREFECT_HOME/logs/last_${deployment%%/*}.log"
  # the terminal shows the run's events without the heartbeats (2 lines every 30 s; the log keeps them)
  prefect deployment run "$deployment" --watch --watch-timeout 7200 | tee "$log" |
    awk '/prefect\.flow-run\.heartbeat/ {getline; next} {print; fflush()}'

  grep -q "finished successfully in 'Completed'" "$log" || { echo "$deployment did not complete"; exit 1; }
done
fsrfer table                       # every method x every scale, valid and test (metrics/compare.json)
dvc metrics show                   # one row per split: mean accuracy over the LR scales per method
cat registry/fsrfer.json registry/gmenet.json
echo "Plots: dvc plots show  (accuracy vs scale per method and split, confusion matrices; then open dvc_plots/index.html)"
echo "MLflow UI: mlflow ui --backend-store-uri sqlite:///$PWD/mlruns/mlflow.db  (then http://127.0.0.1:5000)"
