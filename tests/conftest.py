"""Shared fixtures: one real TorchServe per test session, on free loopback ports.

Every integration test reuses ``torchserve``: the demo models archived into a temp model
store, the tsadapt frontend plugin loaded, token auth ON (as users run it), and the server
stopped with its whole process tree at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tsadapt.client import KeyFile, TorchServeClient
from tsadapt.serve.archive import archive_all
from tsadapt.serve.server import RunningServer, ServerConfig, start, stop


@dataclass(frozen=True)
class LiveServer:
    """A running TorchServe for tests."""

    server: RunningServer
    config: ServerConfig
    client: TorchServeClient

    @property
    def inference_url(self) -> str:
        return self.server.inference_url

    @property
    def management_url(self) -> str:
        return self.server.management_url

    @property
    def metrics_url(self) -> str:
        return self.server.metrics_url

    @property
    def workdir(self) -> Path:
        return Path(self.server.workdir)

    @property
    def keys(self) -> KeyFile:
        return self.client.keys


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models' .mar files, built once per session."""
    store = tmp_path_factory.mktemp("model-store")
    archive_all(store)
    return store


@pytest.fixture
def runs_dir(tmp_path: Path, model_store: Path) -> Path:
    """A fresh runs folder for ``tsadapt lab bench``/``fidelity`` whose model store is the
    session's (they archive into ``<runs>/model-store`` otherwise)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "model-store").symlink_to(model_store)
    return runs


@pytest.fixture(scope="session")
def torchserve_session(
    tmp_path_factory: pytest.TempPathFactory, model_store: Path
) -> Iterator[LiveServer]:
    """One TorchServe with the demo models for the whole session."""
    config = ServerConfig.with_free_ports(
        workdir=tmp_path_factory.mktemp("torchserve"), model_store=model_store
    )
    server = start(config)
    try:
        yield LiveServer(server, config, server.client(timeout_s=60))
    finally:
        stop(config.workdir)


@pytest.fixture
def torchserve(torchserve_session: LiveServer) -> Iterator[LiveServer]:
    """The session's TorchServe; after the test, each demo model still registered gets its
    registration batch size and delay back (a controller a test ran may have changed them),
    so no test sees another's settings."""
    yield torchserve_session
    from tsadapt.handlers.catalog import DEMO_MODELS
    from tsadapt.plugin.adapt_client import AdaptClient

    adapt = AdaptClient(torchserve_session.client)
    registered = set(torchserve_session.client.list_models())
    for name, model in DEMO_MODELS.items():
        if name in registered:
            adapt.set_batching(name, model.batch_size, model.max_batch_delay_ms)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
