#!/usr/bin/env bash
# Start an MLflow tracking server in the background on loopback: sqlite backend store and
# artifacts under mlruns/ (the same files the project uses without a server), artifacts
# served through the server (clients upload and download over HTTP, no shared disk).
# Then point every command at it:  export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
# Stop it with scripts/mlflow_down.sh. State: MLFLOW_HOME (default mlruns/), pid and log in it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
HOME_DIR="${MLFLOW_HOME:-$PWD/mlruns}"
PORT="${MLFLOW_PORT:-5000}"
URL="http://127.0.0.1:$PORT"
mkdir -p "$HOME_DIR/artifacts"
if ! curl -fs "$URL/health" >/dev/null 2>&1; then
  # No job runner (MLflow's GenAI job consumers, 7 polling processes: not used here, costly on 2 cores).
  # Its own process group (setsid), so mlflow_down.sh stops every process the server forks.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" setsid nohup mlflow server --host 127.0.0.1 --port "$PORT" --workers 1 \
    --backend-store-uri "sqlite:///$HOME_DIR/mlflow.db" --artifacts-destination "$HOME_DIR/artifacts" \
    >"$HOME_DIR/server.log" 2>&1 &
  echo $! >"$HOME_DIR/server.pid"
  wait_healthy "$URL/health" "mlflow server" "$HOME_DIR/server.log"
fi
echo "MLflow UI and API: $URL"
echo "Use it:  export MLFLOW_TRACKING_URI=$URL"
echo "Stop:    bash scripts/mlflow_down.sh"
