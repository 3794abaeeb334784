"""GME-Net (arXiv 2511.05938): a dual-branch network for low-resolution FER.

Only the abstract is available (docs/methods.md, "GME-Net"); what it leaves open is
designed here, and every size is a field of GMEConfig.

Input: a face (B, C, S, S) in [0, 1] at the model's input size S; an LR face is first
resized back to S by MATLAB bicubic, as everywhere in this project. The model normalises
to [-1, 1] itself.

  stem          conv 3x3 (C -> stem) + BN + ReLU, then a 2x2 max-pool when S > 32
  local branch  `local_channels` stages, each a Mixed-Attention Block (MAB) followed by
                a stride-2 conv (the last one not): fine detail, guided by attention
  global branch Mixed-Channel Feature Extraction Blocks (MCFE) in a quasi-symmetric
                encoder-decoder: encoder levels `global_channels` (MCFE, then stride-2
                conv), a decoder that climbs back all but the first level (nearest 2x
                upsampling, 1x1 conv, add the encoder's skip, MCFE); "quasi": the
                decoder stops one level short of the input resolution, and it has one
                MCFE per level where the encoder has one plus a downsampling
  fusion        global average pool of each branch, concatenation, FC `fusion_dim` +
                BN + ReLU + dropout, FC K

Mixed-Attention Block: conv 3x3 + BN + ReLU, conv 3x3 + BN, then the Depthwise Block
Attention Mechanism, residual add, ReLU.

Depthwise Block Attention Mechanism (DBAM), channel then spatial, like CBAM but with
depthwise convolutions where CBAM uses pooling and a shared MLP:
  channel  a_c = W2 ReLU(W1 GAP(DW_3x3(x)))          (B, C)     pre-sigmoid
           x' = x * sigmoid(a_c)
  spatial  a_s = PW_1x1(DW_kxk(x'))                  (B, 1, H, W) pre-sigmoid, k = `spatial_kernel`
           out = x' * sigmoid(a_s)
The pre-sigmoid maps a_c and a_s of every MAB are what attention-similarity distillation
compares (components/losses.py: attention_similarity_loss).

Mixed-Channel Feature Extraction Block: depthwise 3x3 convs at dilations `dilations`
(several receptive fields) on the same input, concatenated, channel-shuffled so the
scales interleave, mixed back to C channels by a 1x1 conv + BN, residual add, ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from components.models.saved import load_model, save_model


@dataclass(frozen=True)
class GMEConfig:
    in_channels: int = 1
    input_size: int = 48
    num_classes: int = 8
    stem_channels: int = 32
    local_channels: tuple[int, ...] = (32, 64, 128)
    global_channels: tuple[int, ...] = (32, 64, 128)
    dilations: tuple[int, ...] = (1, 2, 3)
    reduction: int = 4  # channel attention bottleneck C -> C / reduction -> C
    spatial_kernel: int = 7
    fusion_dim: int = 256
    dropout: float = 0.3
    test_flip: bool = False  # eval mode: logits are the mean of the face's and its mirror's (as CovPoolFER's)

    def __post_init__(self) -> None:
        if not self.local_channels or not self.global_channels or not self.dilations:
            raise ValueError("gmenet: local_channels, global_channels and dilations must not be empty")
        if self.spatial_kernel % 2 == 0:
            raise ValueError(f"gmenet: spatial_kernel must be odd, got {self.spatial_kernel}")
        reach = 2 ** (len(self.global_channels) - 1 + (self.input_size > 32))
        if self.input_size < reach:
            raise ValueError(f"gmenet: input_size {self.input_size} is too small for "
                             f"{len(self.global_channels)} global levels (needs >= {reach})")


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True, groups: int = 1,
            dilation: int = 1) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation,
                        groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class DepthwiseBlockAttention(nn.Module):
    """DBAM: channel then spatial attention from depthwise convs; returns (out, a_channel, a_spatial)."""

    def __init__(self, channels: int, reduction: int = 4, spatial_kernel: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.channel_dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.channel_fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.spatial_dw = nn.Conv2d(channels, channels, spatial_kernel, padding=spatial_kernel // 2, groups=channels,
                                    bias=False)
        self.spatial_pw = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a_channel = self.channel_fc(self.channel_dw(x).mean(dim=(2, 3)))
        x = x * torch.sigmoid(a_channel)[:, :, None, None]
        a_spatial = self.spatial_pw(self.spatial_dw(x))
        return x * torch.sigmoid(a_spatial), a_channel, a_spatial


class MixedAttentionBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, DBAM, residual, ReLU; returns (out, a_channel, a_spatial)."""

    def __init__(self, channels: int, reduction: int, spatial_kernel: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels, relu=False))
        self.attention = DepthwiseBlockAttention(channels, reduction, spatial_kernel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, a_channel, a_spatial = self.attention(self.body(x))
        return F.relu(out + x), a_channel, a_spatial


class MixedChannelBlock(nn.Module):
    """MCFE: depthwise 3x3 at several dilations, concatenated, channel-shuffled, 1x1 mix, residual."""

    def __init__(self, channels: int, dilations: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(conv_bn(channels, channels, groups=channels, dilation=d) for d in dilations)
        self.mix = conv_bn(channels * len(dilations), channels, kernel=1, relu=False)
        self.groups = len(dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([branch(x) for branch in self.branches], dim=1)
        b, c, h, w = y.shape  # shuffle: (scale, channel) -> (channel, scale)
        y = y.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)
        return F.relu(self.mix(y) + x)


def level_entries(stem: int, channels: tuple[int, ...]) -> nn.ModuleList:
    """The conv into each level of a branch: stride 1 into the first, stride 2 (downsampling) after."""
    chans = (stem, *channels)
    return nn.ModuleList(conv_bn(chans[i], chans[i + 1], stride=1 if i == 0 else 2) for i in range(len(channels)))


class LocalBranch(nn.Module):
    def __init__(self, cfg: GMEConfig):
        super().__init__()
        self.entry = level_entries(cfg.stem_channels, cfg.local_channels)
        self.blocks = nn.ModuleList(MixedAttentionBlock(c, cfg.reduction, cfg.spatial_kernel)
                                    for c in cfg.local_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        maps = []
        for entry, block in zip(self.entry, self.blocks):
            x, a_channel, a_spatial = block(entry(x))
            maps.append((a_channel, a_spatial))
        return x, maps


class GlobalBranch(nn.Module):
    def __init__(self, cfg: GMEConfig):
        super().__init__()
        self.down = level_entries(cfg.stem_channels, cfg.global_channels)
        self.encode = nn.ModuleList(MixedChannelBlock(c, cfg.dilations) for c in cfg.global_channels)
        levels = cfg.global_channels
        self.lateral = nn.ModuleList(conv_bn(levels[i], levels[i - 1], kernel=1) for i in range(len(levels) - 1, 1, -1))
        self.decode = nn.ModuleList(MixedChannelBlock(levels[i - 1], cfg.dilations)
                                    for i in range(len(levels) - 1, 1, -1))
        self.out_channels = levels[1] if len(levels) > 2 else levels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down, block in zip(self.down, self.encode):
            x = block(down(x))
            skips.append(x)
        for k, (lateral, block) in enumerate(zip(self.lateral, self.decode)):
            skip = skips[-2 - k]
            x = block(lateral(F.interpolate(x, size=skip.shape[-2:], mode="nearest")) + skip)
        return x


class GMENet(nn.Module):
    """forward(x) -> logits; forward(x, with_attention=True) -> (logits, [(a_channel, a_spatial) per MAB])."""

    def __init__(self, cfg: GMEConfig):
        super().__init__()
        self.cfg = cfg
        stem = [conv_bn(cfg.in_channels, cfg.stem_channels)]
        if cfg.input_size > 32:
            stem.append(nn.MaxPool2d(2))
        self.stem = nn.Sequential(*stem)
        self.local_branch = LocalBranch(cfg)
        self.global_branch = GlobalBranch(cfg)
        width = cfg.local_channels[-1] + self.global_branch.out_channels
        self.head = nn.Sequential(nn.Linear(width, cfg.fusion_dim), nn.BatchNorm1d(cfg.fusion_dim), nn.ReLU(inplace=True),
                                  nn.Dropout(cfg.dropout), nn.Linear(cfg.fusion_dim, cfg.num_classes))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        if x.shape[-1] != self.cfg.input_size or x.shape[-2] != self.cfg.input_size:
            raise ValueError(f"gmenet: expected {self.cfg.input_size}x{self.cfg.input_size} inputs, got "
                             f"{tuple(x.shape[-2:])} (resize LR faces back to the input size first)")
        h = self.stem(x * 2.0 - 1.0)
        local, maps = self.local_branch(h)
        fused = torch.cat([local.mean(dim=(2, 3)), self.global_branch(h).mean(dim=(2, 3))], dim=1)
        return self.head(fused), maps

    def forward(self, x: torch.Tensor, with_attention: bool = False):
        """Logits; with_attention=True: (logits, maps), through forward so a DDP wrapper sees it."""
        if self.cfg.test_flip and not self.training and not with_attention:  # face and mirror in one batch
            face, mirror = self.forward_with_attention(torch.cat([x, x.flip(3)]))[0].split(x.shape[0])
            return 0.5 * (face + mirror)
        logits, maps = self.forward_with_attention(x)
        return (logits, maps) if with_attention else logits


def save_gmenet(model: GMENet, path, extra: dict | None = None) -> None:
    """Config + state_dict, loadable with torch.load(weights_only=True)."""
    save_model(model, path, extra)


def load_gmenet(path, map_location: str | torch.device = "cpu", frozen: bool = True) -> GMENet:
    return load_model(GMENet, GMEConfig, path, map_location, frozen)
