#!/usr/bin/env bash
# The Prefect worker of the pipeline (compose service `prefect-worker`, Kubernetes
# Deployment `fsrfer-prefect-worker`), installed in the image as `fsrfer-worker`:
#  1. the project checkout in $PROJECT_DIR (cloned from $PROJECT_REPO at $PROJECT_REF when
#     absent) and its DVC-tracked data pulled from the DVC remote;
#  2. when RAY_ADDRESS is set, this container joins that Ray cluster as a node with no CPUs
#     and no GPUs: stage drivers (`fsrfer train_fsr`, `fsrfer tune`) run here, their Ray
#     Train workers on the cluster's GPU nodes. Unset: each stage starts a local Ray;
#  3. the work pool, the deployments of prefect.yaml (deployed from the checkout, so flow
#     runs start there) and the worker.
set -euo pipefail
PROJECT_DIR="${PROJECT_DIR:-/workspace/fsrfer}"
POOL="${PREFECT_WORK_POOL:-local-pool}"
if [ ! -d "$PROJECT_DIR/.git" ]; then
  : "${PROJECT_REPO:?set PROJECT_REPO (git URL of the project) or mount a checkout at $PROJECT_DIR}"
  git clone --branch "${PROJECT_REF:-main}" "$PROJECT_REPO" "$PROJECT_DIR"
fi
cd "$PROJECT_DIR"
git config user.email >/dev/null || git config user.email "fsrfer-worker@localhost"
git config user.name >/dev/null || git config user.name "fsrfer-worker"
# the checkout's code wins over the copy installed in the image (DVC hashes the checkout's)
export PYTHONPATH="$PROJECT_DIR${PYTHONPATH:+:$PYTHONPATH}"
dvc pull --allow-missing || echo "fsrfer-worker: dvc pull fetched nothing (no remote configured, or nothing pushed yet)"
if [ -n "${RAY_ADDRESS:-}" ]; then
  ray start --address "$RAY_ADDRESS" --num-cpus 0 --num-gpus 0
fi
prefect work-pool inspect "$POOL" >/dev/null 2>&1 || prefect work-pool create "$POOL" --type process
prefect --no-prompt deploy --all
exec prefect worker start --pool "$POOL"
