"""FSR-FER networks and losses: shapes, gradient flow, loss formulas against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.config import FSRConfig
from components.io import BadInput
from components.losses import (
    classification_weights,
    discriminator_losses,
    feature_l2_loss,
    gradient_norm_penalty,
    interpolate,
    perceptual_loss,
)
from components.models.discriminator import DiscriminatorConfig, FeatureDiscriminator
from components.models.rrdb import FeatureGenerator, GeneratorConfig

TINY_G = GeneratorConfig(channels=4, growth=4, blocks=1)


def sym(batch: int, d: int, seed: int = 0) -> torch.Tensor:
    a = torch.randn(batch, d, d, generator=torch.Generator().manual_seed(seed))
    return a + a.transpose(1, 2)


@pytest.mark.parametrize("d", [8, 16, 24, 32])
def test_generator_keeps_shape_and_symmetry(d):
    g = FeatureGenerator(TINY_G)
    y = g(sym(3, d))
    assert y.shape == (3, d, d)
    torch.testing.assert_close(y, y.transpose(1, 2))


def test_generator_reference_sizes_and_batch_norm_option():
    g = FeatureGenerator(GeneratorConfig())
    assert len(g.trunk) == 6 and g.conv_first.out_channels == 32
    assert g.trunk[0].body[0].convs[0][0].out_channels == 16
    with_bn = FeatureGenerator(GeneratorConfig(channels=4, growth=4, blocks=1, batch_norm=True))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())


@pytest.mark.parametrize("d,final_channels", [(128, 64), (32, 64), (16, 32)])
def test_discriminator_shape_and_no_batch_norm(d, final_channels):
    dnet = FeatureDiscriminator(d, DiscriminatorConfig(base_channels=8))
    assert dnet(sym(2, d)).shape == (2,)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in dnet.modules())
    assert dnet.head[1].in_features == final_channels * 16  # 4x4 x channels -> FC 100


def test_g_and_d_convolve_channels_last_maps_with_the_same_result_as_nchw():
    """G's and D's convolutions get channels-last maps (faster on CPU, benchmarks/README.md) from any
    (B, d, d) batch, contiguous or not, and compute what the same weights compute on NCHW maps."""
    g, d = FeatureGenerator(TINY_G), FeatureDiscriminator(16)
    seen = []
    for conv in (g.conv_first, g.trunk_conv, d.features[0], d.features[2]):
        conv.register_forward_hook(lambda m, inputs, out: seen.append(
            out.is_contiguous(memory_format=torch.channels_last) and out.stride(1) == 1))
    f = sym(3, 16).transpose(1, 2)  # a non-contiguous view
    y, score = g(f), d(f)
    assert seen and all(seen), seen
    x = f.unsqueeze(1).contiguous()  # the NCHW maps
    feat = g.conv_first(x)
    nchw_g = (x + g.conv_last(feat + g.trunk_conv(g.trunk(feat)))).squeeze(1)
    torch.testing.assert_close(y, 0.5 * (nchw_g + nchw_g.transpose(1, 2)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(score, d.head(d.features(x)).squeeze(1), rtol=1e-5, atol=1e-6)


def test_generator_starts_near_identity_and_dense_residual_starts_at_zero():
    torch.manual_seed(0)
    x = sym(3, 16)
    plain = FeatureGenerator(TINY_G)
    assert (plain(x) - x).abs().max() < 0.1 * x.abs().max()  # output conv scaled down at init
    dense = FeatureGenerator(GeneratorConfig(channels=4, growth=4, blocks=1, dense_dim=16))
    assert dense.dense.in_features == 16 * 17 // 2
    dense.load_state_dict({**plain.state_dict(), **{k: v for k, v in dense.state_dict().items() if "dense" in k}})
    torch.testing.assert_close(dense(x), plain(x))  # zero-initialised: the same G until trained
    with torch.no_grad():
        dense.dense.bias.fill_(0.1)
    y = dense(x)
    torch.testing.assert_close(y, y.transpose(1, 2))
    assert not torch.allclose(y, plain(x))


def test_dense_residual_reads_standardised_entries_and_saves_its_statistics():
    from components.models.covpool import triu_vector

    torch.manual_seed(0)
    rows = triu_vector(3.0 + 0.05 * sym(64, 8))  # LR-like: a common offset, little spread
    g = FeatureGenerator(GeneratorConfig(channels=4, growth=4, blocks=1, dense_dim=8))
    g.set_input_statistics(rows.mean(0), rows.std(0))
    z = (rows - g.dense_mean) * g.dense_scale
    torch.testing.assert_close(z.mean(0), torch.zeros(36), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(36), atol=1e-4, rtol=0)
    # the statistics are buffers: they travel with the state dict (saved G, DDP, checkpoints)
    again = FeatureGenerator(g.cfg)
    again.load_state_dict(g.state_dict())
    torch.testing.assert_close(again.dense_scale, g.dense_scale)
    with torch.no_grad():
        g.dense.weight.copy_(torch.eye(36))  # the dense map now passes z through
        again.dense.weight.copy_(torch.eye(36))
    x = 3.0 + 0.05 * sym(2, 8, seed=5)
    torch.testing.assert_close(g(x), again(x))
    plain = FeatureGenerator(g.cfg)
    plain.load_state_dict({k: v for k, v in g.state_dict().items() if k not in ("dense_mean", "dense_scale")}, strict=False)
    assert not torch.allclose(g(x), plain(x))  # unstandardised entries give another output


@pytest.mark.parametrize("dense_dim", [0, 16])
def test_every_parameter_gets_a_finite_gradient(dense_dim):
    torch.manual_seed(0)
    g, dnet = FeatureGenerator(GeneratorConfig(4, 4, 1, dense_dim=dense_dim)), FeatureDiscriminator(16)
    x = sym(4, 16)
    (dnet(g(x)).sum() + g(x).pow(2).mean()).backward()
    for name, p in list(g.named_parameters()) + list(dnet.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradient_penalty_matches_direct_autograd():
    torch.manual_seed(1)
    dnet = FeatureDiscriminator(8)
    real, fake = sym(5, 8, 1), sym(5, 8, 2)
    gen = torch.Generator().manual_seed(3)
    # as the GAN step takes it (components/training/fsr.py): interpolate, score, penalise grad norms
    x_hat = interpolate(real, fake, gen)
    penalty = gradient_norm_penalty(dnet(x_hat), x_hat, k=2.0, p=6.0)
    # direct: the same interpolates, gradient of each sample's score w.r.t. its own input
    alpha = torch.rand(5, 1, 1, generator=torch.Generator().manual_seed(3))
    expected = []
    for i in range(5):
        x = (real[i] + alpha[i] * (fake[i] - real[i])).unsqueeze(0).requires_grad_(True)
        (gi,) = torch.autograd.grad(dnet(x).sum(), x)
        expected.append(gi.norm() ** 6)
    torch.testing.assert_close(penalty, 2.0 * torch.stack(expected).mean(), rtol=1e-4, atol=1e-6)
    # and it is differentiable w.r.t. D's parameters
    penalty.backward()
    assert all(p.grad is not None for p in dnet.parameters() if p.ndim > 1)  # biases do not move grad_x D


def test_interpolates_lie_between_real_and_fake():
    real, fake = torch.zeros(4, 3, 3), torch.ones(4, 3, 3)
    x = interpolate(real, fake, torch.Generator().manual_seed(0))
    assert x.requires_grad and x.is_leaf
    assert (x >= 0).all() and (x <= 1).all()
    assert torch.allclose(x, x[:, :1, :1].expand_as(x))  # one a per sample


def test_discriminator_and_generator_loss_terms():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -0.5])
    terms = discriminator_losses(d_real, d_fake, torch.tensor(0.25))
    assert sum(terms.values()).item() == pytest.approx(2.0 - 0.0 + 0.25)  # E D(hr) - E D(sr) + penalty
    assert set(terms) == {"l_d_real", "l_d_fake", "l_d_div"}
    x_hat = torch.randn(3, 4, requires_grad=True)
    assert gradient_norm_penalty((x_hat * 2).sum(1), x_hat, k=1.0, p=2.0).item() == pytest.approx(16.0)


def test_perceptual_and_feature_losses():
    a, b = torch.zeros(2, 4), torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(perceptual_loss(a, b), torch.tensor([1.0, 1.0]))
    f = torch.zeros(2, 3, 3)
    torch.testing.assert_close(feature_l2_loss(f + 2, f), torch.tensor([4.0, 4.0]))
    # eq. 9's squared norms: summed over the 4 embedding dims and the 3x3 entries
    torch.testing.assert_close(perceptual_loss(a, b, "sum"), torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(feature_l2_loss(f + 2, f, "sum"), torch.tensor([36.0, 36.0]))
    with pytest.raises(ValueError, match="loss norm"):
        feature_l2_loss(f, f, "max")


def test_loss_norm_is_checked_and_the_code_default_is_the_papers():
    assert FSRConfig().loss_norm == "sum" and (FSRConfig().w_gan, FSRConfig().w_percep, FSRConfig().w_feat) == (1, 1, 1)
    with pytest.raises(BadInput, match="train_fsr.loss_norm: must be 'mean' or 'sum', got 'l1'"):
        FSRConfig(loss_norm="l1")


def test_classification_weights():
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]], requires_grad=True)
    labels = torch.tensor([0, 0])
    w = classification_weights(logits, labels, sigma=1.5, r=1.0)
    p0 = torch.softmax(logits, 1)[:, 0]
    torch.testing.assert_close(w, (1.5 - p0).detach())
    assert w[1] > w[0]  # misclassified samples weigh more
    assert not w.requires_grad
    w2 = classification_weights(logits, labels, sigma=1.5, r=2.0, detach=False)
    torch.testing.assert_close(w2, (1.5 - p0) ** 2)
    w2.sum().backward()
    assert logits.grad is not None


def test_feature_statistics_match_numpy_and_thin_big_row_sets():
    from components.training.fsr import feature_statistics

    rng = np.random.default_rng(0)
    features = (3.0 + 0.1 * rng.standard_normal((5000, 6))).astype(np.float32)
    rows = np.arange(1, 5000, 2)
    mean, std = feature_statistics(features, rows, chunk=300)
    np.testing.assert_allclose(mean.numpy(), features[rows].astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(std.numpy(), features[rows].astype(np.float64).std(0), rtol=1e-8)
    thinned, _ = feature_statistics(features, rows, max_rows=1000)  # every 2nd of the 2,500 rows
    np.testing.assert_allclose(thinned.numpy(), features[rows[::2]].astype(np.float64).mean(0), rtol=1e-10)
