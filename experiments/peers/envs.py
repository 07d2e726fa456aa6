"""Each peer in its own virtual environment: ``.venv-peers/<peer>``.

Ray Serve and BentoML cannot share one environment: Ray 2.x pins its OpenTelemetry
exporter to ``opentelemetry-sdk~=X.Y.Z`` while BentoML 1.4's instrumentation packages pull an
older SDK, and ``pip check`` then fails. So ``make install-peers`` (``python -m
tsadapt.experiments.peers.envs install``) makes one venv per peer that holds the peer's own
packages and, after them on ``sys.path``, the project's environment (torch, TorchServe's
``ts`` package and this project, for the handlers): a ``.pth`` file that calls
``site.addsitedir`` on each of the project's site-packages folders. The peer's own packages
win where both have one. The requirements are the project's ``peer-<name>`` extras
(``setup.cfg``), read from the installed metadata, so they are stated once.

The bench runs a peer's server with that venv's Python (:func:`peer_python`); where no venv
exists it falls back to the bench's own interpreter if the peer's package imports there.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

#: Folder of the peers' venvs (``TSADAPT_PEER_VENVS`` overrides it).
DEFAULT_ROOT = Path(".venv-peers")
#: The module each peer's server needs (checked before a run).
PEER_MODULES = {"rayserve": "ray.serve", "bentoml": "bentoml"}
#: The distribution that declares the extras.
DIST = "torchserve-adapt"
PTH_NAME = "zz_tsadapt_project.pth"
#: ``setup.cfg`` of a source checkout (this file is experiments/peers/envs.py in it).
SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def root() -> Path:
    return Path(os.environ.get("TSADAPT_PEER_VENVS", str(DEFAULT_ROOT)))


def venv_dir(peer: str) -> Path:
    return root() / peer


def requirements(peer: str) -> list[str]:
    """The ``peer-<peer>`` extra's requirements: from ``setup.cfg`` in a source checkout
    (an editable install's metadata may predate it), else the installed metadata."""
    extra = f"peer-{peer}"
    out: list[str] = []
    if SETUP_CFG.is_file():
        cfg = configparser.ConfigParser()
        cfg.read(SETUP_CFG)
        value = cfg.get("options.extras_require", extra, fallback="")
        out = [r.strip() for r in value.splitlines() if r.strip() and not r.startswith("#")]
    for line in [] if out else importlib.metadata.requires(DIST) or []:
        req, _, marker = line.partition(";")
        if marker and extra in marker.replace("'", '"').split('"'):
            out.append(req.strip())
    if not out:
        raise ValueError(f"peers: no extra {extra!r} in {DIST}'s metadata (reinstall the project)")
    return out


def _has_module(python: Path, module: str) -> bool:
    code = f"import importlib.util,sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


def peer_python(peer: str) -> tuple[Path | None, str]:
    """(Python that runs ``peer``'s server, where it comes from) or (None, why not)."""
    module = PEER_MODULES[peer]
    own = venv_dir(peer) / "bin" / "python"
    if own.is_file() and _has_module(own, module):
        return own, f"its own venv `{venv_dir(peer)}`"
    if importlib.util.find_spec(module.split(".")[0]) is not None:
        return Path(sys.executable), "the bench's own environment"
    return None, f"{peer} is not installed: run `make install-peers` (creates {venv_dir(peer)})"


def project_site_dirs() -> list[str]:
    """The site-packages folders of this (the project's) interpreter, in order."""
    return [p for p in sys.path if p.rstrip("/").endswith("site-packages") and Path(p).is_dir()]


def install(peer: str, quiet: bool = True) -> Path:
    """Create (or update) ``.venv-peers/<peer>`` with the peer's requirements."""
    target = venv_dir(peer)
    python = target / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    lines = [f"import site; site.addsitedir({d!r})" for d in project_site_dirs()]
    (Path(site) / PTH_NAME).write_text("\n".join(lines) + "\n")
    cmd = [str(python), "-m", "pip", "install", *(["--quiet"] if quiet else []),
           *requirements(peer)]  # fmt: skip
    subprocess.run(cmd, check=True)
    subprocess.run([str(python), "-m", "pip", "check"], check=False)
    if not _has_module(python, PEER_MODULES[peer]):
        raise RuntimeError(f"{peer}: {PEER_MODULES[peer]} does not import in {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    from tsadapt.experiments.peers import PEERS

    p = argparse.ArgumentParser(description="one virtual environment per bench peer")
    p.add_argument("action", choices=["install", "where"])
    p.add_argument("peers", nargs="*", default=list(PEERS))
    a = p.parse_args(argv)
    for peer in a.peers:
        if peer not in PEER_MODULES:
            p.error(f"unknown peer {peer!r}; known: {', '.join(PEER_MODULES)}")
        if a.action == "install":
            print(f"{peer}: {install(peer)}", flush=True)
        else:
            python, where = peer_python(peer)
            print(f"{peer}: {python or '-'} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
