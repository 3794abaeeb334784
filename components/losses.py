"""FSR-FER losses, per sample, and the classification-aware re-weighting (docs/methods.md); GME-Net's
attention-similarity distillation loss (A-SKD) at the end.

Sign convention of the paper (eq. 7-8): D minimises
    L_D = E[D(F_hr)] - E[D(F_sr)] + k E[ ||grad_x D(x_hat)||^p ],  x_hat = F_hr + a (F_sr - F_hr)
and G minimises L_G,gan = E[D(F_sr)] (so D scores real features low). Defaults k = 2, p = 6.
G's total: L_G = w_gan L_gan + w_percep L_percep + w_feat L_feat (eq. 10, weights 1, 1, 1
in the paper; the reference code uses 1, 10, 0.01), each term weighted per sample by
w_i = (sigma - p_i)^r, p_i = C's probability of the true class on F_sr. Not in the paper
(off unless `w_ce` > 0): + w_ce CE(C(F_sr), label), weighted by the same w_i.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def interpolate(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_hat = real + a (fake - real), a ~ U(0, 1) per sample; a leaf that requires grad."""
    alpha = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype,
                       generator=generator)
    return (real + alpha * (fake.detach() - real)).detach().requires_grad_(True)


def gradient_norm_penalty(scores_hat: torch.Tensor, x_hat: torch.Tensor, k: float, p: float) -> torch.Tensor:
    """k E[ ||grad_x D(x_hat)||^p ] from D's scores at x_hat; differentiable w.r.t. D's parameters."""
    (grad,) = torch.autograd.grad(scores_hat.sum(), x_hat, create_graph=True)
    return k * grad.flatten(1).norm(dim=1).pow(p).mean()



def discriminator_losses(d_real: torch.Tensor, d_fake: torch.Tensor, penalty: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three terms of L_D, named as logged: l_d_real, l_d_fake, l_d_div (their sum is L_D)."""
    return {"l_d_real": d_real.mean(), "l_d_fake": -d_fake.mean(), "l_d_div": penalty}



LOSS_NORMS = ("mean", "sum")


def _reduce(squared: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample sum ("sum": the squared L2 norm of eq. 9) or mean ("mean": the reference code's) over dims."""
    if norm not in LOSS_NORMS:
        raise ValueError(f"loss norm must be one of {LOSS_NORMS}, got {norm!r}")
    flat = squared.flatten(1)
    return flat.sum(dim=1) if norm == "sum" else flat.mean(dim=1)


def perceptual_loss(embed_sr: torch.Tensor, embed_hr: torch.Tensor, norm: str = "mean") -> torch.Tensor:
    """Per-sample ||C(F_sr) - C(F_hr)||^2 in the classifier's 128-d space (mean or sum over dims), (B,)."""
    return _reduce((embed_sr - embed_hr).pow(2), norm)


def feature_l2_loss(f_sr: torch.Tensor, f_hr: torch.Tensor, norm: str = "mean") -> torch.Tensor:
    """Per-sample ||F_sr - F_hr||^2 over the matrix entries (mean or sum), (B,)."""
    return _reduce((f_sr - f_hr).pow(2), norm)


def classification_weights(logits_sr: torch.Tensor, labels: torch.Tensor, sigma: float, r: float,
                           detach: bool = True) -> torch.Tensor:
    """w_i = (sigma - p_i)^r, p_i = softmax(C(F_sr))[y_i]; sigma > 1 keeps w positive. (B,)"""
    p_true = F.softmax(logits_sr, dim=1).gather(1, labels[:, None]).squeeze(1)
    w = (sigma - p_true).pow(r)
    return w.detach() if detach else w


def attention_similarity_loss(student: list[tuple[torch.Tensor, ...]], teacher: list[tuple[torch.Tensor, ...]]
                              ) -> torch.Tensor:
    """A-SKD (ECCV 2022): sum over attention blocks and over their maps (channel, spatial) of
    mean over the batch of 1 - cos(vec(A_student), vec(A_teacher)); maps taken before the sigmoid.

    student, teacher: one tuple of maps per block, same shapes pairwise; the teacher's are
    detached (the HR teacher is frozen). 0 for identical maps, positive otherwise, <= 2 per map.
    """
    if len(student) != len(teacher):
        raise ValueError(f"attention_similarity_loss: {len(student)} student blocks vs {len(teacher)} teacher blocks")
    total = student[0][0].new_zeros(())
    for maps_s, maps_t in zip(student, teacher):
        for a_s, a_t in zip(maps_s, maps_t, strict=True):
            cos = F.cosine_similarity(a_s.flatten(1), a_t.detach().flatten(1), dim=1, eps=1e-8)
            total = total + (1.0 - cos).mean()
    return total


def class_weights(labels: np.ndarray, num_classes: int, power: float = 1.0) -> np.ndarray:
    """(1 / frequency)^power per class, normalised to mean 1 over the classes present.

    power 0.5 by default: full inverse frequency (power 1) over-corrects on FER+, where
    contempt is 70x rarer than neutral, and costs total accuracy for little per-class gain.
    """
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = np.zeros(num_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels) ** power  # n / (K * count)
    return weights / weights[present].mean()
