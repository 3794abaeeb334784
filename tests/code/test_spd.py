"""SPD layers: gradchecks (float64) including repeated eigenvalues; symmetric, finite outputs."""

from __future__ import annotations

import pytest
import torch

from components.models.spd import BiMap, covariance_pool, log_eig, rectify_eig


def random_spd(batch: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    return a @ a.transpose(1, 2) / n + 0.1 * torch.eye(n, dtype=torch.float64)


def spd_with_eigenvalues(values: list[float], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=torch.float64))
    return (q @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ q.T)[None]


@pytest.mark.parametrize("fn", [log_eig, lambda x: rectify_eig(x, eps=0.3)], ids=["log_eig", "rectify_eig"])
def test_gradcheck_random_spd(fn):
    x = random_spd(2, 6, seed=0).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("values", [[1.0, 1.0, 1.0, 2.0, 3.0], [0.5, 0.5, 2.0, 2.0, 2.0], [1.0] * 5])
def test_gradcheck_repeated_eigenvalues(values):
    x = spd_with_eigenvalues(values, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(log_eig, (x,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda t: rectify_eig(t, eps=0.7), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_repeated_eigenvalue_gradient_is_the_analytic_one(seed):
    """d ||log X||_F^2 / dX = 2 log(X) X^-1 (they commute), also where eigenvalues repeat. torch's own
    eigh backward divides by l_i - l_j there: whether that comes out inf, nan or merely large depends on
    how the computed eigenvalues round (LAPACK, thread count), so it is not the reference."""
    x = spd_with_eigenvalues([1.0, 1.0, 2.0], seed=seed).requires_grad_()
    grad = torch.autograd.grad(log_eig(x).pow(2).sum(), x)[0]
    assert torch.isfinite(grad).all()
    evals, evecs = torch.linalg.eigh(x.detach())
    analytic = 2 * evecs @ torch.diag_embed(evals.log() / evals) @ evecs.transpose(1, 2)
    torch.testing.assert_close(grad, analytic, rtol=1e-6, atol=1e-8)


def test_outputs_symmetric_and_match_definitions():
    x = random_spd(3, 5, seed=3)
    out = log_eig(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, out.transpose(1, 2))
    torch.testing.assert_close(torch.linalg.matrix_exp(out), x, rtol=1e-8, atol=1e-8)
    clamped = rectify_eig(x, eps=0.5)
    assert torch.linalg.eigvalsh(clamped).min() >= 0.5 - 1e-9


def test_covariance_pool_matches_definition():
    feats = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    cov = covariance_pool(feats, eps=1e-4)
    x = feats.reshape(2, 4, 15)
    ref = torch.stack([torch.cov(x[i]) for i in range(2)])
    ref = ref + 1e-4 * ref.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None] * torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(cov, ref)
    assert torch.linalg.eigvalsh(cov).min() > 0


def test_bimap_stays_orthonormal_through_training():
    bimap = BiMap(8, 3)
    opt = torch.optim.Adam(bimap.parameters(), lr=0.1)
    for seed in range(5):
        loss = bimap(random_spd(4, 8, seed).float()).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = bimap.weight
    torch.testing.assert_close(w.T @ w, torch.eye(3), atol=1e-5, rtol=0)
    assert bimap(random_spd(2, 8, 9).float()).shape == (2, 3, 3)
