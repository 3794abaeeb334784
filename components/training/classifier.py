"""Supervised training of a CovPoolFER classifier on prepared faces, for two stages:

  teacher         the frozen FER model of FSR-FER, on the HR training faces only (keys ("x1",));
  multiscale_cnn  the practitioner's baseline: the same network and recipe, each training face
                  drawn at x1 or at one of the prepared LR scales (MATLAB bicubic back to the
                  input size, as every LR path here sees it), uniformly per face and per step.

One epoch-based loop, one process (no Ray: the teacher's step is the CNN's, benchmarks/README.md).
Selects the epoch with the best mean validation accuracy over the training keys (the validation
split only: a store without one is refused, never scored on test). Class imbalance by a
class-weighted loss ("weighted_loss", weights ~ (1 / class frequency)^balance_power, normalised to
mean 1), a class-balanced sampler ("sampler"), or neither ("none"). Augmentation with
components/data/augment.py, optionally followed by random erasing.

Levers for real data (defaults keep the original recipe; the FER+ profile's choices and each
lever's measured effect are in benchmarks/README.md):
- targets: "hard" (the majority label) or "votes" (the store's per-face label distribution as a
  soft target: FER+'s probabilistic-label training; one-hot where a dataset has no votes);
- label_smoothing: cross-entropy label smoothing;
- schedule: "cosine" (per epoch, from lr to 0) or "onecycle" (per step: warm-up over the first
  `warmup` share of steps to lr, then cosine annealing, torch's OneCycleLR);
- erase_p: random erasing (one rectangle of 2-20% of the face, filled with noise) per face;
- precision: the training forward under bf16 autocast ("bf16"; "auto" where the device has native
  bf16), the loss in fp32; validation and the saved model are fp32.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from components.config import TeacherConfig
from components.data.augment import AugmentConfig, augment_batch, build_train_transform
from components.data.store import PreparedStore, ScaledFaces
from components.io import BadInput, atomic_file
from components.losses import class_weights
from components.models.covpool import CovPoolConfig, CovPoolFER, save_covpool
from components.runtime import images_to_tensor, pick_device, predict_proba, seed_everything, training_autocast, uses_bf16
from components.tracking import mlflow_run


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decoupled weight decay on conv/linear weights only: not on BatchNorm, biases, or the
    BiMap's orthogonal parametrization (shrinking its free parameter stalls training)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim > 1 and "bimap" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def random_erase(images: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Random erasing (Zhong et al. 2020) on uint8 faces (B, H, W, C): with probability p per face,
    one rectangle of 2-20% of the area, aspect 0.3-3.3, filled with uniform noise."""
    out = images.copy()
    _, h, w, c = out.shape
    for img in out:
        if rng.random() >= p:
            continue
        area = rng.uniform(0.02, 0.2) * h * w
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        eh, ew = min(h, max(1, int(round(np.sqrt(area * aspect))))), min(w, max(1, int(round(np.sqrt(area / aspect)))))
        y, x = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
        img[y:y + eh, x:x + ew] = rng.integers(0, 256, (eh, ew, c), dtype=np.uint8)
    return out


