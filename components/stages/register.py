"""Stages `register` and `register_gmenet`: FSR-FER / GME-Net as MLflow pyfuncs over face
images, a new version of `fsrfer` / `gmenet` (the same steps, log_and_register).

The logged model (components/serving/fsrfer.py) takes a DataFrame with an `image` column
of encoded image bytes (grayscale or RGB, any size, pre-cropped faces) and returns class
probabilities. Its artifacts are the teacher (extractor + classifier), G and the serving
config (HR size, channels, classes, from the prepared store's meta.json); it is saved as
a model from code (no pickle) with a signature and an input example (a real LR face of
the test split at the largest scale).

The new version gets alias `challenger` and tags: validation accuracy of FSR-FER per LR
scale and their mean, the test accuracies, the bicubic baseline's, the data and teacher
hashes, and the training params (components/registry.py reads them to decide
promotion). Writes `out` (JSON: name, version, run id, model URI), the DVC out of the stage.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from components.data.records import BadInput
from components.data.store import PreparedStore, atomic_write_text
from components.registry import CHALLENGER, METRIC_PREFIX

COMPONENTS = Path(__file__).resolve().parents[1]
SERVING_REQUIREMENTS = ("torch", "numpy", "opencv-python-headless", "pandas", "mlflow")


@dataclass(frozen=True)
class RegisterConfig:
    prepared: str = "data/prepared"
    features: str = "data/features"
    teacher: str = "models/teacher.pt"
    fsr: str = "models/fsr.pt"
    metrics: str = "metrics/evaluate.json"
    out: str = "registry/fsrfer.json"
    model_name: str = "fsrfer"
    experiment: str = "fsrfer-register"


def metric_tags(table: dict, method: str = "fsrfer") -> dict[str, str]:
    """Version tags from the evaluate table: valid_acc_<scale> (LR scales), their mean, test_acc_*, bicubic_*."""
    if "valid" not in table or method not in table["valid"]:
        raise BadInput(f"evaluate table has no valid/{method} rows (splits: {sorted(table)}); run `fsrfer evaluate`"
                       f" with the {method} model configured")
    tags = {}
    lr_scales = [k for k in table["valid"][method] if k != "x1"]
    for split, prefix in (("valid", METRIC_PREFIX), ("test", "test_acc_")):
        for key, row in table.get(split, {}).get(method, {}).items():
            if key != "x1":
                tags[f"{prefix}{key}"] = f"{row['accuracy']:.6f}"
        for key, row in table.get(split, {}).get("bicubic", {}).items():
            tags[f"bicubic_{prefix}{key}"] = f"{row['accuracy']:.6f}"
    tags[f"{METRIC_PREFIX}mean"] = f"{np.mean([table['valid'][method][k]['accuracy'] for k in lr_scales]):.6f}"
    tags["scales"] = ",".join(lr_scales)
    return tags


def input_example_frame(store: PreparedStore):
    """One real face of the test split (else the first split) at the largest LR scale, as PNG bytes."""
    import pandas as pd

    split = "test" if "test" in store.splits else store.splits[0]
    face = np.asarray(store.array(split, store.scale_keys[-1])[0])  # (h, w, C) RGB or gray
    bgr = cv2.cvtColor(face, cv2.COLOR_RGB2BGR) if face.shape[2] == 3 else face[:, :, 0]
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    return pd.DataFrame({"image": [png.tobytes()]})


def register(cfg: RegisterConfig) -> dict:
    """FSR-FER: log the pyfunc, register a new version with alias challenger and its tags; returns the record."""
    import torch

    from components.serving.fsrfer import FSRFERPredictor
    from components.stages.features import file_sha256

    _require(cfg.teacher, cfg.fsr, cfg.metrics)
    store = PreparedStore(cfg.prepared)
    serving = serving_config(store)
    tags = metric_tags(json.loads(Path(cfg.metrics).read_text()), "fsrfer")
    generator = torch.load(cfg.fsr, map_location="cpu", weights_only=True)
    tags |= {f"param.{k}": str(v)[:250] for k, v in generator.get("train_config", {}).items()}
    manifest = json.loads((Path(cfg.features) / "manifest.json").read_text())
    tags |= {"data_sha256": manifest["prepared_meta_sha256"], "teacher_sha256": file_sha256(cfg.teacher),
             "generator_sha256": file_sha256(cfg.fsr)}
    return log_and_register(cfg, store, "fsrfer_model.py", {"teacher": cfg.teacher, "generator": cfg.fsr},
                            FSRFERPredictor(cfg.teacher, cfg.fsr, serving), tags)


@dataclass(frozen=True)
class RegisterGMEConfig:
    prepared: str = "data/prepared"
    gmenet: str = "models/gmenet.pt"
    metrics: str = "metrics/compare.json"  # the compare stage's table (GME-Net's column)
    out: str = "registry/gmenet.json"
    model_name: str = "gmenet"
    experiment: str = "fsrfer-register"


def register_gmenet(cfg: RegisterGMEConfig) -> dict:
    """GME-Net: the same registration as FSR-FER's, its own pyfunc (components/serving/gmenet.py) and name."""
    import torch

    from components.serving.gmenet import GMENetPredictor
    from components.stages.features import file_sha256

    _require(cfg.gmenet, cfg.metrics)
    store = PreparedStore(cfg.prepared)
    compared = json.loads(Path(cfg.metrics).read_text())
    tags = metric_tags(compared["table"], "gmenet")
    tags |= {f"cost.{k}": str(v) for k, v in compared.get("cost", {}).get("gmenet", {}).items()}
    extra = torch.load(cfg.gmenet, map_location="cpu", weights_only=True)["extra"]
    tags |= {f"param.{k}": str(v)[:250] for k, v in extra.get("train_config", {}).items()}
    tags |= {"data_sha256": file_sha256(Path(cfg.prepared) / "meta.json"), "model_sha256": file_sha256(cfg.gmenet)}
    return log_and_register(cfg, store, "gmenet_model.py", {"model": cfg.gmenet},
                            GMENetPredictor(cfg.gmenet, serving_config(store)), tags)


