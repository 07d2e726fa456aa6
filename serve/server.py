"""Start, stop and inspect a real TorchServe with the demo models (``tsadapt lab serve``).

One code path for the demo, the tests and CI: :func:`start` writes ``config.properties``
from ``configs/config.properties.template``, launches ``torchserve --foreground`` in its
own process group (with ``TMPDIR`` inside the work dir: TorchServe keeps a global pid
file in the temp dir, so this is what lets several servers run side by side), waits until
it answers, registers the models through the management API and records the running
server in ``<workdir>/tsadapt-server.json``. :func:`stop` ends the whole process tree.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import psutil

from tsadapt import constants as C
from tsadapt.client import KeyFile, TorchServeClient, TorchServeError
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.handlers.placement import PLACEMENT_DIR_ENV, PLACEMENT_SUBDIR

logger = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """TorchServe could not be started, reached or stopped; the message says why."""


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on loopback right now: every socket stays bound until all
    are chosen (ports picked one after the other can repeat: the kernel may hand the one
    just released out again, and a server then refuses the equal pair)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind((C.LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in socks]


@dataclass(frozen=True)
class ServerConfig:
    """Everything needed to start one TorchServe; derived paths are properties."""

    workdir: Path = C.DEFAULT_WORKDIR
    model_store: Path | None = None  # default: <workdir>/model-store
    inference_port: int = C.DEFAULT_INFERENCE_PORT
    management_port: int = C.DEFAULT_MANAGEMENT_PORT
    metrics_port: int = C.DEFAULT_METRICS_PORT
    grpc_inference_port: int = C.DEFAULT_GRPC_INFERENCE_PORT
    grpc_management_port: int = C.DEFAULT_GRPC_MANAGEMENT_PORT
    auth: bool = True
    plugin: bool = True
    models: tuple[str, ...] = tuple(DEMO_MODELS)
    workers: dict[str, int] = field(default_factory=dict)  # per-model initial workers
    #: Environment of TorchServe and its workers, over the defaults (``start``).
    env: tuple[tuple[str, str], ...] = ()
    #: Lines added to ``config.properties`` (``key=value``), e.g. Netty thread counts.
    properties: tuple[tuple[str, str], ...] = ()
    job_queue_size: int = C.DEFAULT_JOB_QUEUE_SIZE
    token_expiration_min: int | None = None  # TorchServe's default (60) when None
    startup_timeout_s: float = C.STARTUP_TIMEOUT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "workdir", Path(self.workdir).resolve())
        store = Path(self.model_store) if self.model_store else self.workdir / "model-store"
        object.__setattr__(self, "model_store", store.resolve())
        unknown = [m for m in self.models if m not in DEMO_MODELS]
        if unknown:
            raise ValueError(f"models: unknown {unknown}; known: {list(DEMO_MODELS)}")
        ports = self.ports()
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"ports must differ: {ports}")
        if self.job_queue_size < 1:
            raise ValueError("job_queue_size must be >= 1")
        if self.token_expiration_min is not None and self.token_expiration_min < 1:
            raise ValueError("token_expiration_min must be >= 1")
        for what, pairs in (("env", self.env), ("properties", self.properties)):
            for key, value in pairs:
                if not key or any(c in key for c in "=:\n ") or "\n" in str(value):
                    raise ValueError(f"{what}: bad entry {key!r}={value!r}")

    @classmethod
    def with_free_ports(cls, **kwargs: Any) -> ServerConfig:
        names = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
        ports = free_ports(len(names))
        return cls(**{f"{n}_port": p for n, p in zip(names, ports, strict=True)}, **kwargs)

    def ports(self) -> dict[str, int]:
        return {
            "inference": self.inference_port,
            "management": self.management_port,
            "metrics": self.metrics_port,
            "grpc_inference": self.grpc_inference_port,
            "grpc_management": self.grpc_management_port,
        }

    @property
    def inference_url(self) -> str:
        return f"http://{C.LOOPBACK}:{self.inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://{C.LOOPBACK}:{self.management_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{C.LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def key_file(self) -> Path:
        return self.workdir / C.KEY_FILE

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"


@dataclass(frozen=True)
class RunningServer:
    """A started server, as recorded in ``<workdir>/tsadapt-server.json``."""

    pid: int
    workdir: str
    inference_url: str
    management_url: str
    metrics_url: str
    key_file: str | None
    plugins_path: str | None
    models: list[str]

    def keys(self) -> KeyFile:
        return KeyFile(self.key_file)

    def client(self, timeout_s: float = 30.0) -> TorchServeClient:
        return TorchServeClient(self.inference_url, self.management_url, self.keys(), timeout_s)

    @classmethod
    def load(cls, workdir: Path) -> RunningServer:
        path = Path(workdir) / C.SERVER_STATE_FILE
        if not path.exists():
            raise ServerError(f"no server recorded in {Path(workdir).resolve()} (not started?)")
        return cls(**json.loads(path.read_text()))


def render_config(config: ServerConfig, plugins_path: Path | None) -> str:
    """``config.properties`` for ``config``, from the template in ``configs/``."""
    template = resources.files("tsadapt.configs").joinpath("config.properties.template")
    metrics = resources.files("tsadapt.configs").joinpath("metrics.yaml")
    return (
        string.Template(template.read_text()).substitute(
            **{f"{name}_port": port for name, port in config.ports().items()},
            model_store=config.model_store,
            disable_token_authorization=str(not config.auth).lower(),
            metrics_config=str(metrics),
            plugins_path=plugins_path or "",
            job_queue_size=config.job_queue_size,
        )
        + (
            f"token_expiration_min={config.token_expiration_min}\n"
            if config.token_expiration_min is not None
            else ""
        )
        + "".join(f"{key}={value}\n" for key, value in config.properties)
    )


def _torchserve_command() -> list[str]:
    beside = Path(sys.executable).parent / "torchserve"
    exe = str(beside) if beside.exists() else shutil.which("torchserve")
    if exe is None:
        raise ServerError("the 'torchserve' command is not installed (pip install torchserve)")
    return [exe]


def _plugin_dir() -> Path:
    from tsadapt.plugin.build import plugins_path

    return plugins_path()


def _is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start(config: ServerConfig) -> RunningServer:
    """Start TorchServe, wait until it answers and register the models; return it."""
    state_path = config.workdir / C.SERVER_STATE_FILE
    if state_path.exists():
        previous = RunningServer.load(config.workdir)
        if _is_running(previous.pid):
            raise ServerError(
                f"a server is already running from {config.workdir} (pid {previous.pid}); "
                "run 'tsadapt lab serve stop' first"
            )
        state_path.unlink()
    for name, port in config.ports().items():
        with socket.socket() as sock:
            if sock.connect_ex((C.LOOPBACK, port)) == 0:
                raise ServerError(f"{name} port {port} is already in use on {C.LOOPBACK}")

    from tsadapt.serve.archive import archive_all

    missing = [m for m in config.models if not (config.model_store / f"{m}.mar").exists()]
    if missing:
        archive_all(config.model_store, missing)

    plugins_path = _plugin_dir() if config.plugin else None
    (config.workdir / "tmp").mkdir(parents=True, exist_ok=True)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    config.key_file.unlink(missing_ok=True)
    properties = config.workdir / "config.properties"
    properties.write_text(render_config(config, plugins_path))

    env = {
        **os.environ,
        "TMPDIR": str(config.workdir / "tmp"),
        "LOG_LOCATION": str(config.log_dir),
        "METRICS_LOCATION": str(config.log_dir),
        # Workers read their Packrat placement (threads, cores) from here at batch boundaries.
        PLACEMENT_DIR_ENV: str(config.workdir / PLACEMENT_SUBDIR),
        **dict(config.env),
    }
    cmd = [
        *_torchserve_command(),
        "--start",
        "--foreground",
        "--ts-config",
        str(properties),
        "--model-store",
        str(config.model_store),
    ]
    out = open(config.log_dir / "torchserve.out", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        cmd,
        cwd=config.workdir,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    server = RunningServer(
        pid=proc.pid,
        workdir=str(config.workdir),
        inference_url=config.inference_url,
        management_url=config.management_url,
        metrics_url=config.metrics_url,
        key_file=str(config.key_file) if config.auth else None,
        plugins_path=str(plugins_path) if plugins_path else None,
        models=list(config.models),
    )
    state_path.write_text(json.dumps(asdict(server), indent=2))
    try:
        _wait_healthy(server, proc, config)
        client = server.client(timeout_s=config.startup_timeout_s)
        for name in config.models:
            register(client, name, workers=config.workers.get(name))
    except BaseException:
        stop(config.workdir)
        raise
    return server


def _wait_healthy(server: RunningServer, proc: subprocess.Popen, config: ServerConfig) -> None:
    deadline = time.monotonic() + config.startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(
                f"TorchServe exited with code {proc.returncode} during start; "
                f"see {config.log_dir / 'torchserve.out'}"
            )
        if (not config.auth or _key_file_complete(config.key_file)) and server.client(2).ping():
            return
        time.sleep(0.3)
    raise ServerError(f"TorchServe did not answer within {config.startup_timeout_s:.0f} s")


def _key_file_complete(path: Path) -> bool:
    try:
        return "management" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def register(client: TorchServeClient, name: str, workers: int | None = None) -> None:
    """Register ``<name>.mar`` with its model-config defaults and wait for its workers."""
    model = DEMO_MODELS[name]
    initial = workers if workers is not None else model.min_workers
    try:
        client.checked(
            "management",
            "POST",
            "models",
            params={
                "url": f"{name}.mar",
                "model_name": name,
                "batch_size": model.batch_size,
                "max_batch_delay": model.max_batch_delay_ms,
                "initial_workers": initial,
                "synchronous": "true",
            },
        )
    except TorchServeError as exc:
        raise ServerError(f"registering model '{name}' failed: {exc}") from exc
    logger.info("registered %s (%d worker(s))", name, initial)


def stop(workdir: Path, timeout_s: float = C.STOP_TIMEOUT_S) -> bool:
    """Stop the server recorded in ``workdir`` and every process it started.

    Returns False when no server was running there.
    """
    state_path = Path(workdir) / C.SERVER_STATE_FILE
    if not state_path.exists():
        return False
    server = RunningServer.load(workdir)
    procs = _process_tree(server.pid)
    # TorchServe's own pid file names the Java frontend: it is there even if the
    # ``torchserve --foreground`` wrapper died and the frontend was re-parented.
    java_pid_file = Path(workdir) / "tmp" / ".model_server.pid"
    if java_pid_file.exists():
        try:
            java_pid = int(java_pid_file.read_text().split()[0])
        except (ValueError, IndexError):
            java_pid = None
        if java_pid and all(p.pid != java_pid for p in procs) and _is_our_frontend(java_pid):
            procs += _process_tree(java_pid)
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    state_path.unlink(missing_ok=True)
    return bool(procs)


def _process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _is_our_frontend(pid: int) -> bool:
    try:
        return "org.pytorch.serve.ModelServer" in psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def status(workdir: Path) -> dict[str, Any]:
    """Models, workers, batch settings and queue depth of the server in ``workdir``."""
    server = RunningServer.load(workdir)
    if not _is_running(server.pid):
        raise ServerError(f"the server recorded in {workdir} (pid {server.pid}) is not running")
    return {"server": asdict(server), "models": models_status(server.client(timeout_s=10))}


def models_status(client: TorchServeClient) -> list[dict[str, Any]]:
    """Per registered model: batching, workers (with pids) and queue depth."""
    models = []
    for name in client.list_models():
        info = client.describe(name)
        models.append(
            {
                "model": name,
                "version": info.get("modelVersion"),
                "batch_size": info.get("batchSize"),
                "max_batch_delay_ms": info.get("maxBatchDelay"),
                "min_workers": info.get("minWorkers"),
                "max_workers": info.get("maxWorkers"),
                "workers": [
                    {"id": w.get("id"), "pid": w.get("pid"), "status": w.get("status")}
                    for w in info.get("workers", [])
                ],
                "queue_depth": info.get("jobQueueStatus", {}).get("pendingRequests"),
            }
        )
    return models
