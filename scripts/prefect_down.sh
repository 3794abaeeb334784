#!/usr/bin/env bash
# Stop the worker and server that scripts/prefect_up.sh started (the worker ignores a first SIGTERM).
cd "$(dirname "$0")/.."
PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
for name in worker server; do
  pidfile="$PREFECT_HOME/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  for _ in 1 2 3; do
    kill -0 "$pid" 2>/dev/null || break
    kill -TERM "$pid" 2>/dev/null; pkill -TERM -P "$pid" 2>/dev/null
    sleep 3
  done
  kill -0 "$pid" 2>/dev/null && { pkill -KILL -P "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null; }
  rm -f "$pidfile"
  echo "stopped prefect $name ($pid)"
done
