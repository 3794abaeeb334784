"""Stage `register_gmenet`: GME-Net as an MLflow pyfunc over face images
(components/serving/gmenet.py), a new version of `gmenet` with alias `challenger`: the
same registration as FSR-FER's (components/registry.py), with the compare table's
GME-Net column and costs on the registration run. Writes `out` (JSON: name, version, run id, model URI).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from components.config import RegisterGMEConfig
from components.data.store import PreparedStore
from components.io import file_sha256
from components.registry import log_and_register, require_files, serving_config, training_params
from components.serving.gmenet import GMENetPredictor


def register_gmenet(cfg: RegisterGMEConfig) -> dict:
    """GME-Net: the same registration as FSR-FER's, its own pyfunc (components/serving/gmenet.py) and name."""
    require_files(cfg.gmenet, cfg.metrics)
    store = PreparedStore(cfg.prepared)
    compared = json.loads(Path(cfg.metrics).read_text())
    cost = compared.get("cost", {}).get("gmenet", {})
    extra = torch.load(cfg.gmenet, map_location="cpu", weights_only=True)["extra"]
    params = training_params(extra.get("train_config", {})) | {f"cost.{k}": str(v) for k, v in cost.items()}
    lineage = {"data_sha256": file_sha256(Path(cfg.prepared) / "meta.json"), "model_sha256": file_sha256(cfg.gmenet)}
    notes = {"Cost per face": f"{cost['params']:,} parameters, {cost['flops'] / 1e6:.1f} MFLOPs"} if cost else None
    return log_and_register(cfg, store, "gmenet_model.py", {"model": cfg.gmenet},
                            GMENetPredictor(cfg.gmenet, serving_config(store)), compared["table"], "gmenet", lineage,
                            params, notes=notes)
