"""Stage `register`: FSR-FER as an MLflow pyfunc over face images, a new version of `fsrfer`.

The logged model (components/serving/fsrfer.py) takes a DataFrame with an `image` column
of encoded image bytes (grayscale or RGB, any size, pre-cropped faces) and returns class
probabilities. Its artifacts are the frozen model (`teacher`: extractor + classifier), G, the
HR teacher (`hr_teacher`) where valid chose it at some scale, and the serving config (HR size,
channels, classes and face crop rule, from the prepared store's meta.json, and which path serves
each scale, chosen on valid by the evaluate stage: components/metrics.py:fsr_routes).

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
from components.metrics import G_ALWAYS, HR_TEACHER, fsr_routes, route_scales
from components.registry import log_and_register, require_files, serving_config, training_params
from components.serving.fsrfer import FSRFERPredictor


def register(cfg: RegisterConfig) -> dict:
    """FSR-FER: log the pyfunc, register a new version with alias challenger and its tags; returns the record."""
    require_files(cfg.teacher, cfg.fsr, cfg.metrics)
    cache = FeatureCache(cfg.features)
    cache.require_extractor(cfg.teacher, "register.teacher")
    store = PreparedStore(cfg.prepared)
    table = json.loads(Path(cfg.metrics).read_text())
    routes = fsr_routes(table)
    if routes is None:
        raise BadInput(f"register.metrics: {cfg.metrics} has no {G_ALWAYS} column to choose where G applies; "
                       f"rerun `fsrfer evaluate`")
    g_scales, teacher_scales = route_scales(routes, G_ALWAYS), route_scales(routes, HR_TEACHER)
    artifacts = {"teacher": cfg.teacher, "generator": cfg.fsr}
    lineage = {"data_sha256": cache.manifest["prepared_meta_sha256"], "teacher_sha256": file_sha256(cfg.teacher),
               "generator_sha256": file_sha256(cfg.fsr)}
    if teacher_scales:
        if not cfg.hr_teacher:
            raise BadInput(f"register.hr_teacher: {cfg.metrics} serves scales {list(teacher_scales)} with the HR "
                           f"teacher; set register.hr_teacher to the file evaluate.hr_teacher names")
        require_files(cfg.hr_teacher)
        artifacts["hr_teacher"] = cfg.hr_teacher
        lineage["hr_teacher_sha256"] = file_sha256(cfg.hr_teacher)
    serving = serving_config(store, g_scales, teacher_scales)
    g_applies = ",".join(f"{s:g}" for s in g_scales) or "never"
    teacher_serves = ",".join(f"{s:g}" for s in teacher_scales) or "never"
    generator = torch.load(cfg.fsr, map_location="cpu", weights_only=True)
    params = training_params(generator.get("train_config", {}))
    return log_and_register(cfg, store, "fsrfer_model.py", artifacts,
                            FSRFERPredictor(cfg.teacher, cfg.fsr, serving, hr_teacher_path=artifacts.get("hr_teacher")),
                            table, "fsrfer", lineage, params | {"g_scales": g_applies, "teacher_scales": teacher_serves},
                            notes={"G applies at scales": f"{g_applies} (where it beat the frozen model alone and the "
                                                          f"HR teacher on valid)",
                                   "HR teacher serves scales": f"{teacher_serves} (where it beat the frozen model, "
                                                               f"with or without G, on valid)"})
