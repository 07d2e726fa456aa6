"""The demo model catalog: what each model is, how it is archived and what a request looks like.

One place that the archiver, the server lifecycle, the demo, the profiler, the load tests
and the tests all read, so they always agree on names, files and payloads.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

HANDLERS_DIR = Path(__file__).resolve().parent
MODELS_DIR = HANDLERS_DIR / "models"


@dataclass(frozen=True)
class DemoModel:
    """One demo model and its registration defaults (TorchServe ``model-config.yaml``)."""

    name: str
    model_module: str  # under tsadapt.handlers.models; the file defines one nn.Module
    model_class: str
    handler_module: str  # under tsadapt.handlers; the file defines one handler class
    seed: int
    batch_size: int
    max_batch_delay_ms: int
    min_workers: int = 1
    max_workers: int = 1
    job_queue_size: int = 100
    response_timeout_s: int = 120
    # Intra-op threads per worker (the handler calls torch.set_num_threads). One per worker:
    # with torch's default (one thread per core) in every worker, workers that batch at the
    # same time oversubscribe the cores and OpenMP barrier stalls stretch a 20 ms batch to
    # hundreds of ms (docs/results/fidelity.md, 2026-11-23 run); a Packrat placement overrides it.
    intra_op_threads: int = 1
    description: str = ""

    @property
    def model_file(self) -> Path:
        return MODELS_DIR / f"{self.model_module}.py"

    @property
    def handler_file(self) -> Path:
        return HANDLERS_DIR / f"{self.handler_module}.py"

    def build(self) -> nn.Module:
        """The model with its seeded random weights (the same on every machine)."""
        import torch

        module = importlib.import_module(f"tsadapt.handlers.models.{self.model_module}")
        torch.manual_seed(self.seed)
        model = getattr(module, self.model_class)()
        return model.eval()

    def model_config(self) -> dict[str, Any]:
        """The archive's ``model-config.yaml``."""
        return {
            "minWorkers": self.min_workers,
            "maxWorkers": self.max_workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
            "jobQueueSize": self.job_queue_size,
            "handler": {"threads": self.intra_op_threads},
        }

    def example(self, rng: np.random.Generator) -> dict[str, Any]:
        """One valid request body."""
        return EXAMPLES[self.name](rng)

    def worker_request(self, rng: np.random.Generator) -> dict[str, bytes]:
        """One valid request as a TorchServe worker receives it: the body as JSON bytes
        (decoding them is part of the handler's cost: ~2 ms for the image model's 85 kB)."""
        return {"body": json.dumps(self.example(rng)).encode()}


def _image(rng: np.random.Generator) -> dict[str, Any]:
    return {"image": np.round(rng.random((3, 64, 64)), 3).tolist()}


def _text(rng: np.random.Generator) -> dict[str, Any]:
    from tsadapt.handlers.models.text_encoder import VOCAB_SIZE

    length = int(rng.integers(16, 65))
    return {"tokens": rng.integers(1, VOCAB_SIZE, size=length).tolist()}


def _tabular(rng: np.random.Generator) -> dict[str, Any]:
    return {"features": np.round(rng.normal(size=16), 4).tolist()}


EXAMPLES = {"image": _image, "text": _text, "tabular": _tabular}

DEMO_MODELS: dict[str, DemoModel] = {
    m.name: m
    for m in (
        DemoModel(
            "image",
            "image_cnn",
            "ImageCNN",
            "image_handler",
            seed=11,
            batch_size=8,
            max_batch_delay_ms=20,
            description="ResNet-style CNN, 3x64x64 image -> 10 classes",
        ),
        DemoModel(
            "text",
            "text_encoder",
            "TextEncoder",
            "text_handler",
            seed=12,
            batch_size=8,
            max_batch_delay_ms=10,
            description="2-layer transformer encoder, <=128 token ids -> 4 classes",
        ),
        DemoModel(
            "tabular",
            "tabular_mlp",
            "TabularMLP",
            "tabular_handler",
            seed=13,
            batch_size=16,
            max_batch_delay_ms=5,
            description="MLP, 16 features -> 3 classes",
        ),
    )
}


def demo_model(name: str) -> DemoModel:
    """The catalog entry for ``name``, or a clear error listing the known models."""
    try:
        return DEMO_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; known: {', '.join(DEMO_MODELS)}") from None
