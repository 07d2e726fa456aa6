"""MLP over tabular rows (cheap per row: latency is mostly fixed overhead)."""

from __future__ import annotations

import torch
from torch import nn

NUM_FEATURES = 16
NUM_CLASSES = 3


class TabularMLP(nn.Module):
    """16 features -> 256 -> 256 -> 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(NUM_FEATURES, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
