"""SPD-matrix layers of SPDNet (Huang & Van Gool, 2017) as CovPoolFER uses them.

covariance_pool: (B, C, H, W) features -> (B, C, C) SPD matrix.
BiMap: W^T X W with an orthonormal W (C_in, C_out), kept orthonormal during training by
  torch's orthogonal parametrization (W is a function of an unconstrained parameter).
ReEig: eigenvalues clamped to [eps, max], LogEig: matrix logarithm.

Both eigen-functions use `EigFunction`, a custom autograd function with the
Daleckii-Krein backward  grad = U (L o (U^T sym(G) U)) U^T,
L_ij = (f(l_i) - f(l_j)) / (l_i - l_j),  L_ii = f'(l_i),
falling back to (f'(l_i) + f'(l_j)) / 2 where |l_i - l_j| is tiny, so the gradient stays
finite for repeated eigenvalues (torch.linalg.eigh's own backward divides by l_i - l_j).
Computed in float64 whatever the input dtype, as docs/methods.md says.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

TIE_TOLERANCE = 1e-9  # relative gap below which two eigenvalues count as equal


def covariance_pool(features: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Sample covariance over spatial positions, (B, C, H, W) -> (B, C, C).

    Centred, divided by N - 1, plus eps * trace * I so it is strictly positive definite
    (CovPoolFER's regulariser).
    """
    b, c, h, w = features.shape
    x = features.reshape(b, c, h * w)
    x = x - x.mean(dim=2, keepdim=True)
    cov = x @ x.transpose(1, 2) / (h * w - 1)  # (B, C, C)
    trace = cov.diagonal(dim1=1, dim2=2).sum(-1)  # (B,)
    eye = torch.eye(c, dtype=cov.dtype, device=cov.device)
    return cov + eps * trace[:, None, None] * eye


def _sym(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x + x.transpose(-1, -2))


class EigFunction(torch.autograd.Function):
    """Y = U diag(f(l)) U^T for symmetric X = U diag(l) U^T, with a stable backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, f: Callable, df: Callable) -> torch.Tensor:  # noqa: D102
        dtype = x.dtype
        x64 = _sym(x.double())
        evals, evecs = torch.linalg.eigh(x64)  # (B, n), (B, n, n)
        ctx.save_for_backward(evals, evecs)
        ctx.f, ctx.df, ctx.dtype = f, df, dtype
        return (evecs @ torch.diag_embed(f(evals)) @ evecs.transpose(-1, -2)).to(dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        evals, evecs = ctx.saved_tensors
        f_l, df_l = ctx.f(evals), ctx.df(evals)
        diff = evals[..., :, None] - evals[..., None, :]  # (B, n, n): l_i - l_j
        scale = torch.maximum(evals.abs()[..., :, None], evals.abs()[..., None, :]).clamp_min(1.0)
        tied = diff.abs() <= TIE_TOLERANCE * scale
        safe = torch.where(tied, torch.ones_like(diff), diff)
        loewner = torch.where(tied, 0.5 * (df_l[..., :, None] + df_l[..., None, :]),
                              (f_l[..., :, None] - f_l[..., None, :]) / safe)
        ut = evecs.transpose(-1, -2)
        inner = ut @ _sym(grad.double()) @ evecs
        grad_x = evecs @ (loewner * inner) @ ut
        return grad_x.to(ctx.dtype), None, None


def rectify_eig(x: torch.Tensor, eps: float = 1e-4, max_value: float = 1e4) -> torch.Tensor:
    """ReEig: eigenvalues clamped to [eps, max_value] (CovPoolFER: 1e-4, 1e4)."""
    f = lambda l: l.clamp(eps, max_value)  # noqa: E731
    df = lambda l: ((l > eps) & (l < max_value)).to(l.dtype)  # noqa: E731
    return EigFunction.apply(x, f, df)


def log_eig(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """LogEig: the matrix logarithm of an SPD matrix (eigenvalues floored at eps)."""
    f = lambda l: torch.log(l.clamp_min(eps))  # noqa: E731
    df = lambda l: 1.0 / l.clamp_min(eps)  # noqa: E731
    return EigFunction.apply(x, f, df)


class BiMap(nn.Module):
    """X -> W^T X W with W (in_dim, out_dim) orthonormal columns: (B, in, in) -> (B, out, out)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if out_dim > in_dim:
            raise ValueError(f"BiMap: out_dim {out_dim} must not exceed in_dim {in_dim}")
        # nn.Linear's weight is (out, in); its rows are kept orthonormal, so W = weight^T.
        self.proj = orthogonal(nn.Linear(in_dim, out_dim, bias=False))

    @property
    def weight(self) -> torch.Tensor:
        return self.proj.weight.transpose(0, 1)  # (in, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype)
        return w.transpose(0, 1) @ x @ w
