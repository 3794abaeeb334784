"""Model files: config + state_dict (+ extra facts), loadable with torch.load(weights_only=True).

Every network here is `Net(cfg)` with a frozen dataclass config, so one format serves all:
{"config": asdict(cfg), "state_dict": ..., "extra": {...}}. No pickled code.
"""

from __future__ import annotations

from dataclasses import asdict

import torch


def save_model(model: torch.nn.Module, path, extra: dict | None = None) -> None:
    """Save model.cfg, the weights and `extra` to `path` (callers write to a temp file and rename)."""
    save_reproducibly({"config": asdict(model.cfg), "state_dict": model.state_dict(), "extra": extra or {}}, path)


def save_reproducibly(obj: dict, path) -> None:
    """torch.save through a file handle: the same object gives the same bytes whatever `path` is.

    Given a path, torch names the zip archive's inner folder after the file, and the atomic
    writes here save to a random temp name, so every run's model file hashed differently in
    dvc.lock; through a handle the folder is always `archive`.
    """
    with open(path, "wb") as fh:
        torch.save(obj, fh)


def load_model(net_cls: type, config_cls: type, path, map_location: str | torch.device = "cpu",
               frozen: bool = True) -> torch.nn.Module:
    """Rebuild `net_cls(config_cls(**config))` from a saved file; frozen=True: eval mode, no grads."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    cfg = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in blob["config"].items()})
    model = net_cls(cfg)
    model.load_state_dict(blob["state_dict"])
    if frozen:
        model.eval().requires_grad_(False)
    return model
