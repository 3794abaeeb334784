"""GME-Net's blocks, its exposed attention maps, the A-SKD loss and gradient flow (tiny, CPU)."""

from __future__ import annotations

import pytest
import torch

from components.losses import attention_similarity_loss
from components.models.cost import model_cost
from components.models.gmenet import (
    DepthwiseBlockAttention,
    GlobalBranch,
    GMEConfig,
    GMENet,
    MixedAttentionBlock,
    MixedChannelBlock,
    load_gmenet,
    save_gmenet,
)

TINY = GMEConfig(in_channels=1, input_size=48, num_classes=8, stem_channels=8, local_channels=(8, 16, 24),
                 global_channels=(8, 16, 24), fusion_dim=32)


def test_dbam_returns_pre_sigmoid_channel_and_spatial_maps():
    torch.manual_seed(0)
    dbam = DepthwiseBlockAttention(16, reduction=4, spatial_kernel=7)
    x = torch.randn(3, 16, 10, 12)
    out, a_channel, a_spatial = dbam(x)
    assert out.shape == x.shape and a_channel.shape == (3, 16) and a_spatial.shape == (3, 1, 10, 12)
    # the output is x gated by the sigmoids of the returned maps (so they are pre-sigmoid)
    gated = x * torch.sigmoid(a_channel)[:, :, None, None]
    torch.testing.assert_close(out, gated * torch.sigmoid(a_spatial))
    assert (a_channel < 0).any() and (a_channel > 0).any()  # logits, not probabilities
    assert all(m.groups == 16 for m in (dbam.channel_dw, dbam.spatial_dw))  # depthwise


def test_blocks_keep_shapes():
    x = torch.randn(2, 16, 12, 12)
    out, a_c, a_s = MixedAttentionBlock(16, 4, 5)(x)
    assert out.shape == x.shape and a_c.shape == (2, 16) and a_s.shape == (2, 1, 12, 12)
    mcfe = MixedChannelBlock(16, (1, 2, 3))
    assert mcfe(x).shape == x.shape
    assert [b[0].dilation for b in mcfe.branches] == [(1, 1), (2, 2), (3, 3)]


def test_global_branch_is_an_encoder_decoder_back_to_the_second_level():
    branch = GlobalBranch(TINY)
    h = torch.randn(2, TINY.stem_channels, 24, 24)
    assert branch(h).shape == (2, 16, 12, 12)  # down to 6x6 at 24 channels, up again to level 2


@pytest.mark.parametrize("cfg", [TINY, GMEConfig(in_channels=3, input_size=100, num_classes=7, stem_channels=8,
                                                 local_channels=(8, 16), global_channels=(8, 16, 16), fusion_dim=16)])
def test_model_outputs_logits_and_one_map_pair_per_attention_block(cfg):
    model = GMENet(cfg)
    x = torch.rand(4, cfg.in_channels, cfg.input_size, cfg.input_size)
    logits, maps = model(x, with_attention=True)
    assert logits.shape == (4, cfg.num_classes)
    assert len(maps) == len(cfg.local_channels)
    side = cfg.input_size // 2 if cfg.input_size > 32 else cfg.input_size
    for (a_c, a_s), channels in zip(maps, cfg.local_channels):
        assert a_c.shape == (4, channels) and a_s.shape == (4, 1, side, side)
        side = (side + 1) // 2
    torch.testing.assert_close(model.eval()(x), model(x, with_attention=True)[0])


def test_wrong_input_size_and_bad_configs_are_refused():
    with pytest.raises(ValueError, match="expected 48x48"):
        GMENet(TINY)(torch.rand(1, 1, 24, 24))
    with pytest.raises(ValueError, match="spatial_kernel"):
        GMEConfig(spatial_kernel=4)
    with pytest.raises(ValueError, match="too small"):
        GMEConfig(input_size=4, global_channels=(8, 8, 8, 8))


def test_attention_similarity_loss_is_zero_for_identical_maps_and_positive_otherwise():
    torch.manual_seed(0)
    maps = [(torch.randn(4, 8), torch.randn(4, 1, 6, 6)), (torch.randn(4, 16), torch.randn(4, 1, 3, 3))]
    assert attention_similarity_loss(maps, maps).item() == pytest.approx(0.0, abs=1e-6)
    scaled = [(2 * a, 3 * b) for a, b in maps]  # cosine ignores scale
    assert attention_similarity_loss(scaled, maps).item() == pytest.approx(0.0, abs=1e-6)
    other = [(torch.randn_like(a), torch.randn_like(b)) for a, b in maps]
    loss = attention_similarity_loss(other, maps)
    assert 0 < loss.item() <= 2 * 4
    opposite = [(-a, -b) for a, b in maps]
    assert attention_similarity_loss(opposite, maps).item() == pytest.approx(8.0, abs=1e-5)  # 4 maps x (1 - (-1))
    # per map: the batch mean of 1 - cos
    a_s, a_t = other[0][0], maps[0][0]
    expected = (1 - torch.nn.functional.cosine_similarity(a_s, a_t, dim=1)).mean()
    torch.testing.assert_close(attention_similarity_loss([(a_s,)], [(a_t,)]), expected)
    with pytest.raises(ValueError, match="blocks"):
        attention_similarity_loss(maps[:1], maps)


def test_every_parameter_gets_a_gradient_from_ce_plus_distillation():
    torch.manual_seed(0)
    student, teacher = GMENet(TINY), GMENet(TINY).eval().requires_grad_(False)
    x_lr, x_hr = torch.rand(4, 1, 48, 48), torch.rand(4, 1, 48, 48)
    logits, maps = student(x_lr, with_attention=True)
    with torch.no_grad():
        _, teacher_maps = teacher(x_hr, with_attention=True)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])) + 5.0 * attention_similarity_loss(
        maps, teacher_maps)
    loss.backward()
    for name, p in student.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())


def test_save_load_roundtrip_is_frozen_and_identical(tmp_path):
    model = GMENet(TINY).eval()
    save_gmenet(model, tmp_path / "g.pt", extra={"classes": list("abcdefgh")})
    loaded = load_gmenet(tmp_path / "g.pt")
    x = torch.rand(2, 1, 48, 48)
    torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_cost_counts_parameters_and_flops():
    cost = model_cost(GMENet(TINY).eval(), (1, 1, 48, 48))
    assert cost["params"] == sum(p.numel() for p in GMENet(TINY).parameters())
    bigger = model_cost(GMENet(GMEConfig(input_size=96, stem_channels=8, local_channels=(8, 16, 24),
                                         global_channels=(8, 16, 24), fusion_dim=32)).eval(), (1, 1, 96, 96))
    assert bigger["params"] == cost["params"] and 3.5 * cost["flops"] < bigger["flops"] < 4.5 * cost["flops"]


def test_with_test_flip_eval_logits_are_the_mean_over_the_face_and_its_mirror():
    from dataclasses import replace

    torch.manual_seed(0)
    plain = GMENet(TINY).eval()
    flip = GMENet(replace(TINY, test_flip=True)).eval()
    flip.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 48, 48)
    assert (plain(x) - plain(x.flip(3))).abs().max() > 1e-4
    torch.testing.assert_close(flip(x), 0.5 * (plain(x) + plain(x.flip(3))))
    torch.testing.assert_close(flip(x), flip(x.flip(3)))
    logits, maps = flip(x, with_attention=True)  # distillation reads the single face's maps
    torch.testing.assert_close(logits, plain(x))
    torch.manual_seed(1)
    trained = flip.train()(x)
    torch.manual_seed(1)  # the same dropout masks
    torch.testing.assert_close(trained, plain.train()(x))
