"""CovPoolFER (Acharya et al., CVPRW 2018): the frozen FER model of FSR-FER.

Split as FSR-FER needs it (docs/methods.md; the paper's eq. 1-2 and 9):
  CovPoolExtractor F: image -> CNN -> covariance pooling -> BiMap -> ReEig -> LogEig
                      -> the symmetric LogEig matrix (B, d, d)   (the feature G and D work on)
  CovPoolClassifier C: LogEig matrix -> upper triangle -> FC 2000 -> FC 128 -> FC K
                      (the FC-128 output is the perceptual space of eq. 9)

Sizes are parameters (CovPoolConfig): the paper's CNN is 64, pool, 96, pool, 128, 128,
pool, 256, 256 (100x100 -> 12x12x256) with BiMap 256 -> 128. For small inputs (48x48
FER+ gives 6x6 = 36 spatial samples, a covariance of rank <= 35) use a smaller BiMap
output, or fewer pools.

Choices: the classifier reads the upper triangle of the LogEig matrix (off-diagonal
entries times sqrt 2, so the vector's norm is the matrix's Frobenius norm) rather than
the full d x d flattening: the same information, half the first FC layer. Inputs are
float images in [0, 1], (B, C, H, W); the model normalises them to [-1, 1] itself.

Choice (not in the paper, `test_flip`, off by default): in eval mode the extractor returns the
mean of the LogEig matrices of the face and of its mirror image, the log-Euclidean mean of the
two SPD features. Training (train mode) sees single faces, mirrored at random by the
augmentation. Every user of F in eval mode gets the mean: the teacher's epoch selection on
valid, the feature cache G learns on, evaluation, and serving, at twice the extractor's cost.
Measured on FER+ Valid with the 20-epoch teacher: HR 84.6 -> 85.4, the multi-scale CNN's mean
over x2..x8 65.0 -> 65.8 (benchmarks/README.md, "Test-time flip").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from components.models.saved import load_model, save_model
from components.models.spd import BiMap, covariance_pool, log_eig, rectify_eig


@dataclass(frozen=True)
class CovPoolConfig:
    in_channels: int = 3
    conv_channels: tuple[int, ...] = (64, 96, 128, 128, 256, 256)
    pool_after: tuple[int, ...] = (0, 1, 3)  # max-pool 2x2 after these conv layers (paper)
    bimap_dim: int = 128
    reeig_eps: float = 1e-4  # ReEig clamp, as CovPoolFER
    fc_dims: tuple[int, int] = (2000, 128)
    num_classes: int = 7
    dropout: float = 0.5
    test_flip: bool = False  # in eval mode F(x) is the mean of x's and its mirror's LogEig matrices (module doc)

    @property
    def feature_dim(self) -> int:
        """Length of the upper-triangle feature vector of the d x d LogEig matrix."""
        return self.bimap_dim * (self.bimap_dim + 1) // 2


def triu_vector(matrix: torch.Tensor) -> torch.Tensor:
    """(B, d, d) symmetric -> (B, d(d+1)/2): upper triangle, off-diagonals times sqrt 2."""
    d = matrix.shape[-1]
    rows, cols = torch.triu_indices(d, d, device=matrix.device)
    weights = torch.where(rows == cols, 1.0, math.sqrt(2.0)).to(matrix.dtype)
    return matrix[..., rows, cols] * weights


def triu_to_matrix(vector: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of triu_vector: (B, d(d+1)/2) -> (B, d, d) symmetric."""
    rows, cols = torch.triu_indices(d, d, device=vector.device)
    weights = torch.where(rows == cols, 1.0, 1.0 / math.sqrt(2.0)).to(vector.dtype)
    out = vector.new_zeros(vector.shape[:-1] + (d, d))
    out[..., rows, cols] = vector * weights
    out[..., cols, rows] = vector * weights
    return out


class CovPoolExtractor(nn.Module):
    """F: images (B, C, H, W) in [0, 1] -> LogEig matrices (B, d, d)."""

    def __init__(self, cfg: CovPoolConfig):
        super().__init__()
        layers: list[nn.Module] = []
        prev = cfg.in_channels
        for i, ch in enumerate(cfg.conv_channels):
            layers += [nn.Conv2d(prev, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
            if i in cfg.pool_after:
                layers.append(nn.MaxPool2d(2))
            prev = ch
        self.cnn = nn.Sequential(*layers)
        self.bimap = BiMap(prev, cfg.bimap_dim)
        self.reeig_eps = cfg.reeig_eps
        self.test_flip = cfg.test_flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.test_flip and not self.training:  # the face and its mirror in one batch, features averaged
            both = self.features(torch.cat([images, images.flip(3)]))
            face, mirror = both.split(images.shape[0])
            return 0.5 * (face + mirror)
        return self.features(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The LogEig matrices of these images as they are (no mirror)."""
        fmap = self.cnn(images * 2.0 - 1.0)  # (B, C', h, w); bf16 under a caller's autocast
        # The second-order head never runs in reduced precision: covariance in float32, eig in float64
        # (components/models/spd.py), whatever autocast the caller has on.
        with torch.autocast(device_type=fmap.device.type, enabled=False):
            cov = covariance_pool(fmap.float())  # (B, C', C')
            return log_eig(rectify_eig(self.bimap(cov), eps=self.reeig_eps))  # (B, d, d)


class CovPoolClassifier(nn.Module):
    """C: LogEig matrices (B, d, d) -> logits (B, K); `embed` gives the FC-128 space."""

    def __init__(self, cfg: CovPoolConfig):
        super().__init__()
        hidden, embed = cfg.fc_dims
        self.fc_hidden = nn.Sequential(nn.Linear(cfg.feature_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
        self.fc_embed = nn.Linear(hidden, embed)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(embed, cfg.num_classes))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Perceptual space: (B, d, d) -> (B, 128)."""
        return self.fc_embed(self.fc_hidden(triu_vector(features)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(features))


class CovPoolFER(nn.Module):
    """The whole model, C(F(x)); `extractor` and `classifier` are the frozen parts FSR-FER uses."""

    def __init__(self, cfg: CovPoolConfig):
        super().__init__()
        self.cfg = cfg
        self.extractor = CovPoolExtractor(cfg)
        self.classifier = CovPoolClassifier(cfg)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.extractor(images))


def save_covpool(model: CovPoolFER, path, extra: dict | None = None) -> None:
    """Save config + state_dict in a file that loads with torch.load(weights_only=True)."""
    save_model(model, path, extra)


def load_covpool(path, map_location: str | torch.device = "cpu", frozen: bool = True) -> CovPoolFER:
    """Load a saved CovPoolFER without unpickling code; frozen=True: eval mode, no grads."""
    return load_model(CovPoolFER, CovPoolConfig, path, map_location, frozen)
