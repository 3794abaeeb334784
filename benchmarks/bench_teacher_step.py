"""Benchmark: where one CovPoolFER teacher step spends its time, and what one eigendecomposition
instead of two buys.

One step as the teacher stage takes it (components/stages/teacher.py: AdamW, CE), split into
data (batch to tensor), the CNN's forward, the SPD head's forward (covariance pooling, BiMap,
ReEig, LogEig: components/models/spd.py), the classifier's forward + loss, backward, and the
optimiser; torch.profiler gives the share of the eigendecompositions (eigh forward and the
EigFunction backward) in a whole step. Two designs: the embedded default's teacher (3 channels,
100 px, 32-48-64-64-128-128, BiMap 32, FC 512-128, batch 32) and the FER+ profile's (1 channel,
48 px, the paper's widths, BiMap 32, FC 2000-128, batch 64), on random faces of those shapes.

Two candidates, each run from the same initial weights and batches as the fp32 two-eigh path (the
stage's `precision: fp32`), the loss of every step compared:
- `fused`: ReEig followed by LogEig is U diag(log(clamp(l))) U^T of the same eigenvectors, so
  one eigh can do both;
- `bf16`: the stage's `precision: bf16` (components/runtime.py training_autocast): the CNN and
  the classifier under bf16 autocast, the SPD head in float32/float64 as always. It pays where
  the CPU has native bf16 (AMX / AVX512-BF16: oneDNN's bf16 convolutions); the JSON says
  whether this one has (`cpu_native_bf16`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_teacher_step.py [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.nn import functional as F

from components.models.covpool import CovPoolConfig, CovPoolFER
from components.models.spd import EigFunction, covariance_pool, log_eig, rectify_eig
from components.runtime import cpu_has_native_bf16, images_to_tensor, training_autocast

DESIGNS = {
    "default_profile": (CovPoolConfig(in_channels=3, conv_channels=(32, 48, 64, 64, 128, 128), bimap_dim=32,
                                      fc_dims=(512, 128), num_classes=7), 100, 32),
    "ferplus_profile": (CovPoolConfig(in_channels=1, bimap_dim=32, fc_dims=(2000, 128), num_classes=8), 48, 64),
}


def spd_head(extractor, fmap: torch.Tensor, fused: bool) -> torch.Tensor:
    """Covariance -> BiMap -> ReEig -> LogEig (two eighs), or ReEig and LogEig in one eigh (fused)."""
    cov = extractor.bimap(covariance_pool(fmap.float()))
    if not fused:
        return log_eig(rectify_eig(cov, eps=extractor.reeig_eps))
    eps, top = extractor.reeig_eps, 1e4
    f = lambda l: torch.log(l.clamp(eps, top))  # noqa: E731
    df = lambda l: ((l > eps) & (l < top)).to(l.dtype) / l.clamp(eps, top)  # noqa: E731
    return EigFunction.apply(cov, f, df)


def run(cfg: CovPoolConfig, size: int, batch: int, steps: int, fused: bool, seed: int = 0,
        precision: str = "fp32") -> dict:
    torch.manual_seed(seed)
    model = CovPoolFER(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    phases = dict.fromkeys(("data", "cnn_forward", "spd_forward", "classifier_forward", "backward", "optimiser"), 0.0)
    losses = []
    for step in range(steps + 2):  # the first two warm up
        t = [time.perf_counter()]
        faces = rng.integers(0, 256, (batch, size, size, cfg.in_channels), dtype=np.uint8)
        labels = torch.from_numpy(rng.integers(0, cfg.num_classes, batch))
        x = images_to_tensor(faces)
        t.append(time.perf_counter())
        with training_autocast(precision, x.device):
            fmap = model.extractor.cnn(x * 2.0 - 1.0)
        t.append(time.perf_counter())
        features = spd_head(model.extractor, fmap, fused)
        t.append(time.perf_counter())
        with training_autocast(precision, x.device):
            logits = model.classifier(features)
        loss = F.cross_entropy(logits.float(), labels)
        t.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        optimizer.step()
        t.append(time.perf_counter())
        losses.append(loss.item())
        if step >= 2:
            for key, a, b in zip(phases, t[:-1], t[1:], strict=True):
                phases[key] += b - a
    total = sum(phases.values())
    return {"seconds_per_step": round(total / steps, 4), "share": {k: round(v / total, 3) for k, v in phases.items()},
            "losses": losses}


def eig_share(cfg: CovPoolConfig, size: int, batch: int, fused: bool) -> float:
    """Share of one forward + backward's CPU time (profiler) in eigh and the EigFunction backward."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = CovPoolFER(cfg).train()
    x = torch.rand(batch, cfg.in_channels, size, size)
    labels = torch.zeros(batch, dtype=torch.long)
    F.cross_entropy(model.classifier(spd_head(model.extractor, model.extractor.cnn(x), fused)), labels).backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss = F.cross_entropy(model.classifier(spd_head(model.extractor, model.extractor.cnn(x * 2 - 1), fused)), labels)
        loss.backward()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    # inclusive times: eigh itself, and the EigFunction backward with the matmuls it runs
    eig = sum(e.cpu_time_total for e in events if e.key == "aten::linalg_eigh" or e.key.startswith("EigFunctionBackward"))
    return round(eig / total, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    out = {"torch_threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16()}

    def drift(a: list[float], b: list[float]) -> float:
        return float(f"{max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)):.3g}")

    for name, (cfg, size, batch) in DESIGNS.items():
        base = run(cfg, size, batch, args.steps, fused=False)
        fast = run(cfg, size, batch, args.steps, fused=True)
        bf16 = run(cfg, size, batch, args.steps, fused=False, precision="bf16")
        base_losses = base.pop("losses")
        out[name] = {"batch": batch, "two_eighs": base | {"eig_share": eig_share(cfg, size, batch, False)},
                     "fused": fast | {"eig_share": eig_share(cfg, size, batch, True)},
                     "speedup": round(base["seconds_per_step"] / fast["seconds_per_step"], 3),
                     "max_relative_loss_difference": drift(base_losses, fast.pop("losses")),
                     "bf16": bf16 | {"max_relative_loss_difference": drift(base_losses, bf16.pop("losses"))},
                     "speedup_bf16": round(base["seconds_per_step"] / bf16["seconds_per_step"], 3)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
