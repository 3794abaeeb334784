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


def test_with_test_flip_eval_mode_reads_the_mean_of_the_face_and_its_mirror_and_training_does_not(tmp_path):
    """test_flip: in eval mode F(x) = (F(x) + F(mirror x)) / 2, so a face and its mirror get the same
    features and prediction; train mode sees the single face; the flag survives save/load, a file
    saved before the flag existed loads without it, and the cost counts both passes."""
    from dataclasses import asdict

    from components.models.cost import model_cost
    from components.models.saved import save_reproducibly

    torch.manual_seed(0)
    small_eps = dict(reeig_eps=1e-10)  # an untrained CNN's covariance sits under the default ReEig floor
    plain = CovPoolFER(CovPoolConfig(**TINY, **small_eps)).eval()
    flip = CovPoolFER(CovPoolConfig(**TINY, **small_eps, test_flip=True)).eval()
    flip.load_state_dict(plain.state_dict())
    x = torch.rand(3, 3, 48, 48)
    mirror = x.flip(3)
    single, mirrored = plain.extractor(x), plain.extractor(mirror)
    assert (single - mirrored).abs().max() > 1e-4, "the tiny CNN must not be mirror-invariant already"
    torch.testing.assert_close(flip.extractor(x), 0.5 * (single + mirrored))
    torch.testing.assert_close(flip(x), flip(mirror))
    torch.testing.assert_close(flip.extractor.train()(x), plain.extractor.train()(x))  # training: the single face

    save_covpool(flip.eval(), tmp_path / "flip.pt")
    loaded = load_covpool(tmp_path / "flip.pt")
    assert loaded.cfg.test_flip
    torch.testing.assert_close(loaded(x), flip(x))
    old = {"config": {k: v for k, v in asdict(plain.cfg).items() if k != "test_flip"}, "state_dict": plain.state_dict(),
           "extra": {}}
    save_reproducibly(old, tmp_path / "old.pt")
    assert not load_covpool(tmp_path / "old.pt").cfg.test_flip

    extractor = model_cost(plain.extractor, (1, 3, 48, 48))["flops"]  # the classifier still runs once
    # (within 1%: a per-forward term such as the BiMap weight's own product does not double)
    assert model_cost(flip, (1, 3, 48, 48))["flops"] == pytest.approx(model_cost(plain, (1, 3, 48, 48))["flops"] + extractor,
                                                                       rel=0.01)
