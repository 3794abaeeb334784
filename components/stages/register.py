"""Stage `register`: FSR-FER as an MLflow pyfunc over face images, a new version of `fsrfer`.

The logged model (components/serving/fsrfer.py) takes a DataFrame with an `image` column
of encoded image bytes (grayscale or RGB, any size, pre-cropped faces) and returns class
probabilities. Its artifacts are the teacher (extractor + classifier), G and the serving
config (HR size, channels, classes and face crop rule, from the prepared store's meta.json,
and the scales where G applies, chosen on valid by the evaluate stage).

The new version gets alias `challenger`, tags of identity and lineage (data, teacher and
generator hashes) and a model card; its registration run carries FSR-FER's accuracy per LR
scale on valid and test beside bicubic's, the scales where G applies and the training params
(`train.<name>`) (components/registry.py logs and registers them, and later reads them to
decide promotion). Writes `out` (JSON: name, version, run id, model URI).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from components.config import RegisterConfig
from components.data.feature_cache import FeatureCache
from components.data.store import PreparedStore
from components.io import BadInput, file_sha256
from components.metrics import G_ALWAYS, fsr_g_scales
from components.registry import log_and_register, require_files, serving_config, training_params
from components.serving.fsrfer import FSRFERPredictor


def register(cfg: RegisterConfig) -> dict:
    """FSR-FER: log the pyfunc, register a new version with alias challenger and its tags; returns the record."""
    require_files(cfg.teacher, cfg.fsr, cfg.metrics)
    cache = FeatureCache(cfg.features)
    cache.require_extractor(cfg.teacher, "register.teacher")
    store = PreparedStore(cfg.prepared)
    table = json.loads(Path(cfg.metrics).read_text())
    g_scales = fsr_g_scales(table)
    if g_scales is None:
        raise BadInput(f"register.metrics: {cfg.metrics} has no {G_ALWAYS} column to choose where G applies; "
                       f"rerun `fsrfer evaluate`")
    serving = serving_config(store, g_scales)
    g_applies = ",".join(f"{s:g}" for s in g_scales) or "never"
    generator = torch.load(cfg.fsr, map_location="cpu", weights_only=True)
    params = training_params(generator.get("train_config", {}))
    manifest = cache.manifest
    lineage = {"data_sha256": manifest["prepared_meta_sha256"], "teacher_sha256": file_sha256(cfg.teacher),
               "generator_sha256": file_sha256(cfg.fsr)}
    return log_and_register(cfg, store, "fsrfer_model.py", {"teacher": cfg.teacher, "generator": cfg.fsr},
                            FSRFERPredictor(cfg.teacher, cfg.fsr, serving), table, "fsrfer", lineage,
                            params | {"g_scales": g_applies},
                            notes={"G applies at scales": f"{g_applies} (where it beat bicubic on valid)"})
