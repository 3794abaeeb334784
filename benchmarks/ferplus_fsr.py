"""FSR-FER on a real FER+ feature cache: train G in one process (1 thread) and print the
valid table beside bicubic. Arguments: iterations, the project checkout whose
data/features and models/teacher.pt come from `dvc repro features` with profiles/ferplus.yaml,
and optionally a tune result (benchmarks/ferplus_tune.py) whose best sigma, r, k, p replace
the defaults.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_fsr.py 3000 /path/to/ferplus/checkout [tuned.json] [key=value ...]

key=value arguments replace config values, e.g. `loss_norm=sum w_gan=1 w_percep=1 w_feat=1` (eq. 9-10 as printed).
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import torch

torch.set_num_threads(1)
from dataclasses import asdict, replace

from components.config import FSRConfig, load_yaml
from components.data.feature_cache import FeatureCache
from components.models.covpool import load_covpool
from components.models.rrdb import load_generator
from components.stages.train_fsr import train_fsr
from components.training.fsr import PairedFeatures, fsr_accuracy_per_scale

its, root = int(sys.argv[1]), sys.argv[2]
extra = [a for a in sys.argv[3:] if "=" not in a]  # key=value arguments override the config below (e.g. loss_norm=sum)
tuned = json.loads(Path(extra[0]).read_text())["best"] if extra else {}
overrides = {k: load_yaml(v, f"{k}={v}") for k, v in (a.split("=", 1) for a in sys.argv[3:] if "=" in a)}  # YAML 1.2 values
cfg = FSRConfig(features=f"{root}/data/features", teacher=f"{root}/models/teacher.pt", channels=8, growth=8, blocks=1,
                dense_residual=True, loss_norm="mean", w_gan=0.1, w_percep=10.0, w_feat=0.01, lr=1e-3, iterations=its,
                milestones=(int(its * 2 / 3),), batch_size=32, seed=0, checkpoint_every=its, eval_every=its // 3,
                **tuned)
cfg = replace(cfg, **overrides)
t = time.time()
train_fsr(replace(cfg, out=f"{root}/models/fsr_bench.pt"), runner="local")  # the stage, in this process
teacher = load_covpool(cfg.teacher)
g = load_generator(f"{root}/models/fsr_bench.pt")
cache = FeatureCache(cfg.features)
shown = ("channels", "growth", "blocks", "dense_residual", "loss_norm", "w_gan", "w_percep", "w_feat", "w_ce", "lr", "batch_size",
         "sigma", "r", "k", "p")
out = {"iterations": its, "seconds": round(time.time() - t), "config": {k: v for k, v in asdict(cfg).items() if k in shown}}
split = "valid"  # selection reads valid only; the test split is never looked at here
lab = np.asarray(cache.array(split, "labels"))
probs = np.asarray(cache.array(split, "probs"))
bic = {k: round(float((probs[cache.block(split, k)].argmax(1) == lab[cache.block(split, k)]).mean()), 4) for k in cache.keys}
pairs = PairedFeatures(cfg.features, split, teacher.cfg.bimap_dim)
fsr = fsr_accuracy_per_scale(g, teacher.classifier, pairs, torch.device("cpu"))
out[split] = {"bicubic": bic, "fsrfer": {k: round(v, 4) for k, v in fsr.items()}}
print(json.dumps(out, indent=1))
Path("benchmarks/.cache").mkdir(parents=True, exist_ok=True)
name = f"ferplus_fsr{'_tuned' if tuned else ''}{'_' + '_'.join(sys.argv[3:]) if overrides else ''}".replace("/", "_")
Path(f"benchmarks/.cache/{name}.json").write_text(json.dumps(out, indent=1))
