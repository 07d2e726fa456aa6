"""A user's own TorchServe, for the tests that attach to one: their model and plain
``BaseHandler`` archived with ``torch-model-archiver``, their ``config.properties`` (token
auth on, the plugin on ``plugins_path``), started with ``torchserve --start`` from their own
folder and stopped with ``torchserve --stop``. Shared by the attach, user-traffic and wheel
tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tsadapt.client import KeyFile, TorchServeClient
from tsadapt.experiments.foreign_model import MODEL_PY, archive_sources, write_sources
from tsadapt.plugin.build import plugins_path
from tsadapt.serve.attach import read_properties
from tsadapt.serve.server import free_ports

#: Seconds a user's server may take to start with its first model's worker READY.
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class UserServer:
    """What a user has: a folder, their config.properties, the key file TorchServe wrote."""

    home: Path
    config: Path
    key_file: Path
    env: dict[str, str]
    client: TorchServeClient

    def attach(self) -> list[str]:
        return ["--ts-config", str(self.config), "--key-file", str(self.key_file)]


def write_user_files(
    home: Path,
    models: tuple[str, ...],
    model_py: str = MODEL_PY,
    properties: str = "",
    plugins: Path | None = None,
) -> Path:
    """Write the model, handler and seeded weights a user would, archive one ``.mar`` per
    name in ``models`` (the same network each), and write ``conf/config.properties`` on free
    loopback ports that loads the first; ``properties`` are extra lines. Returns the config."""
    write_sources(home, model_py)
    store = home / "model-store"
    store.mkdir()
    for name in models:
        archive_sources(home, store, name)
    # in a folder of its own: key_file.json lands where TorchServe starts, not next to it
    config = home / "conf" / "config.properties"
    config.parent.mkdir()
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    config.write_text(
        f"inference_address=http://127.0.0.1:{inference}\n"
        f"management_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\n"
        "grpc_inference_address=127.0.0.1\ngrpc_management_address=127.0.0.1\n"
        f"grpc_inference_port={grpc_inference}\ngrpc_management_port={grpc_management}\n"
        f"model_store={store}\nload_models={models[0]}.mar\n{properties}"
        f"enable_model_api=true\nplugins_path={plugins or plugins_path()}\n"
    )
    return config


def torchserve_cmd(env: dict[str, str], home: Path, *args: str) -> int:
    """``torchserve ARGS`` from the user's folder; output to a file (the JVM keeps it open)."""
    cmd = [str(Path(sys.executable).parent / "torchserve"), *args]
    with (home / "torchserve.out").open("a") as out:
        return subprocess.run(
            cmd, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=60
        ).returncode


@contextmanager
def user_torchserve(
    home: Path, config: Path, model: str, env: dict[str, str] | None = None
) -> Iterator[UserServer]:
    """``torchserve --start --ts-config <config relative to home>`` as a user types it, until
    ``model`` has a READY worker; ``torchserve --stop`` after. ``env`` adds to the
    environment; TMPDIR is the user's own (TorchServe's pid file lives there, so the server
    runs beside others) and the logs stay in ``home/logs``."""
    (home / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "TMPDIR": str(home / "tmp"),
        "LOG_LOCATION": str(home / "logs"),
        **(env or {}),
    }
    try:
        relative = str(config.relative_to(home))  # as a user types it, from their folder
        started = torchserve_cmd(env, home, "--start", "--ts-config", relative, "--ncs")
        assert started == 0, (home / "torchserve.out").read_text()
        key_file, client = home / "key_file.json", None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if key_file.is_file():
                props = read_properties(config)
                try:
                    client = TorchServeClient(
                        props["inference_address"], props["management_address"], KeyFile(key_file)
                    )
                    workers = client.describe(model)["workers"]
                    if workers and workers[0]["status"] == "READY":
                        break
                except Exception:  # noqa: BLE001 - still starting
                    pass
            time.sleep(0.5)
        else:
            pytest.fail(f"TorchServe did not start: {(home / 'torchserve.out').read_text()}")
        assert client is not None
        yield UserServer(home, config, key_file, env, client)
    finally:
        torchserve_cmd(env, home, "--stop")
