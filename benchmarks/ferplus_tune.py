"""The Ray Tune search over sigma, r, k, p on a real FER+ feature cache (issue: Ray Tune).

Trials as the tune stage runs them (components/stages/tune.py: Optuna TPE, ASHA, one
TorchTrainer per trial, nested MLflow runs), G sized as benchmarks/ferplus_fsr.py's run.
Arguments: the FER+ checkout (data/features and models/teacher.pt from `dvc repro features`
with profiles/ferplus.yaml), trials, iterations per trial, iterations between reports.
Writes benchmarks/.cache/ferplus_tune.json (the tune stage's result format); then train
the final G with it:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_tune.py <FER+ checkout> 4 600 100
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_fsr.py 3000 <FER+ checkout> benchmarks/.cache/ferplus_tune.json
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rayft", dir="/tmp"))
cache = Path("benchmarks/.cache").resolve()
cache.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{cache / 'ferplus_tune_mlflow.db'}")

from components.config import FSRConfig, FSRTuneConfig
from components.stages.tune import tune_fsr

root, trials, iterations, report_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base = FSRConfig(features=f"{root}/data/features", teacher=f"{root}/models/teacher.pt", out=str(cache / "fsr_tune.pt"),
                 storage=str(cache / "ray_ferplus_tune"), channels=8, growth=8, blocks=1, dense_residual=True,
                 loss_norm="mean", w_gan=0.1, w_percep=10.0, w_feat=0.01, lr=1e-3, milestones=(2000,), batch_size=32)
cfg = FSRTuneConfig(enabled=True, out=str(cache / "ferplus_tune.json"), num_samples=trials, iterations=iterations,
                    report_every=report_every, grace_period=2, reduction_factor=2, num_workers=1, cpus_per_worker=1.0,
                    driver_cpus=0.5)
start = time.time()
result = tune_fsr(cfg, base)
print(json.dumps(result | {"seconds": round(time.time() - start)}, indent=1))
