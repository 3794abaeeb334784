"""Stage `train_fsr`: the FSR-FER GAN (G: LR features -> HR-like features) on Ray Train.

The GAN step, the worker loop and what they read are components/training/fsr.py; the Ray
and MLflow side is components/training/loop.py (`run_training_stage`). When `tuned` names the
tune stage's result and a search ran, its best sigma, r, k and p replace params.yaml's.
Checkpoints every `checkpoint_every` iterations (G, D, both optimisers, iteration, torch
RNG state); rerunning the same config resumes its last checkpoint. Rank 0 logs every loss
term and the per-scale validation accuracy of C(G(F_lr)) to MLflow. The final G is written
to `out` (config + state_dict, weights-only loadable).
"""

from __future__ import annotations

import json

from components.config import FSRConfig
from components.data.feature_cache import FeatureCache
from components.training.fsr import check_fsr_inputs, fsr_inputs, fsr_train_loop, with_tuned_values, write_generator
from components.training.loop import run_training_stage, training_summary


def train_fsr(cfg: FSRConfig, runner: str = "ray") -> dict:
    """Run the GAN on Ray Train (runner "local": in this process, one worker), write the final G to
    cfg.out; returns the summary."""
    import mlflow

    check_fsr_inputs(cfg)
    cfg, tuned = with_tuned_values(cfg)
    with run_training_stage(fsr_train_loop, "fsr", cfg, fsr_inputs(cfg), ("features", "teacher"),
                            params={"tuned_values": json.dumps(tuned)}, runner=runner) as (state, metrics):
        out = write_generator(cfg, state["g"], state["iteration"], FeatureCache(cfg.features).manifest["bimap_dim"])
        mlflow.log_artifact(str(out), artifact_path="model")
    return training_summary(out, state, metrics)
