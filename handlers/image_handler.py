"""Handler of the ``image`` demo model: ``{"image": [[[...64 floats] x64] x3]}``."""

from __future__ import annotations

from typing import Any

import torch

from tsadapt.handlers.base import AdaptiveHandler, numeric_tensor, require_field

IMAGE_SHAPE = (3, 64, 64)


class ImageHandler(AdaptiveHandler):
    """Classifies one 3x64x64 float image (channels first) per request."""

    def parse_request(self, body: dict[str, Any]) -> torch.Tensor:
        return numeric_tensor(
            require_field(body, "image"), "image", IMAGE_SHAPE, self.check_booleans
        )

    def warmup_input(self) -> torch.Tensor:
        return torch.full(IMAGE_SHAPE, 0.5)
