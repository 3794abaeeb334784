"""Stage `features`: the frozen extractor's features of every HR face and every LR scale.

For each split, rows come in blocks: x1 (the HR faces), then each LR scale (its native
LR face, MATLAB-bicubic back up to the HR size). Per split, memory-mapped .npy files:

    <out>/<split>/features.npy  (R, d(d+1)/2) upper triangle of the LogEig matrix
                                 (components.models.covpool.triu_vector), float32 or float16
    <out>/<split>/probs.npy     (R, K) the frozen classifier's class probabilities, float32
    <out>/<split>/labels.npy    (R,) int64;  scale.npy (R,) float32 (1.0 = HR);
    <out>/<split>/index.npy     (R,) row of the face in the prepared split (pairs LR with HR)
    <out>/manifest.json         extractor sha256, prepared-store sha256, dims, dtype, blocks, bytes

`components.data.feature_cache.FeatureCache` reads it back. DVC tracks the folder: its deps are the teacher model and
the prepared store only, so nothing else invalidates it.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from components.config import DTYPES, FeaturesConfig
from components.data.degrade import upscale_to
from components.data.store import PreparedStore
from components.io import BadInput, atomic_directory, file_sha256
from components.models.covpool import CovPoolFER, load_covpool, triu_vector
from components.runtime import images_to_tensor, pick_device


def block_images(store: PreparedStore, split: str, key: str, start: int, stop: int) -> np.ndarray:
    """uint8 HR-size faces of one block's rows [start, stop): HR as stored, LR upscaled back."""
    hr_shape = store.array(split, "hr").shape[1:3]
    if key == "x1":
        return np.asarray(store.array(split, "hr")[start:stop])
    return upscale_to(np.asarray(store.array(split, key)[start:stop]), hr_shape)


@torch.no_grad()
def extract(model: CovPoolFER, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen model on a batch: (upper-triangle features (B, D), class probabilities (B, K))."""
    logeig = model.extractor(images)  # (B, d, d)
    probs = torch.softmax(model.classifier(logeig), dim=1)
    return triu_vector(logeig), probs


def cache_features(cfg: FeaturesConfig, progress: bool = True) -> dict:
    """Write the feature cache; returns rows per split and the size on disk."""
    store = PreparedStore(cfg.prepared)
    device = pick_device(cfg.device)
    model = load_covpool(cfg.teacher).to(device)
    if model.cfg.in_channels != store.meta["channels"]:
        raise BadInput(f"{cfg.teacher}: teacher expects {model.cfg.in_channels} channels, "
                       f"the prepared store has {store.meta['channels']}")
    keys = ["x1"] + list(store.scale_keys)
    scales = [1.0] + [float(s) for s in store.meta["scales"]]
    dtype = DTYPES[cfg.dtype]
    manifest = {
        "extractor_sha256": file_sha256(cfg.teacher),
        "prepared_meta_sha256": file_sha256(Path(cfg.prepared) / "meta.json"),
        "bimap_dim": model.cfg.bimap_dim, "feature_dim": model.cfg.feature_dim,
        "classes": store.classes, "dtype": cfg.dtype, "keys": keys, "scales": scales, "splits": {},
    }
    with atomic_directory(cfg.out) as tmp:
        for split in store.splits:
            n = len(store.array(split, "labels"))
            rows = n * len(keys)
            d = tmp / split
            d.mkdir()
            feats = np.lib.format.open_memmap(d / "features.npy", mode="w+", dtype=dtype, shape=(rows, model.cfg.feature_dim))
            probs = np.lib.format.open_memmap(d / "probs.npy", mode="w+", dtype=np.float32, shape=(rows, model.cfg.num_classes))
            labels = np.asarray(store.array(split, "labels"))
            bar = tqdm(total=rows, desc=f"features {split}", unit="img", disable=not progress, mininterval=2)
            batches = [(b, key, start, min(start + cfg.batch_size, n))
                       for b, key in enumerate(keys) for start in range(0, n, cfg.batch_size)]
            # Read + upscale the next batch in a thread (NumPy releases the GIL) while the
            # extractor runs on the current one.
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(block_images, store, split, *batches[0][1:])
                for i, (b, key, start, stop) in enumerate(batches):
                    images = pending.result()
                    if i + 1 < len(batches):
                        pending = pool.submit(block_images, store, split, *batches[i + 1][1:])
                    f, p = extract(model, images_to_tensor(images, device))
                    feats[b * n + start : b * n + stop] = f.cpu().numpy().astype(dtype)
                    probs[b * n + start : b * n + stop] = p.cpu().numpy()
                    bar.update(stop - start)
            bar.close()
            feats.flush()
            probs.flush()
            del feats, probs
            np.save(d / "labels.npy", np.tile(labels, len(keys)))
            np.save(d / "scale.npy", np.repeat(np.array(scales, np.float32), n))
            np.save(d / "index.npy", np.tile(np.arange(n, dtype=np.int64), len(keys)))
            manifest["splits"][split] = {"faces": n, "rows": rows}
        size = sum(p.stat().st_size for p in tmp.rglob("*.npy"))
        manifest["bytes_on_disk"] = size
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"rows": {s: v["rows"] for s, v in manifest["splits"].items()}, "bytes_on_disk": size,
            "megabytes_on_disk": round(size / 2**20, 2), "out": cfg.out}
