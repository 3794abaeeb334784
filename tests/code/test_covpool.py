"""CovPoolFER blocks: shapes for RGB 100x100 and grey 48x48, gradient flow, frozen loading."""

from __future__ import annotations

import pytest
import torch

from components.models.covpool import CovPoolConfig, CovPoolFER, load_covpool, save_covpool, triu_to_matrix, triu_vector

TINY = dict(conv_channels=(4, 6, 8, 8, 12, 12), bimap_dim=6, fc_dims=(32, 16))


@pytest.mark.parametrize("in_ch,size,bimap", [(3, 100, 6), (1, 48, 4)])
def test_shapes(in_ch, size, bimap):
    cfg = CovPoolConfig(in_channels=in_ch, **(TINY | {"bimap_dim": bimap}), num_classes=8)
    model = CovPoolFER(cfg)
    x = torch.rand(3, in_ch, size, size)
    fmap = model.extractor.cnn(x)
    assert fmap.shape == (3, 12, size // 8, size // 8)  # three 2x2 pools: 100 -> 12, 48 -> 6
    feats = model.extractor(x)
    assert feats.shape == (3, bimap, bimap)
    torch.testing.assert_close(feats, feats.transpose(1, 2))
    assert model.classifier.embed(feats).shape == (3, 16)
    assert model(x).shape == (3, 8)


def test_paper_sizes():
    model = CovPoolFER(CovPoolConfig())
    assert model.extractor.cnn(torch.rand(1, 3, 100, 100)).shape == (1, 256, 12, 12)
    assert model.classifier.fc_embed.out_features == 128 and model.classifier.fc_hidden[0].out_features == 2000


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(0)
    model = CovPoolFER(CovPoolConfig(**TINY, dropout=0.0))
    loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 3, 48, 48)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_triu_roundtrip_keeps_the_frobenius_norm():
    a = torch.randn(2, 5, 5)
    sym = a + a.transpose(1, 2)
    v = triu_vector(sym)
    assert v.shape == (2, 15)
    torch.testing.assert_close(triu_to_matrix(v, 5), sym)
    torch.testing.assert_close(v.norm(dim=1), sym.flatten(1).norm(dim=1))


def test_saved_model_loads_frozen_with_weights_only(tmp_path):
    model = CovPoolFER(CovPoolConfig(**TINY)).eval()
    save_covpool(model, tmp_path / "m.pt", extra={"classes": ["a"]})
    loaded = load_covpool(tmp_path / "m.pt")
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = torch.rand(2, 3, 48, 48)
    torch.testing.assert_close(loaded(x), model(x))


def test_the_same_model_saves_to_the_same_bytes_under_any_name(tmp_path):
    """Model files are DVC outs: rerunning a stage must not change their hash (atomic writes use random temp names)."""
    model = CovPoolFER(CovPoolConfig(**TINY))
    save_covpool(model, tmp_path / ".teacher.a1b2c3.pt")
    save_covpool(model, tmp_path / "teacher.pt")
    assert (tmp_path / ".teacher.a1b2c3.pt").read_bytes() == (tmp_path / "teacher.pt").read_bytes()


def test_class_weights_dampen_imbalance():
    import numpy as np

    from components.losses import class_weights

    labels = np.array([0] * 90 + [1] * 10)
    full = class_weights(labels, 3, power=1.0)
    half = class_weights(labels, 3, power=0.5)
    assert full[2] == half[2] == 0.0  # absent class
    assert full[1] / full[0] == pytest.approx(9.0)
    assert half[1] / half[0] == pytest.approx(3.0)
    assert full[:2].mean() == pytest.approx(1.0) and half[:2].mean() == pytest.approx(1.0)


def test_under_bf16_autocast_the_cnn_is_bf16_and_the_spd_head_stays_full_precision():
    """The training stages' bf16 lever (components/runtime.py training_autocast): convolutions in bf16,
    the covariance and the eigendecompositions in float32/float64, every gradient finite."""
    torch.manual_seed(0)
    model = CovPoolFER(CovPoolConfig(**TINY, dropout=0.0))
    x = torch.rand(4, 3, 48, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.extractor.cnn(x).dtype == torch.bfloat16
        feats = model.extractor(x)
        logits = model.classifier(feats)
    assert feats.dtype == torch.float32, "the LogEig matrix must not come out of a bf16 covariance"
    reference = model.extractor(x)
    assert (feats - reference).abs().max() < 0.1 * reference.abs().max(), "bf16 CNN, same features within bf16's reach"
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_training_precision_picks_bf16_as_asked_and_auto_by_the_hardware():
    from components.runtime import cpu_has_native_bf16, training_autocast, uses_bf16

    cpu = torch.device("cpu")
    assert uses_bf16("bf16", cpu) and not uses_bf16("fp32", cpu)
    flags = open("/proc/cpuinfo").read().split()
    assert uses_bf16("auto", cpu) == cpu_has_native_bf16() == ("amx_bf16" in flags or "avx512_bf16" in flags)
    with training_autocast("bf16", cpu):
        assert torch.nn.Linear(4, 4)(torch.rand(2, 4)).dtype == torch.bfloat16
    with training_autocast("fp32", cpu):
        assert torch.nn.Linear(4, 4)(torch.rand(2, 4)).dtype == torch.float32
