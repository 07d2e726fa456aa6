"""Run a demo handler in this process, with TorchServe's own ``Context`` and no server.

The model is loaded exactly as a worker loads it from its ``.mar`` (model file and seeded
weights in a model dir, ``BaseHandler.initialize``); used by the handler tests and by the
batch-latency profiles.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from tsadapt.handlers.base import AdaptiveHandler
from tsadapt.handlers.catalog import DemoModel


@dataclass
class LocalHandler:
    """An initialised handler and the TorchServe context it runs with."""

    handler: AdaptiveHandler
    context: Context

    def run(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Handle one batch of raw TorchServe requests (``{"body": ...}`` dicts)."""
        self.context.request_processor = [RequestProcessor({}) for _ in requests]
        self.context.metrics.request_ids = {i: f"req-{i}" for i in range(len(requests))}
        return self.handler.handle(requests, self.context)

    def status(self, idx: int) -> int:
        return self.context.get_response_status(idx)[0]

    def header(self, idx: int, key: str) -> str | None:
        return self.context.get_response_headers(idx).get(key)


def load_local(model: DemoModel, model_dir: Path, gpu_id: int | None = None) -> LocalHandler:
    """Lay out ``model``'s artifacts in ``model_dir`` as a worker would, then initialise."""
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.build().state_dict(), model_dir / f"{model.name}.pt")
    shutil.copy(model.model_file, model_dir / model.model_file.name)
    if str(model_dir) not in sys.path:
        sys.path.insert(0, str(model_dir))
    manifest = {
        "model": {
            "modelName": model.name,
            "modelFile": model.model_file.name,
            "serializedFile": f"{model.name}.pt",
            "handler": model.handler_file.name,
        }
    }
    metrics_yaml = resources.files("tsadapt.configs").joinpath("metrics.yaml")
    context = Context(
        model.name,
        str(model_dir),
        manifest,
        model.batch_size,
        gpu_id,
        "0.12.0",
        metrics=MetricsCacheYamlImpl(config_file_path=str(metrics_yaml)),
        model_yaml_config=model.model_config(),
    )
    context.metrics.model_name = model.name
    module = importlib.import_module(f"tsadapt.handlers.{model.handler_module}")
    handler_class = next(
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, AdaptiveHandler)
        and obj.__module__ == module.__name__
    )
    handler = handler_class()
    handler.initialize(context)
    return LocalHandler(handler, context)
