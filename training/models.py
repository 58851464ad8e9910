"""Model architectures, selected by name and rebuilt from a checkpoint's arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class PaperCNN(nn.Module):
    """Luo's CNN: 4 conv layers with ReLU, 2 max-pools, flatten, one dense layer, softmax."""

    def __init__(self, input_size: int = 128, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * width * (input_size // 4) ** 2, 2)

    def cam_layer(self) -> nn.Module:
        """The layer whose activations Grad-CAM explains (the last conv block's ReLU)."""
        return self.features[-2]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return logits; softmax is applied by the loss and by `predict_scores`."""
        return self.classifier(torch.flatten(self.features(images), 1))


def _conv_bn(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut; the first may downsample."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_ch, out_ch, stride),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.act(self.body(x) + self.shortcut(x))


class FauxNet(nn.Module):
    """The default detector: a small residual CNN with a full-resolution stem and global pooling.

    The stem keeps the first layer at input resolution so local high-frequency traces
    (splice seams, resampling, generator noise) reach the deeper layers; global average
    plus max pooling lets a small local anomaly drive the score.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, widths[0], 1), _conv_bn(widths[0], widths[0], 2))
        stages: list[nn.Module] = []
        for in_ch, out_ch in zip(widths[:-1], widths[1:]):
            stages.append(ResidualBlock(in_ch, out_ch, stride=2))
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * widths[-1], 2)

    def cam_layer(self) -> nn.Module:
        """The layer whose activations Grad-CAM explains (the last residual stage)."""
        return self.stages[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return logits over (real, fake)."""
        features = self.stages(self.stem(images))
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.head(self.dropout(pooled))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "paper-cnn": PaperCNN,
    "fauxnet": FauxNet,
}

DEFAULT_ARGS: dict[str, dict[str, Any]] = {
    "paper-cnn": {"width": 32},
    "fauxnet": {"widths": [16, 32, 64, 128], "dropout": 0.2},
}


def build_model(arch: str, arch_args: dict[str, Any]) -> nn.Module:
    """Build an architecture by name from its keyword arguments."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    args = dict(arch_args)
    if "widths" in args:
        args["widths"] = tuple(args["widths"])
    return ARCHITECTURES[arch](**args)


def predict_scores(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Return the softmax probability of the fake class for a batch."""
    return torch.softmax(model(images), dim=1)[:, 1]
