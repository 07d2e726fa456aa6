"""Build the demo models' ``.mar`` files with torch-model-archiver."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from tsadapt.constants import MODEL_VERSION
from tsadapt.handlers.catalog import DEMO_MODELS, DemoModel

logger = logging.getLogger(__name__)


def archive_model(model: DemoModel, model_store: Path) -> Path:
    """Write ``<model_store>/<name>.mar``: seeded weights, model file, handler, model-config."""
    model_store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"tsadapt-{model.name}-") as tmp:
        weights = Path(tmp) / f"{model.name}.pt"
        torch.save(model.build().state_dict(), weights)
        config = Path(tmp) / "model-config.yaml"
        config.write_text(yaml.safe_dump(model.model_config(), sort_keys=False))
        cmd = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            model.name,
            "--version",
            MODEL_VERSION,
            "--model-file",
            str(model.model_file),
            "--serialized-file",
            str(weights),
            "--handler",
            str(model.handler_file),
            "--config-file",
            str(config),
            "--export-path",
            str(model_store),
            "--force",
        ]
        # The archiver stages files in <temp dir>/<model name>: a temp dir of our own keeps
        # archives of the same model built at the same time (tests, users) apart.
        env = {**os.environ, "TMPDIR": tmp}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(
                f"torch-model-archiver failed for {model.name}: {result.stderr.strip()}"
            )
    path = model_store / f"{model.name}.mar"
    logger.info("archived %s -> %s (%.1f kB)", model.name, path, path.stat().st_size / 1024)
    return path


def archive_all(model_store: Path, names: list[str] | None = None) -> list[Path]:
    """Archive the named demo models (all by default)."""
    chosen = names or list(DEMO_MODELS)
    return [archive_model(DEMO_MODELS[n], model_store) for n in chosen]
