"""`fsrfer predict`: the champion at work on photos, folders of photos and videos.

    fsrfer predict class.jpg photos/ lecture.mp4 --model fsrfer --alias champion --out predictions/

The registered model is loaded by alias from MLflow (MLFLOW_TRACKING_URI, else the project's
mlruns/mlflow.db) and called on its scene path (`params={"detect": True}`,
components/serving/fsrfer.py): every face is found (MTCNN; `--min-face-size` down to 12 px,
`--upsample` to find smaller ones), cut the way the model's training faces were made, measured
(native size, scale) and classified. Video frames are sampled every `--every` seconds.

Writes under --out, each file atomically:
  annotated/<input>.png   the image with a box, label and confidence per face
  faces.csv, faces.json   one row per face (input, frame, box, landmarks, native size, scale,
                          label, confidence, every class probability); a photo with no face is
                          one row whose `error` says so
  summary.json            the model version, expression counts per input and overall, and the
                          inputs that could not be read (each named with the reason; the others go on)
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from components.io import BadInput, atomic_file, atomic_write_text
from components.tracking import tracking_uri

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def list_inputs(paths: list[str]) -> list[Path]:
    """Files named, and the image and video files under folders named (sorted); BadInput for a missing path."""
    out = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        elif path.exists():
            out.append(path)
        else:
            raise BadInput(f"{name}: no such file or folder")
    return out


def read_frames(path: Path, every: float) -> list[tuple[int, np.ndarray]]:
    """(frame index, BGR image) pairs: the image itself, or a video's frames every `every` seconds."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        video = cv2.VideoCapture(str(path))
        if not video.isOpened():
            raise BadInput(f"{path}: not a readable video")
        fps = video.get(cv2.CAP_PROP_FPS) or 25.0
        step = max(1, int(round(every * fps)))
        frames, index = [], 0
        while True:
            ok, frame = video.read()
            if not ok:
                break
            if index % step == 0:
                frames.append((index, frame))
            index += 1
        video.release()
        if not frames:
            raise BadInput(f"{path}: no frame could be decoded")
        return frames
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BadInput(f"{path}: not a readable image")
    return [(0, image)]


def annotate(bgr: np.ndarray, rows: list[dict]) -> np.ndarray:
    """The image with each face's box and `label confidence` drawn."""
    out = bgr.copy()
    thickness = max(1, round(min(out.shape[:2]) / 400))
    for row in rows:
        if row["face"] < 0:
            continue
        x, y, w, h = row["box_x"], row["box_y"], row["box_w"], row["box_h"]
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 220, 0), thickness)
        cv2.putText(out, f"{row['label']} {row['confidence_label']:.2f}", (x, max(10, y - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * thickness, (0, 220, 0), thickness, cv2.LINE_AA)
    return out


def load_model(model: str, alias: str):
    """The registered model `model`@`alias` as a pyfunc; BadInput when the registry does not have it."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        version = mlflow.MlflowClient(uri).get_model_version_by_alias(model, alias)
    except mlflow.exceptions.MlflowException as err:
        raise BadInput(f"--model {model} --alias {alias}: not in the registry at {uri} ({err.message.splitlines()[0]})") from None
    return mlflow.pyfunc.load_model(f"models:/{model}@{alias}"), int(version.version)


def predict(inputs: list[str], out: str, model: str = "fsrfer", alias: str = "champion", min_face_size: int = 12,
            upsample: float = 1.0, every: float = 1.0, progress: bool = True) -> dict:
    """Run the command; returns the summary it writes."""
    import pandas as pd

    files = list_inputs(inputs)
    if not files:
        raise BadInput(f"{' '.join(inputs)}: no image or video files")
    pyfunc, version = load_model(model, alias)
    classes = list(pyfunc.unwrap_python_model().cfg.classes)
    params = {"detect": True, "min_face_size": int(min_face_size), "upsample": float(upsample)}
    out_dir = Path(out)
    (out_dir / "annotated").mkdir(parents=True, exist_ok=True)
    rows, skipped, per_input = [], [], {}
    for path in tqdm(files, desc="predict", unit="input", disable=not progress):
        try:
            frames = read_frames(path, every)
        except BadInput as err:
            log.warning("%s", err)
            skipped.append({"input": str(path), "reason": str(err)})
            continue
        encoded = [cv2.imencode(".png", frame)[1].tobytes() for _, frame in frames]
        result = pyfunc.predict(pd.DataFrame({"image": encoded}), params=params)
        counts = Counter()
        for (index, frame), (_, faces) in zip(frames, _by_row(result, len(frames))):
            face_rows = [_face_row(str(path), index, face, classes) for face in faces]
            counts.update(r["label"] for r in face_rows if r["face"] >= 0)
            rows += face_rows
            name = path.stem if len(frames) == 1 else f"{path.stem}_frame{index:06d}"
            with atomic_file(out_dir / "annotated" / f"{name}.png") as tmp:
                if not cv2.imwrite(str(tmp), annotate(frame, face_rows)):
                    raise BadInput(f"{out_dir}: cannot write the annotated image {name}.png")
        per_input[str(path)] = {"frames": len(frames), "faces": sum(counts.values()), "expressions": dict(counts)}
    frame = pd.DataFrame(rows)
    with atomic_file(out_dir / "faces.csv") as tmp:
        frame.to_csv(tmp, index=False)
    atomic_write_text(out_dir / "faces.json", json.dumps(rows, indent=2) + "\n")
    total = Counter(r["label"] for r in rows if r["face"] >= 0)
    summary = {"model": model, "alias": alias, "version": version, "tracking_uri": tracking_uri(),
               "inputs": len(files), "read": len(per_input), "faces": sum(total.values()),
               "expressions": {c: total.get(c, 0) for c in classes}, "per_input": per_input, "skipped": skipped,
               "out": str(out_dir)}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _by_row(result, n: int):
    """The scene output split by input row (every row has at least one output row)."""
    for i in range(n):
        yield i, result[result["row"] == i].to_dict("records")


def _face_row(source: str, frame: int, face: dict, classes: list[str]) -> dict:
    probs = {c: float(face[c]) for c in classes}
    found = face["face"] >= 0
    return {"input": source, "frame": frame, "face": int(face["face"]),
            "box_x": int(face["box_x"]), "box_y": int(face["box_y"]), "box_w": int(face["box_w"]),
            "box_h": int(face["box_h"]), "detector_confidence": round(float(face["confidence"]), 4),
            "landmarks": face["landmarks"], "native_size": int(face["native_size"]),
            "scale": round(float(face["scale"]), 3), "label": face["label"],
            "confidence_label": round(probs[face["label"]], 4) if found else 0.0,
            **({c: round(p, 6) for c, p in probs.items()} if found else {c: None for c in classes}),
            "error": face["error"]}
