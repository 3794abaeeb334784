"""`fsrfer predict`: the champion at work on photos, folders of photos and videos.

    fsrfer predict class.jpg photos/ lecture.mp4 --model fsrfer --alias champion --out predictions/

The registered model is loaded by alias from MLflow (MLFLOW_TRACKING_URI, else the project's
mlruns/mlflow.db) and called on its scene path (`params={"detect": True}`,
components/serving/fsrfer.py): every face is found (MTCNN; `--min-face-size` down to 12 px,
`--upsample` to find smaller ones), cut the way the model's training faces were made, measured
(native size, scale) and classified. Video frames are sampled every `--every` seconds.

Writes under --out, each file atomically:
  annotated/<n>_<input>.png   the image (a video: each sampled frame) with a box, label and
                          confidence per face; n numbers the inputs, so equal names never collide
  faces.csv, faces.json   one row per face (input, frame, box, landmarks, native size, scale,
                          label, confidence, every class probability); a photo with no face is
                          one row whose `error` says so
  summary.json            the model version, expression counts per input and overall, and the
                          inputs that could not be read (each named with the reason; the others go on)
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from components.io import BadInput, atomic_file, atomic_write_text
from components.serving.fsrfer import decode_image
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


VIDEO_CHUNK = 16  # sampled video frames per model call: a long video never sits in memory whole
FALLBACK_FPS = 25.0  # a video container that does not say its frame rate


def image_bytes(path: Path) -> list[tuple[int, bytes]]:
    """[(0, the file's bytes)]: a photo goes to the model as its own encoded bytes (EXIF and all)."""
    data = path.read_bytes()
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None:
        raise BadInput(f"{path}: not a readable image")
    return [(0, data)]


def video_chunks(path: Path, every: float) -> Iterator[list[tuple[int, bytes]]]:
    """A video's frames every `every` seconds as (frame index, PNG bytes), VIDEO_CHUNK at a time."""
    video = cv2.VideoCapture(str(path))
    if not video.isOpened():
        raise BadInput(f"{path}: not a readable video")
    step = max(1, int(round(every * (video.get(cv2.CAP_PROP_FPS) or FALLBACK_FPS))))
    chunk, index, sampled = [], 0, 0
    try:
        while video.grab():  # skipped frames are grabbed, not decoded
            if index % step == 0:
                ok, frame = video.retrieve()
                if ok:
                    chunk.append((index, cv2.imencode(".png", frame)[1].tobytes()))
                    sampled += 1
                if len(chunk) == VIDEO_CHUNK:
                    yield chunk
                    chunk = []
            index += 1
    finally:
        video.release()
    if chunk:
        yield chunk
    if not sampled:
        raise BadInput(f"{path}: no frame could be decoded")


def annotate(rgb: np.ndarray, rows: list[dict]) -> np.ndarray:
    """The image (BGR, for writing) with each face's box and `label confidence` drawn."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(min(out.shape[:2]) / 400))  # 1 px up to a 800-px side, thicker on larger photos
    for row in rows:
        if row["face"] < 0:
            continue
        x, y, w, h = row["box_x"], row["box_y"], row["box_w"], row["box_h"]
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 220, 0), thickness)
        cv2.putText(out, f"{row['label']} {row['confidence_label']:.2f}", (x, max(10, y - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * thickness, (0, 220, 0), thickness, cv2.LINE_AA)  # 0.35: about 8-px text per thickness
    return out


def load_model(model: str, alias: str):
    """(pyfunc, version) of the version `model`@`alias` names now; BadInput when the registry does not have it."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        version = mlflow.MlflowClient(uri).get_model_version_by_alias(model, alias)
    except mlflow.exceptions.MlflowException as err:
        raise BadInput(f"model {model}@{alias}: not in the registry at {uri} ({err.message.splitlines()[0]})") from None
    return mlflow.pyfunc.load_model(f"models:/{model}/{version.version}"), int(version.version)


def predict(inputs: list[str], out: str, model: str = "fsrfer", alias: str = "champion", min_face_size: int = 12,
            upsample: float = 1.0, every: float = 1.0, progress: bool = True) -> dict:
    """Run the command; returns the summary it writes."""
    import pandas as pd

    if not (math.isfinite(every) and every > 0):
        raise BadInput(f"every: {every} must be a positive number of seconds")
    files = list_inputs(inputs)
    if not files:
        raise BadInput(f"{' '.join(inputs)}: no image or video files")
    pyfunc, version = load_model(model, alias)
    classes = list(pyfunc.unwrap_python_model().cfg.classes)
    params = {"detect": True, "min_face_size": int(min_face_size), "upsample": float(upsample)}
    out_dir = Path(out)
    (out_dir / "annotated").mkdir(parents=True, exist_ok=True)
    rows, skipped, per_input = [], [], {}
    for number, path in enumerate(tqdm(files, desc="predict", unit="input", disable=not progress)):
        is_video = path.suffix.lower() in VIDEO_SUFFIXES
        counts, frames, input_rows = Counter(), 0, []
        try:
            for chunk in (video_chunks(path, every) if is_video else [image_bytes(path)]):
                result = pyfunc.predict(pd.DataFrame({"image": [data for _, data in chunk]}), params=params)
                for (index, data), faces in zip(chunk, _by_row(result, len(chunk))):
                    # input number first: a/x.jpg and b/x.jpg (or x.jpg and x.png) do not overwrite each other
                    name = f"{number:04d}_{path.stem}" + (f"_frame{index:06d}" if is_video else "")
                    face_rows = [_face_row(str(path), index, f"annotated/{name}.png", face, classes) for face in faces]
                    with atomic_file(out_dir / "annotated" / f"{name}.png") as tmp:
                        if not cv2.imwrite(str(tmp), annotate(decode_image(data, 3, str(path)), face_rows)):
                            raise BadInput(f"{out_dir}: cannot write the annotated image {name}.png")
                    counts.update(r["label"] for r in face_rows if r["face"] >= 0)
                    input_rows += face_rows
                    frames += 1
        except BadInput as err:
            log.warning("%s", err)
            skipped.append({"input": str(path), "reason": str(err)})
            continue
        rows += input_rows
        per_input[str(path)] = {"frames": frames, "faces": sum(counts.values()), "expressions": dict(counts)}
    with atomic_file(out_dir / "faces.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    atomic_write_text(out_dir / "faces.json", json.dumps(rows, indent=2) + "\n")
    total = Counter(r["label"] for r in rows if r["face"] >= 0)
    summary = {"model": model, "alias": alias, "version": version, "tracking_uri": tracking_uri(),
               "inputs": len(files), "read": len(per_input), "faces": sum(total.values()),
               "expressions": {c: total.get(c, 0) for c in classes}, "per_input": per_input, "skipped": skipped,
               "out": str(out_dir)}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _by_row(result, n: int) -> Iterator[list[dict]]:
    """The scene output split by input row (every row has at least one output row)."""
    for i in range(n):
        yield result[result["row"] == i].to_dict("records")


def _face_row(source: str, frame: int, annotated: str, face: dict, classes: list[str]) -> dict:
    probs = {c: float(face[c]) for c in classes}
    found = face["face"] >= 0
    return {"input": source, "frame": frame, "annotated": annotated, "face": int(face["face"]),
            "box_x": int(face["box_x"]), "box_y": int(face["box_y"]), "box_w": int(face["box_w"]),
            "box_h": int(face["box_h"]), "detector_confidence": round(float(face["confidence"]), 4),
            "landmarks": face["landmarks"], "native_size": int(face["native_size"]),
            "scale": round(float(face["scale"]), 3), "label": face["label"],
            "confidence_label": round(probs[face["label"]], 4) if found else 0.0,
            **({c: round(p, 6) for c, p in probs.items()} if found else {c: None for c in classes}),
            "error": face["error"]}
