"""FSR-FER's generator G: ESRGAN residual-in-residual dense blocks on the LogEig matrix.

F_sr = G(F_lr): the d x d LogEig feature matrix is a 1-channel image (reference code:
[B, 128, 128, 1]); G keeps its size (no upsampling). Structure as ESRGAN (Wang et al.
2018) with reduced channels (reference code: 32 channels, growth 16, 6 RRDBs):
conv_first -> n x RRDB -> trunk conv (+ skip) -> conv_last, plus a global residual; the
output conv's init is scaled down so G starts near the identity. Each RRDB = 3 dense blocks of 5 convs, residual scale 0.2,
LeakyReLU 0.2, as ESRGAN. The reference code's BatchNorm after each dense conv is an
option (`batch_norm`, default off, as ESRGAN and the paper).

Choice (not in the paper, off by default): `dense_dim = d` adds a dense residual, a
zero-initialised linear map over the upper triangle of the input matrix, beside the RRDB
trunk. Unlike an image, a LogEig matrix has no translation structure (entry (i, j)
relates BiMap directions i and j; the diagonal holds the log-eigenvalues), so weight-shared
3x3 convs can only learn entry-wise rules; the reference code's answer is capacity and
time (d = 128, 32 channels x 6 RRDBs, 300k iterations). Measured on the synthetic
default at CPU budgets (benchmarks/README.md), the conv-only G never rose above the
bicubic baseline, the dense residual did.

The dense residual reads standardised entries: (x - mean) / std per entry, with the mean
and std of the training split's LR features (`set_input_statistics`, called by the
training loop; buffers, so they are saved with G). LR features share a large offset and
differ between classes by little (at x8 on the synthetic default, class means differ by
about 0.03 per entry against a spread of 0.26); standardised, the zero-initialised map
learns the small differences in the iterations a CPU affords. Measured with the main job's
teacher and features, seed 0, 1,500 iterations: test x5 45.7 -> 53.9, x8 22.1 -> 26.1.

Choice (not in the paper): the output is symmetrised, 0.5 (Y + Y^T), because a LogEig
feature is a symmetric matrix and the classifier reads its upper triangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.models.covpool import triu_to_matrix, triu_vector

RESIDUAL_SCALE = 0.2  # as ESRGAN
LAST_CONV_INIT_SCALE = 0.01


def matrix_maps(matrix: torch.Tensor) -> torch.Tensor:
    """(B, d, d) feature matrices -> (B, 1, d, d) one-channel maps in channels-last memory, as G and D convolve them.

    The (B, d, d, 1) view permuted to (B, 1, d, d), as images_to_tensor (components/runtime.py)
    hands images over: the channel stride is 1, so the first convolution's output, and every
    one after it, is channels-last. A bare `unsqueeze(1)` (and `.contiguous(channels_last)`,
    which takes a one-channel NCHW tensor as already channels-last) keeps NCHW strides, and
    G's and D's small convolutions and their backward run slower (benchmarks/README.md, G/D step).
    """
    return matrix.contiguous().reshape(*matrix.shape, 1).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class GeneratorConfig:
    channels: int = 32
    growth: int = 16
    blocks: int = 6
    batch_norm: bool = False
    dense_dim: int = 0  # d > 0: add the dense residual over the d x d matrix's upper triangle (see module doc)


class ResidualDenseBlock(nn.Module):
    """5 densely connected 3x3 convs; output = x + 0.2 * conv5(...)."""

    def __init__(self, channels: int, growth: int, batch_norm: bool):
        super().__init__()
        self.convs = nn.ModuleList()
        for i in range(5):
            out = growth if i < 4 else channels
            layers: list[nn.Module] = [nn.Conv2d(channels + i * growth, out, 3, padding=1)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            self.convs.append(nn.Sequential(*layers))
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            y = conv(torch.cat(feats, dim=1))
            if i < 4:
                feats.append(self.act(y))
        return x + RESIDUAL_SCALE * y


class RRDB(nn.Module):
    """Residual-in-residual dense block: 3 dense blocks, outer residual scaled by 0.2."""

    def __init__(self, channels: int, growth: int, batch_norm: bool):
        super().__init__()
        self.body = nn.Sequential(*(ResidualDenseBlock(channels, growth, batch_norm) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.body(x)


class FeatureGenerator(nn.Module):
    """G: LR feature matrices (B, d, d) -> SR feature matrices (B, d, d)."""

    def __init__(self, cfg: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.cfg = cfg
        self.conv_first = nn.Conv2d(1, cfg.channels, 3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(cfg.channels, cfg.growth, cfg.batch_norm) for _ in range(cfg.blocks)))
        self.trunk_conv = nn.Conv2d(cfg.channels, cfg.channels, 3, padding=1)
        self.conv_last = nn.Conv2d(cfg.channels, 1, 3, padding=1)
        if cfg.dense_dim:
            size = cfg.dense_dim * (cfg.dense_dim + 1) // 2
            self.dense = nn.Linear(size, size)
            nn.init.zeros_(self.dense.weight)  # starts as the identity, like the conv path
            nn.init.zeros_(self.dense.bias)
            # the dense map reads standardised entries (see the module doc; set by set_input_statistics)
            self.register_buffer("dense_mean", torch.zeros(size))
            self.register_buffer("dense_scale", torch.ones(size))
        # G starts at the identity up to a small residual (output conv scaled by 0.01, in
        # the spirit of ESRGAN's scaled init): it starts from the bicubic baseline instead of a
        # random perturbation of the features, which the short schedules here never undo.
        with torch.no_grad():
            self.conv_last.weight.mul_(LAST_CONV_INIT_SCALE)
            self.conv_last.bias.zero_()

    def forward(self, f_lr: torch.Tensor) -> torch.Tensor:
        x = matrix_maps(f_lr)  # (B, 1, d, d)
        feat = self.conv_first(x)
        feat = feat + self.trunk_conv(self.trunk(feat))
        y = (x + self.conv_last(feat)).squeeze(1)  # global residual: G starts near the identity
        if self.cfg.dense_dim:
            z = (triu_vector(f_lr) - self.dense_mean) * self.dense_scale
            y = y + triu_to_matrix(self.dense(z), self.cfg.dense_dim)  # (B, d, d)
        return 0.5 * (y + y.transpose(1, 2))

    @torch.no_grad()
    def set_input_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise the dense residual's input with these per-entry LR statistics (d(d+1)/2 each)."""
        if self.cfg.dense_dim:
            self.dense_mean.copy_(mean)
            self.dense_scale.copy_(1.0 / std.clamp_min(1e-3))


def load_generator(path, map_location: str | torch.device = "cpu") -> FeatureGenerator:
    """The trained G (as the train_fsr stage saves it: config + state_dict), frozen (eval mode, no grads)."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    g = FeatureGenerator(GeneratorConfig(**blob["config"]))
    g.load_state_dict(blob["state_dict"])
    g.eval().requires_grad_(False)
    return g