def train_covpool_classifier(cfg: TeacherConfig, keys: tuple[str, ...], run_name: str,
                             progress: bool = True, init: str = "") -> dict:
    """Train CovPoolFER on the training faces at `keys` ("x1" = HR, "x<s>" = LR upscaled back),
    select the epoch on mean valid accuracy over `keys`, save the model to cfg.out.

    Returns the summary: best mean valid accuracy, per-epoch history (loss, mean and per-key valid
    accuracy), the model file. With keys ("x1",) the batches, RNG streams and bytes are the
    original HR-only teacher's.
    """
    import mlflow


    store = PreparedStore(cfg.prepared)
    if "valid" not in store.splits:
        raise BadInput(f"{cfg.prepared}: no valid split to select the {run_name}'s epoch on (splits: "
                       f"{sorted(store.splits)}); set prepare.valid_fraction > 0 to carve one from train")
    unknown = sorted(set(keys) - {"x1", *store.scale_keys})
    if unknown:
        raise BadInput(f"{cfg.prepared}: no faces at {unknown} (the store has x1 and {store.scale_keys})")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    train = ScaledFaces(cfg.prepared, "train", list(keys))  # (N, H, W, C) uint8 per key, x1 = HR
    valid = ScaledFaces(cfg.prepared, "valid", list(keys))
    hr, labels = train.hr, train.labels
    num_classes = len(store.classes)
    targets = (np.asarray(store.array("train", "votes"), dtype=np.float32) if cfg.targets == "votes"
               else labels)
    model_cfg = CovPoolConfig(in_channels=hr.shape[3], conv_channels=cfg.conv_channels, pool_after=cfg.pool_after,
                              bimap_dim=cfg.bimap_dim, fc_dims=cfg.fc_dims, num_classes=num_classes, dropout=cfg.dropout,
                              test_flip=cfg.test_flip)
    model = CovPoolFER(model_cfg)
    if init:
        if not Path(init).is_file():
            raise BadInput(f"{run_name}.init: {init} does not exist")
        start = torch.load(init, map_location="cpu", weights_only=True)
        def plain(config: dict) -> dict:  # the design: what the weights fit (test_flip is how eval mode reads them)
            return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "test_flip"}

        if plain(start["config"]) != plain(asdict(model_cfg)):
            raise BadInput(f"{run_name}.init: {init} is another design than {run_name}'s params "
                           f"({start['config']} vs {asdict(model_cfg)})")
        model.load_state_dict(start["state_dict"])
    model = model.to(device)
    weights = class_weights(labels, num_classes, cfg.balance_power)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device)
                                  if cfg.balance == "weighted_loss" else None, label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    steps_per_epoch = sum(1 for i in range(0, len(hr), cfg.batch_size) if len(hr) - i >= 2)
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, pct_start=cfg.warmup,
                                                        total_steps=cfg.epochs * steps_per_epoch)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    transform = build_train_transform(hr.shape[1], AugmentConfig(), seed=cfg.seed) if cfg.augment else None
    sample_p = weights[labels] / weights[labels].sum() if cfg.balance == "sampler" else None
    rng = np.random.default_rng(cfg.seed)
    erase_rng = np.random.default_rng([cfg.seed, 1])  # its own stream: erase_p = 0 leaves the order as before
    scale_rng = np.random.default_rng([cfg.seed, 2])  # its own stream: HR-only training draws nothing from it

    best_acc, best_state, history = -1.0, None, []
    bf16 = uses_bf16(cfg.precision, device)
    with mlflow_run(cfg.experiment, run_name, params=asdict(cfg) | {"num_classes": num_classes, "bf16": bf16,
                                                                     "train_keys": ",".join(keys)}):
        for epoch in tqdm(range(cfg.epochs), desc=run_name, unit="epoch", disable=not progress):
            model.train()
            order = rng.choice(len(hr), len(hr), p=sample_p) if sample_p is not None else rng.permutation(len(hr))
            total, n, lr_max = 0.0, 0, 0.0
            for i in range(0, len(order), cfg.batch_size):
                idx = np.sort(order[i : i + cfg.batch_size])
                if len(idx) < 2:  # BatchNorm needs more than one sample
                    continue
                if len(keys) == 1:
                    batch = train.faces[keys[0]][idx]
                else:  # each face at a scale of its own
                    key_of = scale_rng.integers(0, len(keys), len(idx))
                    batch = np.stack([train.faces[keys[k]][r] for k, r in zip(key_of, idx)])
                if transform is not None:
                    batch = augment_batch(transform, batch)
                if cfg.erase_p > 0:
                    batch = random_erase(batch, cfg.erase_p, erase_rng)
                with training_autocast(cfg.precision, device):
                    logits = model(images_to_tensor(batch, device))
                loss = loss_fn(logits.float(), torch.from_numpy(targets[idx]).to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr_max = max(lr_max, optimizer.param_groups[0]["lr"])
                optimizer.step()
                if cfg.schedule == "onecycle":
                    scheduler.step()
                total += loss.item() * len(idx)
                n += len(idx)
            if cfg.schedule == "cosine":
                scheduler.step()
            per_key = {k: float((predict_proba(model, valid.faces[k], device).argmax(1) == valid.labels).mean())
                       for k in keys}
            acc = float(np.mean(list(per_key.values())))
            history.append({"epoch": epoch, "loss": total / max(n, 1), "valid_accuracy": acc}
                           | ({f"valid_accuracy_{k}": a for k, a in per_key.items()} if len(keys) > 1 else {}))
            mlflow.log_metrics({"train_loss": total / max(n, 1), "valid_accuracy": acc, "lr_max": lr_max,
                                "lr_last": optimizer.param_groups[0]["lr"]}
                               | ({f"valid_accuracy_{k}": a for k, a in per_key.items()} if len(keys) > 1 else {}),
                               step=epoch)
            if progress:
                print(f"{run_name} epoch {epoch + 1}/{cfg.epochs}: loss {total / max(n, 1):.4f}, "
                      f"valid accuracy {acc:.4f}", flush=True)
            if acc > best_acc:
                best_acc = acc
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        model.cpu()
        out = Path(cfg.out)
        with atomic_file(out) as tmp:
            save_covpool(model, tmp, extra={"classes": store.classes, "valid_accuracy": best_acc,
                                            "hr_size": hr.shape[1]} | ({"train_keys": list(keys)} if len(keys) > 1 else {}))
        mlflow.log_metric("best_valid_accuracy", best_acc)
        mlflow.log_artifact(str(out), artifact_path="model")
    return {"best_valid_accuracy": best_acc, "epochs": cfg.epochs, "bf16": bf16, "out": str(out), "history": history}
