#!/usr/bin/env bash
# Start a local Prefect server and a process worker in the background, and create the
# work pool and the deployments of prefect.yaml. State lives in .prefect/ (git-ignored);
# logs and pids in .prefect/logs. Stop them with scripts/prefect_down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
PORT="${PREFECT_PORT:-4200}"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
mkdir -p "$PREFECT_HOME/logs"

if ! curl -fs "$PREFECT_API_URL/health" >/dev/null 2>&1; then
  nohup prefect server start --host 127.0.0.1 --port "$PORT" >"$PREFECT_HOME/logs/server.log" 2>&1 &
  echo $! >"$PREFECT_HOME/server.pid"
  wait_healthy "$PREFECT_API_URL/health" "prefect server" "$PREFECT_HOME/logs/server.log"
fi
prefect work-pool inspect local-pool >/dev/null 2>&1 || prefect work-pool create local-pool --type process >/dev/null
# One flow run at a time: every run rewrites this checkout's params.yaml and runs `dvc repro` in it,
# so runs submitted together queue (Scheduled -> Late) instead of mixing each other's params.
prefect work-pool set-concurrency-limit local-pool 1 >/dev/null
# A run whose worker dies mid-stage is marked Crashed once its heartbeats stop (flows/watchdog.py),
# so it neither looks alive nor holds the pool's one slot; then rerun it (README: "When a run dies").
HEARTBEAT_S="${FSRFER_HEARTBEAT_S:-30}"
python -m flows.watchdog --after "${FSRFER_UNRESPONSIVE_AFTER_S:-90}" >/dev/null
prefect --no-prompt deploy --all >"$PREFECT_HOME/logs/deploy.log" 2>&1 || { cat "$PREFECT_HOME/logs/deploy.log"; exit 1; }
if [ ! -f "$PREFECT_HOME/worker.pid" ] || ! kill -0 "$(cat "$PREFECT_HOME/worker.pid")" 2>/dev/null; then
  # its own session: the worker, its flow runs and their stages are one group to stop (or to lose)
  PREFECT_FLOWS_HEARTBEAT_FREQUENCY="$HEARTBEAT_S" \
    setsid nohup prefect worker start --pool local-pool >"$PREFECT_HOME/logs/worker.log" 2>&1 &
  echo $! >"$PREFECT_HOME/worker.pid"
fi
echo "Prefect UI: http://127.0.0.1:$PORT  (API $PREFECT_API_URL)"
echo "Deployments: $(prefect deployment ls 2>/dev/null | grep -o '[a-z-]*/[a-z-]*' | sort -u | tr '\n' ' ')"
echo "Run:   PREFECT_API_URL=$PREFECT_API_URL prefect deployment run train-fsrfer/default --watch"
echo "Stop:  bash scripts/prefect_down.sh"
