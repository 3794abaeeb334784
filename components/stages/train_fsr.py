"""Stage `train_fsr`: the FSR-FER GAN (G: LR features -> HR-like features), on Ray Train.

Training pairs: every LR row of the train split (all scales, one model for all) with the
HR row of the same face (feature cache, components/stages/features.py). Each worker
draws its batches from its own shard of the LR rows (rows i with i % world == rank).
One iteration = one D step then one G step (reference code):

  D step: L_D = D(F_hr) - D(F_sr) + k ||grad D(x_hat)||^p      (components/losses.py)
  G step: L_G = w_gan L_gan + w_percep L_percep + w_feat L_feat, each per sample times
          w_i = (sigma - p_i)^r, p_i = frozen C's probability of the true class on F_sr.

Adam with beta1 = 0; the learning rate halves at the configured milestones; optional
pre-training of G with the feature L2 loss only (reference code: 40k iterations).
Batches and interpolation coefficients come from RNGs seeded by (seed, rank, iteration),
so a run resumed from a checkpoint takes exactly the steps an uninterrupted one takes.

When `tuned` names the tune stage's result and a search ran, its best sigma, r, k and p
replace params.yaml's (components/stages/tune.py).

Checkpoints every `checkpoint_every` iterations (G, D, both optimisers, iteration, torch
RNG state). Rank 0 logs every loss term and the per-scale validation accuracy of
C(G(F_lr)) to MLflow. The final G is written to `out` (config + state_dict,
weights-only loadable).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from components.data.records import BadInput
from components.distributed import final_state, log_step_metrics, run_ray_training, unwrap
from components.data.store import atomic_file
from components.losses import (classification_weights, discriminator_losses, feature_l2_loss, generator_gan_loss,
                               gradient_norm_penalty, interpolate, perceptual_loss)
from components.models.covpool import load_covpool, triu_to_matrix
from components.models.discriminator import DiscriminatorConfig, FeatureDiscriminator
from components.models.rrdb import FeatureGenerator, GeneratorConfig
from components.models.saved import save_reproducibly


FSR_LOSS_TERMS = ("l_g_gan", "l_g_percep", "l_g_feat", "l_d_real", "l_d_fake", "l_d_div")


@dataclass(frozen=True)
class FSRConfig:
    features: str = "data/features"
    teacher: str = "models/teacher.pt"
    out: str = "models/fsr.pt"
    # G (reference code: 32 channels, growth 16, 6 RRDBs) and D (8 base channels, FC 100)
    channels: int = 32
    growth: int = 16
    blocks: int = 6
    batch_norm: bool = False
    dense_residual: bool = False  # not in the paper: a dense residual over the matrix (components/models/rrdb.py)
    d_base_channels: int = 8
    # losses (paper eq. 10 weights 1/1/1; reference code 1/10/0.01)
    w_gan: float = 1.0
    w_percep: float = 1.0
    w_feat: float = 1.0
    k: float = 2.0
    p: float = 6.0
    sigma: float = 1.5
    r: float = 1.0
    detach_weights: bool = True  # reference code lets gradients flow through w (False)
    # optimisation (paper: lr 2e-4 halved at 20k, 50k, 100k, 200k)
    lr: float = 2e-4
    milestones: tuple[int, ...] = (20000, 50000, 100000, 200000)
    iterations: int = 300000
    pretrain_iterations: int = 0  # G with the feature L2 loss only, before the GAN
    batch_size: int = 32
    seed: int = 0
    # Ray Train
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    checkpoint_every: int = 1000
    eval_every: int = 1000
    storage: str = "data/ray_results"
    run_name: str = "train_fsr"
    experiment: str = "fsrfer-train"
    tuned: str = ""  # the tune stage's result: its best sigma, r, k, p replace the values above

    def __post_init__(self) -> None:
        if self.sigma <= 1:
            raise BadInput(f"fsr.sigma: must be > 1 so that w = (sigma - p)^r stays positive, got {self.sigma}")
        if self.k <= 0 or self.p <= 0:
            raise BadInput(f"fsr.k and fsr.p must be positive, got k={self.k}, p={self.p}")
        if self.iterations < 1 or self.batch_size < 2 or self.num_workers < 1:
            raise BadInput("fsr.iterations, fsr.batch_size (>= 2) and fsr.num_workers must be positive")
        if self.checkpoint_every < 1 or self.eval_every < 1:
            raise BadInput("fsr.checkpoint_every and fsr.eval_every must be >= 1")


def generator_config(cfg: FSRConfig, feature_size: int) -> GeneratorConfig:
    return GeneratorConfig(cfg.channels, cfg.growth, cfg.blocks, cfg.batch_norm,
                           dense_dim=feature_size if cfg.dense_residual else 0)


def build_networks(cfg: FSRConfig, feature_size: int) -> tuple[FeatureGenerator, FeatureDiscriminator]:
    g = FeatureGenerator(generator_config(cfg, feature_size))
    d = FeatureDiscriminator(feature_size, DiscriminatorConfig(base_channels=cfg.d_base_channels))
    return g, d


def learning_rate(cfg: FSRConfig, iteration: int) -> float:
    """lr halved at each milestone passed (counted in GAN iterations after pre-training)."""
    return cfg.lr * 0.5 ** sum(iteration >= m for m in cfg.milestones)


class PairedFeatures:
    """LR rows of one split paired with their HR rows, read from the memory-mapped cache."""

    def __init__(self, features_dir: str, split: str, d: int):
        from components.stages.features import FeatureCache

        cache = FeatureCache(features_dir)
        self.d = d
        self.features = cache.array(split, "features")
        self.labels = np.asarray(cache.array(split, "labels"))
        self.scale = np.asarray(cache.array(split, "scale"))
        hr_block = cache.block(split, "x1")
        self.lr_rows = np.flatnonzero(self.scale > 1.0)
        self.hr_row_of = hr_block.start + np.asarray(cache.array(split, "index"))  # row -> its HR row
        self.cache = cache
        self.split = split

    def batch(self, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F_lr, F_hr) as (B, d, d) float32 matrices, and labels (B,), for LR rows `rows`."""
        rows = np.sort(rows)  # sorted reads from the memmap
        f_lr = torch.from_numpy(np.asarray(self.features[rows], dtype=np.float32))
        f_hr = torch.from_numpy(np.asarray(self.features[self.hr_row_of[rows]], dtype=np.float32))
        labels = torch.from_numpy(self.labels[rows])
        return triu_to_matrix(f_lr, self.d).to(device), triu_to_matrix(f_hr, self.d).to(device), labels.to(device)


