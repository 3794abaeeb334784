#!/usr/bin/env bash
# Screenshots of what a reviewer looks at after the main job, for checking them by eye:
#   $OUT/dvc_plots.png       `dvc plots show` (accuracy vs scale per method and split)
#   $OUT/mlflow_version.png  the MLflow registry page of a model version (model card, tags, aliases)
# Needs Debian's chromium (`apt-get install chromium`) and npm (vega, vega-lite and vega-embed are
# fetched from the npm registry once: DVC's page loads them from a CDN this machine cannot reach).
# Usage: bash scripts/screenshots.sh [OUT=screenshots] [MODEL=fsrfer] [VERSION: the champion's]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
OUT="${1:-screenshots}" MODEL="${2:-fsrfer}" VERSION="${3:-}"
mkdir -p "$OUT" .cache/vega
OUT=$(realpath "$OUT")
shot() {  # URL PNG: a 1500x1100 headless screenshot once the page's scripts have run
  chromium --headless --no-sandbox --disable-gpu --allow-file-access-from-files --hide-scrollbars \
    --window-size=1500,1100 --virtual-time-budget=20000 --screenshot="$2" "$1" 2>/dev/null
}

# dvc plots show, with the Vega libraries from the npm registry instead of the CDN
for pkg in vega@5 vega-lite@5 vega-embed@6; do
  name=${pkg%@*}
  [ -f ".cache/vega/$name.min.js" ] && continue
  (cd .cache/vega && npm pack --silent "$pkg" >/dev/null && tar xzf "$name"-*.tgz && cp package/build/"$name".min.js . \
    && rm -rf package "$name"-*.tgz)
done
template="$OUT/.dvc_template.html"
{ echo '<!DOCTYPE html><html><head><title>dvc plots</title>'
  for name in vega vega-lite vega-embed; do echo "<script src=\"file://$PWD/.cache/vega/$name.min.js\"></script>"; done
  echo '</head><body>{plot_divs}</body></html>'; } > "$template"
dvc plots show --html-template "$template" -o "$OUT/dvc_plots" >/dev/null
shot "file://$OUT/dvc_plots/index.html" "$OUT/dvc_plots.png"

# the MLflow registry page of the version (the UI server on a free port, stopped after)
uri="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlruns/mlflow.db}"
VERSION="${VERSION:-$(python -c "import mlflow; print(mlflow.MlflowClient('$uri').get_model_version_by_alias('$MODEL', 'champion').version)")}"
port=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
mlflow ui --backend-store-uri "$uri" --host 127.0.0.1 --port "$port" > "$OUT/.mlflow_ui.log" 2>&1 &
ui=$!
trap 'kill $ui 2>/dev/null || true' EXIT
wait_healthy "http://127.0.0.1:$port/health" "mlflow ui" "$OUT/.mlflow_ui.log"
shot "http://127.0.0.1:$port/#/models/$MODEL/versions/$VERSION" "$OUT/mlflow_version.png"
echo "$OUT/dvc_plots.png $OUT/mlflow_version.png"
