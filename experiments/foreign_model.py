"""A model that is not ours: a small MLP behind a plain TorchServe ``BaseHandler`` (no tsadapt
import, no batch metrics), archived with ``torch-model-archiver`` as a user would.

The soak and the reliability runs serve it beside the demo models, so the controller is
exercised on a handler it knows nothing about.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Registered name of the foreign model and its input width.
NAME = "usermlp"
FEATURES = 32
#: Its SLO in the soak and reliability controller configs (ms).
SLO_MS = 100.0

MODEL_PY = f"""import torch


class UserMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear({FEATURES}, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4)
        )

    def forward(self, x):
        return self.net(x)
"""
HANDLER_PY = """import json

import torch
from ts.torch_handler.base_handler import BaseHandler


class UserHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for request in data:
            body = request.get("body") or request.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            rows.append(torch.tensor(body["x"], dtype=torch.float32))
        return torch.stack(rows)

    def postprocess(self, data):
        return data.argmax(dim=1).tolist()
"""
#: Registration defaults: batch 1, no wait, one worker.
MODEL_CONFIG = "batchSize: 1\nmaxBatchDelay: 0\nminWorkers: 1\nmaxWorkers: 1\n"


def payload(i: int) -> dict[str, Any]:
    """A valid request body (deterministic in ``i``)."""
    return {"x": [((i * 7 + j) % 13) / 13.0 for j in range(FEATURES)]}


def write_sources(src: Path, model_py: str = MODEL_PY) -> None:
    """Write what a user writes into ``src``: ``model.py`` (``model_py``, a ``UserMLP``), the
    plain ``BaseHandler``, the registration's ``model-config.yaml`` and seeded weights
    (``weights.pt``)."""
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.py").write_text(model_py)
    (src / "handler.py").write_text(HANDLER_PY)
    (src / "model-config.yaml").write_text(MODEL_CONFIG)
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); from model import UserMLP; "
        "torch.manual_seed(0); torch.save(UserMLP().state_dict(), sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, str(src), str(src / "weights.pt")], check=True)


def archive_sources(src: Path, store: Path, name: str) -> Path:
    """``torch-model-archiver`` over :func:`write_sources`' files, as a user runs it:
    ``store/<name>.mar``."""
    subprocess.run(
        [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name", name, "--version", "1.0",
            "--model-file", str(src / "model.py"),
            "--serialized-file", str(src / "weights.pt"),
            "--handler", str(src / "handler.py"),
            "--config-file", str(src / "model-config.yaml"),
            "--export-path", str(store), "--force",
        ],
        check=True,
        env={**os.environ, "TMPDIR": str(src)},  # the archiver stages in <temp dir>/<name>
    )  # fmt: skip
    return store / f"{name}.mar"


def build_archive(store: Path, name: str = NAME) -> Path:
    """Write the model, handler and seeded weights to ``store/<name>-src`` and archive
    ``store/<name>.mar``; return the archive (rebuilt only when missing)."""
    store = Path(store)
    mar = store / f"{name}.mar"
    if mar.is_file():
        return mar
    src = store / f"{name}-src"
    write_sources(src)
    return archive_sources(src, store, name)


def register(client: Any, name: str = NAME, workers: int = 1) -> None:  # noqa: ANN401 - client
    """Register ``<name>.mar`` (already in the server's model store) and wait for its workers."""
    client.checked(
        "management",
        "POST",
        "models",
        params={"url": f"{name}.mar", "initial_workers": workers, "synchronous": "true"},
    )
