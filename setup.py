"""Packaging hook: ship the frontend plugin prebuilt, so a user needs only a Java runtime.

``build_py`` compiles ``plugin/java`` (``plugin/build.py``) against the pinned TorchServe's
``model-server.jar`` into ``tsadapt/plugin/prebuilt/`` of the wheel. Without a JDK or
TorchServe in the build environment the wheel is built without it (a warning says so) and
``tsadapt plugin path`` builds the jar on first use instead; set
``TSADAPT_REQUIRE_PREBUILT_JAR=1`` to make that an error.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _build_module():
    spec = importlib.util.spec_from_file_location("_tsadapt_plugin_build", HERE / "plugin/build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithPlugin(build_py):
    """``build_py`` plus the compiled plugin jar."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # a checkout builds plugin/build/ itself (make install)
            return
        build = _build_module()
        out = Path(self.build_lib) / "tsadapt" / "plugin" / build.PREBUILT_DIR
        try:
            build.build_plugin(out, force=True)
        except build.PluginBuildError as exc:
            if os.environ.get("TSADAPT_REQUIRE_PREBUILT_JAR") == "1":
                raise
            self.warn(f"wheel without a prebuilt plugin jar: {exc}")


setup(cmdclass={"build_py": BuildPyWithPlugin})
