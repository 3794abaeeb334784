"""Test-time flip on trained models: valid accuracy per scale of each CovPoolFER in a work folder
read plain, with the face's and its mirror's probabilities averaged, and with their features
averaged (`test_flip`, what the models do in eval mode when the flag is on), and of each GME-Net
with its logits averaged. Reads valid only. Prints JSON.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flip_at_eval.py <work folder>   # its data/prepared and models/
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from components.data.store import PreparedStore, ScaledFaces  # noqa: E402
from components.models.covpool import load_covpool  # noqa: E402
from components.models.gmenet import load_gmenet  # noqa: E402
from components.runtime import images_to_tensor, predict_proba  # noqa: E402


@torch.no_grad()
def covpool_rows(path: Path, data: ScaledFaces) -> dict:
    model = load_covpool(path)  # each way read explicitly below, through the single-face `features`
    out = {}
    for key, faces in data.faces.items():
        hits = np.zeros(3)
        for i in range(0, len(faces), 256):
            x = images_to_tensor(faces[i : i + 256])
            f, f_mirror = model.extractor.features(x), model.extractor.features(x.flip(3))
            logits, logits_mirror = model.classifier(f), model.classifier(f_mirror)
            y = torch.from_numpy(data.labels[i : i + 256])
            hits += [(logits.argmax(1) == y).sum().item(),
                     ((logits.softmax(1) + logits_mirror.softmax(1)).argmax(1) == y).sum().item(),
                     (model.classifier(0.5 * (f + f_mirror)).argmax(1) == y).sum().item()]
        out[key] = dict(zip(("plain", "probs_mean", "features_mean"), (hits / len(faces)).round(4).tolist()))
    return out


def gmenet_rows(path: Path, data: ScaledFaces) -> dict:
    plain, flip = load_gmenet(path), load_gmenet(path)
    flip.cfg = replace(flip.cfg, test_flip=True)
    return {key: {"plain": round(float((predict_proba(plain, faces).argmax(1) == data.labels).mean()), 4),
                  "logits_mean": round(float((predict_proba(flip, faces).argmax(1) == data.labels).mean()), 4)}
            for key, faces in data.faces.items()}


def main() -> None:
    torch.set_num_threads(1)
    work = Path(sys.argv[1])
    store = PreparedStore(str(work / "data" / "prepared"))
    data = ScaledFaces(str(work / "data" / "prepared"), "valid", ["x1", *store.scale_keys])
    out = {}
    for name in ("teacher", "multiscale_cnn"):
        if (work / "models" / f"{name}.pt").is_file():
            out[name] = covpool_rows(work / "models" / f"{name}.pt", data)
    for name in ("gme_teacher", "gmenet"):
        if (work / "models" / f"{name}.pt").is_file():
            out[name] = gmenet_rows(work / "models" / f"{name}.pt", data)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
