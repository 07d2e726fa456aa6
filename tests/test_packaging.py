"""Packaging: the wheel's build_py compiles the frontend plugin into the package (prebuilt jar),
so a user with only a Java runtime can load it; ``tsadapt plugin path`` names the folder."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tsadapt.plugin.build import JAR_NAME, PREBUILT_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_build_py_ships_a_prebuilt_plugin_jar(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    jar = tmp_path / "lib" / "tsadapt" / "plugin" / PREBUILT_DIR / JAR_NAME
    names = set(zipfile.ZipFile(jar).namelist())
    assert "org/tsadapt/plugin/AdaptEndpoint.class" in names
    assert "org/tsadapt/plugin/BatchTap.class" in names
    assert "META-INF/services/org.pytorch.serve.servingsdk.ModelServerEndpoint" in names
    # the folder holds nothing else TorchServe would put on its classpath
    assert sorted(p.suffix for p in jar.parent.iterdir()) == [".jar", ".sha256"]


def test_plugin_path_prints_a_folder_with_the_jar() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tsadapt.cli", "plugin", "path"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (Path(done.stdout.strip()) / JAR_NAME).is_file()
