"""ResNet-style image classifier over 3x64x64 inputs (compute-heavy, steep batch curve)."""

from __future__ import annotations

import torch
from torch import nn

from tsadapt.handlers.layers import ResidualBlock

NUM_CLASSES = 10


class ImageCNN(nn.Module):
    """Stem + three residual stages (32, 64, 128 channels) + global pooling + linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
        )  # 32x32
        self.stages = nn.Sequential(
            ResidualBlock(32, 32),
            ResidualBlock(32, 64, stride=2),  # 16x16
            ResidualBlock(64, 128, stride=2),  # 8x8
        )
        self.head = nn.Linear(128, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
