"""Stage `isr_fer`: train the image super-resolution yardstick (image SR, then the frozen FER model).

One EDSR-style network for every prepared scale (components/models/isr.py) learns, with an L1
loss, to turn the LR face bicubic-upscaled back to the HR size into the HR face. Each sample of
a batch draws its scale, a random crop (`patch`; 0 = the whole face) and a horizontal flip; Adam
with cosine decay over a fixed number of iterations (no selection: nothing is chosen on any split).
At the end it logs the validation PSNR per scale of bicubic and of the network (MLflow and the
summary). The compare stage feeds the network's output to the teacher: column `isr_fer`.
Registered nowhere: it is a yardstick.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from components.config import ISRConfig
from components.data.store import PreparedStore, ScaledFaces
from components.io import BadInput, atomic_file
from components.models.isr import ISRNet, ISRNetConfig, save_isr, super_resolve
from components.runtime import images_to_tensor, pick_device, seed_everything
from components.tracking import mlflow_run


def psnr(faces: np.ndarray, hr: np.ndarray) -> float:
    """Mean PSNR (dB) of uint8 faces against the uint8 HR faces, per face then averaged."""
    mse = ((faces.astype(np.float64) - hr.astype(np.float64)) ** 2).reshape(len(hr), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def train_isr(cfg: ISRConfig, progress: bool = True) -> dict:
    """Train the SR network on the training split's pairs, save it, report valid PSNR per scale."""
    import mlflow


    store = PreparedStore(cfg.prepared)
    keys = list(store.scale_keys)
    size = store.meta["hr_size"]
    if cfg.patch > size:
        raise BadInput(f"isr_fer.patch: {cfg.patch} is larger than the {size}-px faces")
    if "valid" not in store.splits:
        raise BadInput(f"{cfg.prepared}: no valid split to report the SR network on (splits: {sorted(store.splits)})")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    train = ScaledFaces(cfg.prepared, "train", keys)
    model = ISRNet(ISRNetConfig(in_channels=store.meta["channels"], channels=cfg.channels, blocks=cfg.blocks,
                                res_scale=cfg.res_scale)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.iterations)
    rng = np.random.default_rng(cfg.seed)
    patch = cfg.patch or size
    losses = []
    with mlflow_run(cfg.experiment, "isr_fer", params=asdict(cfg)):
        model.train()
        for it in tqdm(range(cfg.iterations), desc="isr_fer", unit="it", disable=not progress):
            rows = rng.integers(0, len(train.hr), cfg.batch_size)
            key_of = rng.integers(0, len(keys), cfg.batch_size)
            top, left = rng.integers(0, size - patch + 1, (2, cfg.batch_size))
            flip = rng.random(cfg.batch_size) < 0.5
            crop = [np.s_[t : t + patch, l : l + patch] for t, l in zip(top, left)]
            lr = np.stack([train.faces[keys[k]][r][c] for k, r, c in zip(key_of, rows, crop)])  # (B, p, p, C)
            hr = np.stack([train.hr[r][c] for r, c in zip(rows, crop)])
            lr[flip], hr[flip] = lr[flip, :, ::-1], hr[flip, :, ::-1]
            loss = F.l1_loss(model(images_to_tensor(lr, device)), images_to_tensor(hr, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if (it + 1) % max(cfg.iterations // 10, 1) == 0:
                mlflow.log_metric("l_l1", float(np.mean(losses[-50:])), step=it + 1)
                if progress:
                    print(f"isr_fer iteration {it + 1}/{cfg.iterations}: L1 {np.mean(losses[-50:]):.4f}", flush=True)
        model.cpu().eval()
        valid = ScaledFaces(cfg.prepared, "valid", keys)
        report = {}
        for key in keys:
            report[key] = {"bicubic_psnr": psnr(valid.faces[key], valid.hr),
                           "isr_psnr": psnr(super_resolve(model, valid.faces[key]), valid.hr)}
            mlflow.log_metrics({"valid_psnr_bicubic": report[key]["bicubic_psnr"],
                                "valid_psnr_isr": report[key]["isr_psnr"]}, step=int(float(key[1:])))
        out = Path(cfg.out)
        with atomic_file(out) as tmp:
            save_isr(model, tmp, extra={"hr_size": size, "scale_keys": keys})
        mlflow.log_artifact(str(out), artifact_path="model")
    final = float(np.mean(losses[-50:])) if losses else math.nan
    return {"out": str(out), "iterations": cfg.iterations, "final_l1": final, "valid_psnr": report}
