"""The wheel on its own: built with ``pip wheel --no-deps .``, installed with its base
dependencies only into a fresh virtual environment outside the checkout (no torch there), and
run against a user's own ``torchserve --start`` serving a plain ``BaseHandler`` MLP.

What a user of the sidecar gets: ``tsadapt plugin path`` (the prebuilt jar in the wheel),
``tsadapt status``, ``tsadapt control init`` and ``tsadapt control`` for a few ticks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_attach_server import MODEL
from user_server import UserServer, user_torchserve, write_user_files

from tsadapt.plugin.build import JAR_NAME
from tsadapt.sidecar.decision_log import read_log

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
#: What the extras bring and the base install must not (the sidecar imports none of them).
NOT_IN_BASE = ("torch", "gymnasium", "stable_baselines3", "locust", "matplotlib", "ts")
#: The most top-level commands ``tsadapt --help`` may list.
MAX_TOP_LEVEL = 8
TICKS = 3


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv (outside the repo) holding the wheel and its base dependencies only."""
    home = tmp_path_factory.mktemp("wheel")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(home)],
        cwd=home,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = home.glob("torchserve_adapt-*.whl")
    venv = home / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=home)
    assert made.returncode == 0, made.stderr
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], home)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    yield venv


def _clean_env() -> dict[str, str]:
    """The environment with nothing that points at the checkout or the test's venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _tsadapt(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([str(venv / "bin" / "tsadapt"), *args], cwd=cwd, env=_clean_env(), timeout=180)


def test_the_base_install_has_no_torch_and_runs_from_site_packages(
    base_venv: Path, tmp_path: Path
) -> None:
    probe = (
        "import importlib.util, json, tsadapt; print(json.dumps({'file': tsadapt.__file__, "
        f"'present': [m for m in {NOT_IN_BASE!r} if importlib.util.find_spec(m)]}}))"
    )
    done = _run([str(base_venv / "bin" / "python"), "-c", probe], tmp_path, _clean_env())
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert "site-packages" in info["file"] and not info["file"].startswith(str(ROOT))
    assert info["present"] == []  # torch and the other extras' stacks are not installed
    torch = _run([str(base_venv / "bin" / "python"), "-c", "import torch"], tmp_path, _clean_env())
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    top = _tsadapt(base_venv, tmp_path, "--help")
    assert top.returncode == 0, top.stderr
    listed = top.stdout.split("COMMAND ...", 1)[1].split("positional arguments:")[1]
    commands = re.findall(r"^    (\S+)", listed, flags=re.MULTILINE)
    assert 0 < len(commands) <= MAX_TOP_LEVEL and "lab" in commands, commands
    moved = _tsadapt(base_venv, tmp_path, "bench", "--scenario", "surge")
    assert moved.returncode == 2 and "moved: tsadapt bench -> tsadapt lab bench" in moved.stderr


@pytest.fixture(scope="module")
def wheel_server(base_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserServer]:
    """The user's TorchServe (run from this test's environment, which has torch), with the
    plugin folder the wheel's ``tsadapt plugin path`` prints."""
    home = tmp_path_factory.mktemp("wheel-user")
    path = _tsadapt(base_venv, home, "plugin", "path")
    assert path.returncode == 0, path.stderr
    folder = Path(path.stdout.strip())
    assert (folder / JAR_NAME).is_file() and str(folder).startswith(str(base_venv))
    config = write_user_files(home, (MODEL,), plugins=folder)
    with user_torchserve(home, config, MODEL) as server:
        yield server


def test_the_sidecar_from_the_wheel_controls_a_users_server(
    base_venv: Path, wheel_server: UserServer, tmp_path: Path
) -> None:
    attach = wheel_server.attach()
    status = _tsadapt(base_venv, tmp_path, "status", *attach, "--json")
    assert status.returncode == 0, status.stderr
    assert MODEL in {m["model"] for m in json.loads(status.stdout)["models"]}

    unasked = _tsadapt(base_venv, tmp_path, "control", "init", *attach)
    assert unasked.returncode == 2 and "--slo-ms" in unasked.stderr  # no SLO invented
    init = _tsadapt(base_venv, tmp_path, "control", "init", *attach, "--slo-ms", "200")
    assert init.returncode == 0, init.stderr
    config = yaml.safe_load(init.stdout)
    assert config["models"][MODEL]["slo_ms"] == 200
    assert config["models"][MODEL]["max_batch"] > 1  # batching is possible under it
    ctl = tmp_path / "controller.yaml"
    ctl.write_text(init.stdout)

    log = tmp_path / "decisions.jsonl"
    ran = _tsadapt(
        base_venv, tmp_path, "control", "--config", str(ctl), *attach,
        "--decision-log", str(log), "--metrics-port", "0", "--max-ticks", str(TICKS),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert f"controller stopped after {TICKS} tick(s)" in ran.stdout
    ticks = [r for r in read_log(log) if r.get("event") == "tick"]
    assert len(ticks) == TICKS and all(MODEL in r["settings"] for r in ticks)
