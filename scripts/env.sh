# Environment for the project's commands (sourced): the venv, quiet tools, local state dirs.
export PATH="$PWD/.venv/bin:$PATH"
export DVC_NO_ANALYTICS=1 NO_ALBUMENTATIONS_UPDATE=1
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS=0
export PREFECT_SERVER_ANALYTICS_ENABLED=false
