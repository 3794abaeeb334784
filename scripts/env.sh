# Environment for the project's commands (sourced): the venv, quiet tools, local state dirs.
export PATH="$PWD/.venv/bin:$PATH"
export DVC_NO_ANALYTICS=1 NO_ALBUMENTATIONS_UPDATE=1
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS=0
export PREFECT_SERVER_ANALYTICS_ENABLED=false

# wait_healthy URL NAME LOG: wait up to 120 s for URL to answer, else say where NAME's log is and fail.
wait_healthy() {
  for _ in $(seq 1 120); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "$2 did not start; see $3"
  return 1
}
