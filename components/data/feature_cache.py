"""Read access to the feature cache the `features` stage writes (layout: components/stages/features.py).

Per split, memory-mapped arrays in blocks of rows: x1 (the HR faces), then each LR scale;
`block(split, key)` gives a block's rows, `array(split, name)` one array.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.io import BadInput, file_sha256


class FeatureCache:
    """Read access to the feature cache (memory-mapped)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root}: no feature cache (manifest.json missing); run `fsrfer features`")
        self.manifest = json.loads(path.read_text())

    def require_extractor(self, model: str | Path, param: str) -> None:
        """Refuse a frozen CovPoolFER file other than the one this cache's features came from: G trained on
        one extractor's features, or scored through another's classifier, would be silently wrong."""
        cached = self.manifest.get("extractor_sha256")
        if cached and Path(model).is_file() and file_sha256(model) != cached:
            raise BadInput(f"{param}: {model} is not the extractor {self.root} was cached with (features.teacher); "
                           f"point both at the same CovPoolFER file, or rerun `fsrfer features`")

    @property
    def keys(self) -> list[str]:
        return self.manifest["keys"]

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def array(self, split: str, name: str) -> np.ndarray:
        """name: features, probs, labels, scale or index; memory-mapped."""
        return np.load(self.root / split / f"{name}.npy", mmap_mode="r")

    def block(self, split: str, key: str) -> slice:
        """Rows of one scale block ('x1' = HR) in a split's arrays."""
        n = self.manifest["splits"][split]["faces"]
        b = self.keys.index(key)
        return slice(b * n, (b + 1) * n)
