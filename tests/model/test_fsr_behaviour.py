"""FSR-FER behaviour on the tiny synthetic run: G trained with the method's losses lifts the
LR features toward the HR ones, so C(G(F_lr)) beats the bicubic baseline.

At the tiny run's x8 (64 / 8 = 8-pixel faces) neither the teacher nor G is above chance,
so the check is made at x4, on valid + test pooled (196 faces), with a margin that held
for seeds 0, 1 and 2 of G (measured: bicubic 0.158, FSR-FER 0.240, 0.224, 0.245; threshold
0.208). At the default's 100 px, test-sized runs give FSR-FER a steady x4 gain but an x8
gain of 1-10 points that moves with the seed (benchmarks/README.md, "x8 at the synthetic
default's face size"), so x8 is not asserted here; the main job's table reports it.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from components.distributed import run_local_training
from components.models.covpool import load_covpool
from components.models.rrdb import FeatureGenerator
from components.stages.features import FeatureCache
from components.stages.train_fsr import FSRConfig, PairedFeatures, fsr_accuracy_per_scale, fsr_train_loop, generator_config

MARGIN = 0.05


def test_fsr_beats_bicubic_at_x4(tiny_run):
    its = 800
    cfg = FSRConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher), channels=8, growth=8, blocks=1,
                    dense_residual=True, w_gan=0.1, w_percep=10.0, w_feat=0.01, lr=1e-3, iterations=its,
                    milestones=(530,), batch_size=16, seed=0, checkpoint_every=its, eval_every=its)
    result = run_local_training(fsr_train_loop, {"fsr": asdict(cfg)}, device=torch.device("cpu"))
    teacher = load_covpool(tiny_run.teacher)
    g = FeatureGenerator(generator_config(cfg, teacher.cfg.bimap_dim))
    g.load_state_dict(torch.load(result.checkpoint_dir / "state.pt", weights_only=True)["g"])

    cache = FeatureCache(tiny_run.features)
    fsr_correct = bicubic_correct = total = 0
    for split in ("valid", "test"):
        block = cache.block(split, "x4")
        labels = np.asarray(cache.array(split, "labels")[block])
        bicubic_correct += int((np.asarray(cache.array(split, "probs")[block]).argmax(1) == labels).sum())
        acc = fsr_accuracy_per_scale(g, teacher.classifier, PairedFeatures(cfg.features, split, teacher.cfg.bimap_dim),
                                     torch.device("cpu"))["x4"]
        fsr_correct += round(acc * len(labels))
        total += len(labels)
    assert fsr_correct / total > bicubic_correct / total + MARGIN, (fsr_correct / total, bicubic_correct / total)
