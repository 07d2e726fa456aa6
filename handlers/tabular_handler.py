"""Handler of the ``tabular`` demo model: ``{"features": [16 floats]}``."""

from __future__ import annotations

from typing import Any

import torch

from tsadapt.handlers.base import AdaptiveHandler, numeric_tensor, require_field
from tsadapt.handlers.models.tabular_mlp import NUM_FEATURES


class TabularHandler(AdaptiveHandler):
    """Classifies one row of 16 numeric features per request."""

    def parse_request(self, body: dict[str, Any]) -> torch.Tensor:
        return numeric_tensor(
            require_field(body, "features"), "features", (NUM_FEATURES,), self.check_booleans
        )

    def warmup_input(self) -> torch.Tensor:
        return torch.zeros(NUM_FEATURES)