def _require(*paths: str) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise BadInput(f"register: {path} does not exist; run the stages before registering")


def serving_config(store: PreparedStore):
    from components.serving.fsrfer import ServingConfig

    return ServingConfig(int(store.meta["hr_size"]), int(store.meta["channels"]), tuple(store.classes))


def log_and_register(cfg, store: PreparedStore, entry: str, artifacts: dict[str, str], predictor,
                     tags: dict[str, str]) -> dict:
    """Log the pyfunc of `entry` (components/serving/<entry>, model from code) with `artifacts`, a
    signature from `predictor` on the input example, register a version of cfg.model_name with
    `tags` and alias challenger, write cfg.out; returns the record."""
    import mlflow

    from components.serving.fsrfer import decode_image, probabilities_frame, write_serving_config
    from components.tracking import mlflow_run, tracking_uri

    serving = predictor.cfg
    example = input_example_frame(store)
    faces = [decode_image(b, serving.channels, "input example") for b in example["image"]]
    example_output = probabilities_frame(predictor.predict_proba(faces), serving.classes, [""] * len(faces))
    signature = mlflow.models.infer_signature(example, example_output)

    with mlflow_run(cfg.experiment, f"register-{cfg.model_name}", params=asdict(cfg)) as run, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.log_metrics({k: float(v) for k, v in tags.items() if k.startswith(METRIC_PREFIX)})
        run_tags = mlflow.get_run(run.info.run_id).data.tags
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(COMPONENTS / "serving" / entry),
            artifacts=artifacts | {"serving_config": str(write_serving_config(serving, Path(tmp) / "serving.json"))},
            code_paths=[str(COMPONENTS)],
            signature=signature,
            input_example=example,
            pip_requirements=[_pinned(name) for name in SERVING_REQUIREMENTS],
        )
        for key in ("git_commit", "dvc_lock_sha256"):
            if key in run_tags:
                tags[key] = run_tags[key]
        version = mlflow.register_model(info.model_uri, cfg.model_name, tags=tags)
        client = mlflow.MlflowClient(tracking_uri())
        client.set_registered_model_alias(cfg.model_name, CHALLENGER, version.version)
        # versions are ints in the record whatever the store (the REST client returns strings)
        record = {"model_name": cfg.model_name, "version": int(version.version), "alias": CHALLENGER,
                  "run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                  "model_uri": f"models:/{cfg.model_name}/{version.version}",
                  "valid_acc_mean": float(tags[f"{METRIC_PREFIX}mean"]), "tracking_uri": tracking_uri()}
    atomic_write_text(cfg.out, json.dumps(record, indent=2) + "\n")
    return record


def _pinned(name: str) -> str:
    """`name==<installed version>` (local version suffixes such as +cpu dropped)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name}=={version(name).split('+')[0]}"
    except PackageNotFoundError:
        return name
