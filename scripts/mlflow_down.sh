#!/usr/bin/env bash
# Stop the MLflow server that scripts/mlflow_up.sh started: its whole process group (uvicorn, job runner, consumers).
cd "$(dirname "$0")/.."
HOME_DIR="${MLFLOW_HOME:-$PWD/mlruns}"
pidfile="$HOME_DIR/server.pid"
[ -f "$pidfile" ] || exit 0
pid="$(cat "$pidfile")"
for _ in 1 2 3 4 5; do
  pgrep -g "$pid" >/dev/null || break
  kill -TERM -- "-$pid" 2>/dev/null
  sleep 2
done
pgrep -g "$pid" >/dev/null && kill -KILL -- "-$pid" 2>/dev/null
rm -f "$pidfile"
echo "stopped mlflow server ($pid)"
