"""Does the frozen classifier's label, through C, lift its own LR features? A linear probe of G's
dense residual: F' = F + W z + b (z the standardised feature, W and b zero at the start), trained
with cross-entropy through the frozen C on every LR row of the train split, read on valid. No
conv trunk, no GAN, no HR target: what a label term alone can add, in minutes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_label_probe.py <work folder> <mode> [epochs] [lr]

mode shared: one W, b for every scale (G's dense residual); per_scale: one per LR scale (what scale
information to G could add); bias_per_scale: a per-scale offset only. The work folder needs
data/features and models/multiscale_cnn.pt (benchmarks/ferplus_pipeline.py). Valid only.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import torch
import torch.nn.functional as F

from components.data.feature_cache import FeatureCache
from components.models.covpool import load_covpool, triu_to_matrix

torch.set_num_threads(1)
torch.manual_seed(0)
root, mode = sys.argv[1], sys.argv[2]
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
if mode not in ("shared", "per_scale", "bias_per_scale"):
    raise SystemExit(f"mode: {mode!r} is not shared, per_scale or bias_per_scale")
cache = FeatureCache(f"{root}/data/features")
frozen = load_covpool(f"{root}/models/multiscale_cnn.pt")
classifier, d = frozen.classifier.eval().requires_grad_(False), frozen.cfg.bimap_dim


def lr_rows(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale = np.asarray(cache.array(split, "scale"))
    rows = np.flatnonzero(scale > 1.0)
    x = torch.from_numpy(np.asarray(cache.array(split, "features"))[rows].astype(np.float32))
    y = torch.from_numpy(np.asarray(cache.array(split, "labels"))[rows].astype(np.int64))
    return x, y, torch.from_numpy(np.round(scale[rows]).astype(np.int64) - 2)  # scale index 0..6 = x2..x8


x_train, y_train, k_train = lr_rows("train")
x_valid, y_valid, k_valid = lr_rows("valid")
size, scales = x_train.shape[1], 7
mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-3)
groups = 1 if mode == "shared" else scales
W = torch.zeros(groups, size, size, requires_grad=mode != "bias_per_scale")
b = torch.zeros(groups, size, requires_grad=True)
opt = torch.optim.Adam([p for p in (W, b) if p.requires_grad], lr=lr)


def lifted(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    if mode == "bias_per_scale":
        return x + b[k]
    z = (x - mean) / std
    if mode == "shared":
        return x + z @ W[0] + b[0]
    delta = torch.zeros_like(x)
    for j in range(groups):
        rows = torch.nonzero(k == j).flatten()
        delta = delta.index_put((rows,), z[rows] @ W[j])
    return x + b[k] + delta


@torch.no_grad()
def valid_accuracy() -> list[float]:
    pred = torch.cat([classifier(triu_to_matrix(lifted(x_valid[s:s + 4096], k_valid[s:s + 4096]), d)).argmax(1)
                      for s in range(0, len(x_valid), 4096)])
    return [round(float((pred[k_valid == j] == y_valid[k_valid == j]).float().mean()) * 100, 1) for j in range(scales)]


base = valid_accuracy()
print("valid x2..x8, the frozen model alone:", base, f"mean {np.mean(base):.2f}", flush=True)
start = time.time()
for epoch in range(epochs):
    order = torch.randperm(len(x_train))
    for s in range(0, len(order), 256):
        i = order[s:s + 256]
        loss = F.cross_entropy(classifier(triu_to_matrix(lifted(x_train[i], k_train[i]), d)), y_train[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = valid_accuracy()
    print(f"{mode} epoch {epoch + 1}: valid {acc} mean {np.mean(acc):.2f}, "
          f"gain {[round(a - c, 1) for a, c in zip(acc, base)]}, {time.time() - start:.0f} s", flush=True)
