"""The images of configs/kubernetes/images/Dockerfile: the build context copies every
package folder; the built sidecar carries no torch; the CA bundle given to the build is in no
layer and no history entry of either image.

The Dockerfile check runs anywhere; the image checks need podman and ``make images`` and
are skipped with the reason otherwise.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import k8s_pod

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "configs" / "kubernetes" / "images" / "Dockerfile"
IMAGES = [k8s_pod.SIDECAR_IMAGE, k8s_pod.TORCHSERVE_IMAGE]
PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.S)


def test_dockerfile_copies_every_package_folder() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    folders = {
        line.split("=")[1].strip().split("/")[0]
        for line in cfg["options"]["package_dir"].strip().splitlines()
    }
    copied = set(re.findall(r"^COPY (\S+?)(?:/\S*)? ", DOCKERFILE.read_text(), re.M))
    assert folders - copied == set()
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert folders - {p.lstrip("!").split("/")[0] for p in ignore if p.startswith("!")} == set()


def _image_or_skip(image: str) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman runc)")
    if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
        pytest.skip(f"{image} is not built (make images)")


def run_in(image: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    flags = k8s_pod.host_flags(image)
    return subprocess.run(
        ["podman", "run", "--rm", "--network", "none", *flags, image, *cmd],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.container
def test_sidecar_image_has_no_torch_and_runs_the_controller() -> None:
    _image_or_skip(k8s_pod.SIDECAR_IMAGE)
    probe = run_in(
        k8s_pod.SIDECAR_IMAGE, "python", "-c",
        "import importlib.util as u; print([m for m in ('torch', 'ts', 'gymnasium', "
        "'stable_baselines3') if u.find_spec(m)])",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
    assert run_in(k8s_pod.SIDECAR_IMAGE, "tsadapt", "control", "--help").returncode == 0


def _build_only_certificates(image: str, bundle: Path) -> set[str]:
    """Certificates of ``bundle`` (what the build trusted) that the image's own bundle lacks."""
    ours = run_in(image, "cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    return set(PEM.findall(bundle.read_text())) - set(PEM.findall(ours))


@pytest.mark.container
@pytest.mark.slow
@pytest.mark.parametrize("image", IMAGES)
def test_build_ca_bundle_is_in_no_layer_and_no_history(image: str) -> None:
    _image_or_skip(image)
    history = subprocess.run(
        ["podman", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "BEGIN CERTIFICATE" not in history
    assert "secrets/ca_bundle" not in run_in(image, "ls", "/run/secrets").stdout
    # what build-images.sh passes by default: $PIP_CERT, else the pip configuration's cert
    bundle = Path(
        os.environ.get("PIP_CERT")
        or subprocess.run(
            ["python3", "-m", "pip", "config", "get", "global.cert"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
        or "/nonexistent"
    )  # fmt: skip
    if not bundle.is_file():
        pytest.skip("this host's pip trusts no extra CA bundle: no build secret to look for")
    extra = _build_only_certificates(image, bundle)
    if not extra:
        pytest.skip(f"{bundle} holds no certificate beyond the image's own bundle")
    # a line of each extra certificate's body, searched for in every file of the image
    needles = [cert.splitlines()[1] for cert in extra]
    mount = subprocess.run(
        ["podman", "image", "mount", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        for needle in needles:
            hits = subprocess.run(
                ["grep", "-rlF", "--exclude-dir=proc", "--exclude-dir=sys", needle, mount],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            assert hits == "", hits
    finally:
        subprocess.run(["podman", "image", "unmount", image], capture_output=True, check=False)