def feature_statistics(features: np.ndarray, rows: np.ndarray, max_rows: int = 20000,
                       chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry mean and std of `features[rows]` (every k-th row past max_rows), read in chunks, in float64."""
    rows = rows[:: max(1, len(rows) // max_rows)]
    total = np.zeros(features.shape[1])
    squares = np.zeros(features.shape[1])
    for start in range(0, len(rows), chunk):
        x = np.asarray(features[rows[start : start + chunk]], dtype=np.float64)
        total += x.sum(0)
        squares += (x * x).sum(0)
    mean = total / len(rows)
    std = np.sqrt(np.maximum(squares / len(rows) - mean**2, 0.0))
    return torch.from_numpy(mean), torch.from_numpy(std)


@torch.no_grad()
def fsr_accuracy_per_scale(g: torch.nn.Module, classifier: torch.nn.Module, data: PairedFeatures,
                           device: torch.device, batch_size: int = 256) -> dict[str, float]:
    """Accuracy of C(G(F_lr)) per LR scale block of a split: {'x2': acc, ...}."""
    g.eval()
    out = {}
    for key in data.cache.keys[1:]:
        block = data.cache.block(data.split, key)
        correct = 0
        for start in range(block.start, block.stop, batch_size):
            rows = np.arange(start, min(start + batch_size, block.stop))
            f_lr, _, labels = data.batch(rows, device)
            correct += (classifier(g(f_lr)).argmax(1) == labels).sum().item()
        out[key] = correct / (block.stop - block.start)
    g.train()
    return out


def fsr_train_loop(config: dict, ctx) -> None:
    """The worker loop (runs under Ray Train or locally; see components/distributed.py)."""
    import mlflow

    cfg = FSRConfig(**config["fsr"])
    torch.manual_seed(cfg.seed + ctx.rank)
    teacher = load_covpool(cfg.teacher).to(ctx.device)
    classifier = teacher.classifier  # frozen C (eval mode, no grads)
    d = teacher.cfg.bimap_dim
    train = PairedFeatures(cfg.features, "train", d)
    valid = PairedFeatures(cfg.features, config.get("valid_split", "valid"), d) if ctx.is_main else None
    shard = train.lr_rows[ctx.rank :: ctx.world_size]

    g_net, d_net = build_networks(cfg, d)
    g_net.set_input_statistics(*feature_statistics(train.features, train.lr_rows))
    g_net, d_net = ctx.wrap(g_net), ctx.wrap(d_net)
    opt_g = torch.optim.Adam(g_net.parameters(), lr=cfg.lr, betas=(0.0, 0.99))  # beta1 = 0, as the paper
    opt_d = torch.optim.Adam(d_net.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
    start = 0
    state = ctx.restore_state()
    if state is not None:
        unwrap(g_net).load_state_dict(state["g"])
        unwrap(d_net).load_state_dict(state["d"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["torch_rng"])
        start = state["iteration"]
    client = mlflow.MlflowClient(config["tracking_uri"]) if ctx.is_main and config.get("run_id") else None
    total = cfg.pretrain_iterations + cfg.iterations
    clock = time.perf_counter()

    for it in range(start, total):
        rng = np.random.default_rng([cfg.seed, ctx.rank, it])
        gen = torch.Generator(device=ctx.device).manual_seed(int(rng.integers(2**62)))
        f_lr, f_hr, labels = train.batch(rng.choice(shard, cfg.batch_size, replace=len(shard) < cfg.batch_size),
                                         ctx.device)
        pretraining = it < cfg.pretrain_iterations
        lr = cfg.lr if pretraining else learning_rate(cfg, it - cfg.pretrain_iterations)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        logs: dict[str, float] = {}

        if not pretraining:
            # D step. G runs unwrapped under no_grad: a DDP forward without a backward would
            # leave DDP's reducer waiting. Real, fake and interpolate scores come from one
            # D forward on the concatenation, so DDP sees one forward and one backward.
            d_net.requires_grad_(True)
            with torch.no_grad():
                f_sr = unwrap(g_net)(f_lr)
            x_hat = interpolate(f_hr, f_sr, gen)
            d_real, d_fake, d_hat = d_net(torch.cat([f_hr, f_sr, x_hat])).split(f_hr.shape[0])
            d_terms = discriminator_losses(d_real, d_fake, gradient_norm_penalty(d_hat, x_hat, cfg.k, cfg.p))
            opt_d.zero_grad(set_to_none=True)
            sum(d_terms.values()).backward()
            opt_d.step()
            logs.update({k: v.item() for k, v in d_terms.items()})

        # G step. D's parameters are frozen; D runs unwrapped (its DDP wrapper would expect a
        # backward into D's parameters that never comes).
        d_net.requires_grad_(False)
        f_sr = g_net(f_lr)
        feat = feature_l2_loss(f_sr, f_hr)
        if pretraining:
            loss_g = feat.mean()
            logs["l_g_pretrain"] = loss_g.item()
        else:
            logits = classifier(f_sr)
            w = classification_weights(logits, labels, cfg.sigma, cfg.r, cfg.detach_weights)
            with torch.no_grad():
                embed_hr = classifier.embed(f_hr)
            terms = {"l_g_gan": (w * generator_gan_loss(unwrap(d_net)(f_sr))).mean(),
                     "l_g_percep": (w * perceptual_loss(classifier.embed(f_sr), embed_hr)).mean(),
                     "l_g_feat": (w * feat).mean()}
            loss_g = cfg.w_gan * terms["l_g_gan"] + cfg.w_percep * terms["l_g_percep"] + cfg.w_feat * terms["l_g_feat"]
            logs.update({k: v.item() for k, v in terms.items()})
            logs["w_mean"] = w.mean().item()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        done = it + 1
        metrics = {"iteration": done, "resumed_from": start, "train_seconds": time.perf_counter() - clock, **logs}
        if ctx.is_main and (done % cfg.eval_every == 0 or done == total):
            accs = fsr_accuracy_per_scale(unwrap(g_net), classifier, valid, ctx.device)
            metrics.update({f"valid_acc_{k}": v for k, v in accs.items()})
            metrics["valid_acc_mean"] = float(np.mean(list(accs.values())))
        if client is not None:
            log_step_metrics(client, config["run_id"], metrics, done)
        if done % cfg.checkpoint_every == 0 or done == total:
            ctx.checkpoint(metrics, lambda: {
                "g": unwrap(g_net).state_dict(), "d": unwrap(d_net).state_dict(), "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(), "iteration": done, "torch_rng": torch.get_rng_state()})


def train_fsr(cfg: FSRConfig) -> dict:
    """Run the GAN on Ray Train, write the final G to cfg.out; returns the summary."""
    import mlflow

    from components.tracking import mlflow_run, tracking_uri

    cfg, tuned = with_tuned_values(cfg)

    # The Ray run is named by a hash of the config: rerunning the same config resumes its
    # last checkpoint (Ray Train V2 restores by storage path + name); a changed one starts afresh.
    ray_name = f"{cfg.run_name}-{config_hash(cfg)}"
    with mlflow_run(cfg.experiment, cfg.run_name, params=asdict(cfg) | {"ray_run": ray_name, "tuned_values": json.dumps(tuned)}) as run:
        # Ray Train workers run in their own working directory: hand them absolute paths.
        paths = {"features": str(Path(cfg.features).resolve()), "teacher": str(Path(cfg.teacher).resolve())}
        config = {"fsr": asdict(cfg) | paths, "tracking_uri": tracking_uri(), "run_id": run.info.run_id}
        result = run_ray_training(fsr_train_loop, config, num_workers=cfg.num_workers, name=ray_name,
                                  storage_path=cfg.storage, max_failures=cfg.max_failures,
                                  cpus_per_worker=cfg.cpus_per_worker)
        state = final_state(result, "train_fsr")
        from components.stages.features import FeatureCache

        out = write_generator(cfg, state["g"], state["iteration"], FeatureCache(cfg.features).manifest["bimap_dim"])
        mlflow.log_artifact(str(out), artifact_path="model")
        metrics = dict(result.metrics)
        mlflow.set_tag("worker_nodes", metrics.get("worker_nodes", ""))
    return {"out": str(out), "iterations": state["iteration"], "resumed_from": metrics.get("resumed_from", 0),
            "train_seconds": metrics.get("train_seconds"), "worker_nodes": metrics.get("worker_nodes", ""),
            **{k: v for k, v in metrics.items() if k.startswith("valid_acc")}}


def with_tuned_values(cfg: FSRConfig) -> tuple[FSRConfig, dict[str, float]]:
    """cfg with the tune stage's best sigma, r, k, p when `cfg.tuned` holds a search result; and those values."""
    from components.stages.tune import tuned_values

    tuned = tuned_values(cfg.tuned)
    return replace(cfg, **tuned), tuned


def config_hash(cfg: FSRConfig) -> str:
    """Short stable hash of everything that shapes the training run (plus the input files' identity)."""
    blob = json.dumps(asdict(cfg), sort_keys=True) + _file_identity(cfg.teacher) + _file_identity(
        str(Path(cfg.features) / "manifest.json"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _file_identity(path: str) -> str:
    from components.stages.features import file_sha256

    return file_sha256(path) if Path(path).is_file() else f"{path}:missing"


def write_generator(cfg: FSRConfig, g_state: dict, iteration: int, feature_size: int) -> Path:
    """Save G's config + weights atomically (loadable with weights_only=True); feature_size = d."""
    out = Path(cfg.out)
    with atomic_file(out) as tmp:
        save_reproducibly({"config": asdict(generator_config(cfg, feature_size)),
                           "state_dict": g_state, "iteration": iteration, "train_config": asdict(cfg)}, tmp)
    return out


def load_generator(path: str | Path, map_location: str | torch.device = "cpu") -> FeatureGenerator:
    """The trained G, frozen (eval mode, no grads)."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    g = FeatureGenerator(GeneratorConfig(**blob["config"]))
    g.load_state_dict(blob["state_dict"])
    g.eval().requires_grad_(False)
    return g
