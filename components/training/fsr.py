"""FSR-FER's GAN step and its worker loop (G: LR features -> HR-like features), for the
`train_fsr` and `tune` stages.

Training pairs: every LR row of the train split (all scales, one model for all) with the
HR row of the same face (the feature cache, components/data/feature_cache.py). Each worker
draws its batches from its own shard of the LR rows (rows i with i % world == rank).
One iteration = one D step then one G step (reference code):

  D step: L_D = D(F_hr) - D(F_sr) + k ||grad D(x_hat)||^p      (components/losses.py)
  G step: L_G = w_gan L_gan + w_percep L_percep + w_feat L_feat, each per sample times
          w_i = (sigma - p_i)^r, p_i = frozen C's probability of the true class on F_sr;
          not in the paper, with w_ce > 0: + w_ce w_i CE(C(F_sr), label).
With w_gan = 0 there is no D step (D's score would not reach G).

Adam with beta1 = 0; the learning rate halves at the configured milestones; optional
pre-training of G with the feature L2 loss only (reference code: 40k iterations). The loop
around the step (restore, schedule, evaluate, log, checkpoint) is components/training/loop.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.config import SEARCHED, FSRConfig
from components.data.feature_cache import FeatureCache
from components.distributed import WorkerContext, unwrap
from components.io import BadInput, atomic_file
from components.losses import (
    classification_weights,
    discriminator_losses,
    feature_l2_loss,
    gradient_norm_penalty,
    interpolate,
    perceptual_loss,
)
from components.models.covpool import load_covpool, triu_to_matrix
from components.models.discriminator import DiscriminatorConfig, FeatureDiscriminator
from components.models.rrdb import FeatureGenerator, GeneratorConfig
from components.models.saved import save_reproducibly
from components.training.loop import run_task


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


class GANTask:
    """The FSR-FER training task of one worker: G and D, their optimisers, the D-then-G step."""

    def __init__(self, cfg: FSRConfig, ctx: WorkerContext):
        self.cfg, self.ctx = cfg, ctx
        teacher = load_covpool(cfg.teacher).to(ctx.device)
        self.classifier = teacher.classifier  # frozen C (eval mode, no grads)
        d = teacher.cfg.bimap_dim
        self.train = PairedFeatures(cfg.features, "train", d)
        self.valid = PairedFeatures(cfg.features, "valid", d) if ctx.is_main else None
        self.shard = self.train.lr_rows[ctx.rank :: ctx.world_size]
        g_net, d_net = build_networks(cfg, d)
        g_net.set_input_statistics(*feature_statistics(self.train.features, self.train.lr_rows))
        self.g_net, self.d_net = ctx.wrap(g_net), ctx.wrap(d_net)
        self.opt_g = torch.optim.Adam(self.g_net.parameters(), lr=cfg.lr, betas=(0.0, 0.99))  # beta1 = 0, as the paper
        self.opt_d = torch.optim.Adam(self.d_net.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
        self.optimizers = [self.opt_g, self.opt_d]
        self.iterations = cfg.pretrain_iterations + cfg.iterations
        self.eval_every, self.checkpoint_every = cfg.eval_every, cfg.checkpoint_every

    def state_dict(self) -> dict:
        return {"g": unwrap(self.g_net).state_dict(), "d": unwrap(self.d_net).state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.g_net).load_state_dict(state["g"])
        unwrap(self.d_net).load_state_dict(state["d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def learning_rate(self, it: int) -> float:
        cfg = self.cfg
        return cfg.lr if it < cfg.pretrain_iterations else learning_rate(cfg, it - cfg.pretrain_iterations)

    def step(self, it: int, rng: np.random.Generator) -> dict[str, float]:
        cfg, g_net, d_net, classifier = self.cfg, self.g_net, self.d_net, self.classifier
        gen = torch.Generator(device=self.ctx.device).manual_seed(int(rng.integers(2**62)))
        f_lr, f_hr, labels = self.train.batch(
            rng.choice(self.shard, cfg.batch_size, replace=len(self.shard) < cfg.batch_size), self.ctx.device)
        pretraining = it < cfg.pretrain_iterations
        logs: dict[str, float] = {}

        if not pretraining and cfg.w_gan > 0:  # without the GAN term D never reaches G: no D step
            # D step. G runs unwrapped under no_grad: a DDP forward without a backward would
            # leave DDP's reducer waiting. Real, fake and interpolate scores come from one
            # D forward on the concatenation, so DDP sees one forward and one backward.
            d_net.requires_grad_(True)
            with torch.no_grad():
                f_sr = unwrap(g_net)(f_lr)
            x_hat = interpolate(f_hr, f_sr, gen)
            d_real, d_fake, d_hat = d_net(torch.cat([f_hr, f_sr, x_hat])).split(f_hr.shape[0])
            d_terms = discriminator_losses(d_real, d_fake, gradient_norm_penalty(d_hat, x_hat, cfg.k, cfg.p))
            self.opt_d.zero_grad(set_to_none=True)
            sum(d_terms.values()).backward()
            self.opt_d.step()
            logs.update({k: v.item() for k, v in d_terms.items()})

        # G step. D's parameters are frozen; D runs unwrapped (its DDP wrapper would expect a
        # backward into D's parameters that never comes).
        d_net.requires_grad_(False)
        f_sr = g_net(f_lr)
        feat = feature_l2_loss(f_sr, f_hr, cfg.loss_norm)
        if pretraining:
            loss_g = feat.mean()
            logs["l_g_pretrain"] = loss_g.item()
        else:
            logits = classifier(f_sr)
            w = classification_weights(logits, labels, cfg.sigma, cfg.r, cfg.detach_weights)
            weights = {"l_g_gan": cfg.w_gan, "l_g_percep": cfg.w_percep, "l_g_feat": cfg.w_feat, "l_g_ce": cfg.w_ce}
            per_sample = {  # a term whose weight is 0 is neither computed nor logged (nor backpropagated)
                "l_g_gan": lambda: unwrap(d_net)(f_sr),  # L_G,gan = E[D(F_sr)] (paper eq. 7-8 sign convention)
                "l_g_percep": lambda: perceptual_loss(classifier.embed(f_sr), classifier.embed(f_hr).detach(),
                                                      cfg.loss_norm),
                "l_g_feat": lambda: feat,
                "l_g_ce": lambda: F.cross_entropy(logits, labels, reduction="none"),  # not in the paper
            }
            terms = {name: (w * term()).mean() for name, term in per_sample.items() if weights[name] > 0}
            loss_g = sum(weights[name] * value for name, value in terms.items())
            logs.update({k: v.item() for k, v in terms.items()})
            logs["w_mean"] = w.mean().item()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return logs

    def evaluate(self) -> dict[str, float]:
        accs = fsr_accuracy_per_scale(unwrap(self.g_net), self.classifier, self.valid, self.ctx.device)
        return {f"valid_acc_{k}": v for k, v in accs.items()} | {"valid_acc_mean": float(np.mean(list(accs.values())))}


def fsr_train_loop(config: dict, ctx: WorkerContext) -> None:
    """The worker loop (runs under Ray Train or locally; see components/distributed.py)."""
    cfg = FSRConfig(**config["fsr"])
    torch.manual_seed(cfg.seed + ctx.rank)
    run_task(GANTask(cfg, ctx), ctx, cfg.seed, config)


def tuned_values(path: str) -> dict[str, float]:
    """The best sigma, r, k, p recorded by the tune stage ({} when the search was disabled or the file is absent)."""
    if not path or not Path(path).is_file():
        return {}
    try:
        best = json.loads(Path(path).read_text()).get("best", {})
    except json.JSONDecodeError as err:
        raise BadInput(f"{path}: not a tune result ({err})") from err
    unknown = set(best) - set(SEARCHED)
    if unknown:
        raise BadInput(f"{path}: unexpected keys {sorted(unknown)} in 'best'")
    return {k: float(v) for k, v in best.items()}


def with_tuned_values(cfg: FSRConfig) -> tuple[FSRConfig, dict[str, float]]:
    """cfg with the tune stage's best sigma, r, k, p when `cfg.tuned` holds a search result; and those values."""
    tuned = tuned_values(cfg.tuned)
    return replace(cfg, **tuned), tuned


def check_fsr_inputs(cfg: FSRConfig) -> None:
    """Selection and tuning read the validation split only, and G learns the features of the frozen model
    whose classifier scores it: refuse a feature cache without a valid split, or made with another model."""
    cache = FeatureCache(cfg.features)
    if "valid" not in cache.splits:
        raise BadInput(f"{cfg.features}: no valid split to evaluate G on (splits: {sorted(cache.splits)}); "
                       "set prepare.valid_fraction > 0 to carve one from train")
    cache.require_extractor(cfg.teacher, "train_fsr.teacher")


def fsr_inputs(cfg: FSRConfig) -> list[str]:
    """The files whose content (with the config) names a GAN run: the teacher and the feature cache."""
    return [cfg.teacher, str(Path(cfg.features) / "manifest.json")]


def write_generator(cfg: FSRConfig, g_state: dict, iteration: int, feature_size: int) -> Path:
    """Save G's config + weights atomically (loadable with weights_only=True); feature_size = d."""
    out = Path(cfg.out)
    with atomic_file(out) as tmp:
        save_reproducibly({"config": asdict(generator_config(cfg, feature_size)),
                           "state_dict": g_state, "iteration": iteration, "train_config": asdict(cfg)}, tmp)
    return out
