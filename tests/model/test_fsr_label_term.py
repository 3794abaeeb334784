"""The label term for G (`train_fsr.w_ce`, not in the paper; docs/methods.md): with it alone G learns
to make the frozen classifier right on the training faces, and without the GAN term D is never stepped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.config import FSRConfig
from components.distributed import WorkerContext, unwrap
from components.io import BadInput
from components.training.fsr import GANTask

TINY_G = dict(channels=4, growth=4, blocks=1, dense_residual=True, d_base_channels=4, batch_size=16, lr=1e-3,
              milestones=(1000,), loss_norm="mean", iterations=40)


def _task(tiny_run, **weights) -> GANTask:
    cfg = FSRConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher), **TINY_G, **weights)
    ctx = WorkerContext(rank=0, world_size=1, device=torch.device("cpu"), report=lambda *a: None,
                        restore=lambda: None, wrap=lambda m: m)
    return GANTask(cfg, ctx)


def _train_ce(task: GANTask) -> float:
    """C's mean cross-entropy on G's output over every LR row of the train split."""
    g = unwrap(task.g_net).eval()
    with torch.no_grad():
        f_lr, _, labels = task.train.batch(task.train.lr_rows, torch.device("cpu"))
        ce = F.cross_entropy(task.classifier(g(f_lr)), labels).item()
    g.train()
    return ce


def test_the_label_term_alone_teaches_g_what_the_classifier_must_say_and_d_stays_untouched(tiny_run):
    torch.manual_seed(0)
    task = _task(tiny_run, w_gan=0.0, w_percep=0.0, w_feat=0.0, w_ce=1.0)
    d_before = {k: v.clone() for k, v in task.d_net.state_dict().items()}
    before = _train_ce(task)
    logs = [task.step(it, np.random.default_rng([0, it])) for it in range(40)]
    after = _train_ce(task)
    assert after < 0.9 * before, (before, after)
    assert all("l_g_ce" in log and not any(k.startswith("l_d_") for k in log) for log in logs)
    for k, v in task.d_net.state_dict().items():
        assert torch.equal(v, d_before[k]), f"D's {k} changed without a GAN term"


def test_the_papers_objective_has_no_label_term_and_steps_d(tiny_run):
    torch.manual_seed(0)
    task = _task(tiny_run, w_gan=0.1, w_percep=10.0, w_feat=0.01)
    log = task.step(0, np.random.default_rng(0))
    assert "l_g_ce" not in log and {"l_d_real", "l_d_fake", "l_d_div"} <= set(log)
    assert FSRConfig().w_ce == 0.0


@pytest.mark.parametrize("weights", [dict(w_gan=0.0, w_percep=0.0, w_feat=0.0), dict(w_ce=-1.0)])
def test_loss_weights_are_checked(weights):
    with pytest.raises(BadInput, match=f"train_fsr loss weights must be >= 0 and not all 0.*'{list(weights)[-1]}'"):
        FSRConfig(**weights)
