"""Small transformer text encoder: token ids in, class logits out (cost grows with length)."""

from __future__ import annotations

import torch
from torch import nn

VOCAB_SIZE = 4096
MAX_TOKENS = 128
NUM_CLASSES = 4
PAD_ID = 0


class TextEncoder(nn.Module):
    """Token + position embeddings, two pre-norm encoder layers, masked mean pooling."""

    def __init__(self, d_model: int = 128, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB_SIZE, d_model, padding_idx=PAD_ID)
        self.positions = nn.Embedding(MAX_TOKENS, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=4 * d_model, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, NUM_CLASSES)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        padding = token_ids == PAD_ID
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        x = self.tokens(token_ids) + self.positions(positions)[None]
        x = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(pooled)
