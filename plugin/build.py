"""Compile the TorchServe frontend plugin (``plugin/java``) into a jar.

The plugin needs no Gradle or Maven: ``javac --release 17 -cp model-server.jar`` and ``jar``.
:func:`build_plugin` returns the directory to put in TorchServe's ``plugins_path``; it
rebuilds only when the Java sources, the resources or the TorchServe jar changed.

Run ``python -m tsadapt.plugin.build [--out-dir DIR] [--force]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

JAVA_DIR = Path(__file__).resolve().parent / "java"
SRC_DIR = JAVA_DIR / "src"
RESOURCES_DIR = JAVA_DIR / "resources"
DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "build"
JAR_NAME = "tsadapt-plugin.jar"
STAMP_NAME = "tsadapt-plugin.sha256"
#: Folder (inside this package) of the jar a wheel ships, built at packaging time.
PREBUILT_DIR = "prebuilt"
#: The TorchServe the prebuilt jar is compiled against (setup.cfg pins it).
PINNED_TORCHSERVE = "0.12.0"
#: A folder holding a jar built elsewhere (a machine with no JDK): used as is, never rebuilt.
PREBUILT_ENV = "TSADAPT_PLUGIN_DIR"


class PluginBuildError(RuntimeError):
    """The plugin could not be built (no JDK, no TorchServe, or a compile error)."""


def model_server_jar() -> Path:
    """TorchServe's fat jar, which carries the plugin SDK, log4j2 and Gson."""
    try:
        import ts
    except ImportError as exc:
        raise PluginBuildError("torchserve is not installed (pip install torchserve)") from exc
    jar = Path(ts.__file__).resolve().parent / "frontend" / "model-server.jar"
    if not jar.is_file():
        raise PluginBuildError(f"TorchServe's frontend jar is missing: {jar}")
    return jar


def find_jdk_tool(name: str) -> str:
    """Path of a JDK tool (``javac``, ``jar``): ``$JAVA_HOME/bin`` first, then ``PATH``."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise PluginBuildError(
            f"'{name}' not found on PATH or in $JAVA_HOME/bin: building the TorchServe plugin "
            "needs a JDK 17+ (e.g. apt-get install openjdk-17-jdk-headless); a JRE is not enough"
        )
    return found


def _input_files() -> list[Path]:
    files = [p for base in (SRC_DIR, RESOURCES_DIR) for p in base.rglob("*") if p.is_file()]
    return sorted(files)


def source_hash(server_jar: Path) -> str:
    """SHA-256 over the plugin sources/resources and the identity of TorchServe's jar."""
    digest = hashlib.sha256()
    for path in _input_files():
        digest.update(str(path.relative_to(JAVA_DIR)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    stat = server_jar.stat()
    digest.update(f"{server_jar}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def _default_out_dir() -> Path:
    """``plugin/build`` in a checkout; a user cache dir when the package dir is read-only."""
    if _writable_dir(DEFAULT_OUT_DIR):
        return DEFAULT_OUT_DIR
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "tsadapt" / "plugin"


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PluginBuildError(
            f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{proc.stderr or proc.stdout}"
        )


def _compile(server_jar: Path, jar_out: Path) -> None:
    javac, jar_tool = find_jdk_tool("javac"), find_jdk_tool("jar")
    sources = [str(p) for p in sorted(SRC_DIR.rglob("*.java"))]
    if not sources:
        raise PluginBuildError(f"no Java sources under {SRC_DIR}")
    with tempfile.TemporaryDirectory(prefix="tsadapt-plugin-") as tmp:
        classes = Path(tmp) / "classes"
        classes.mkdir()
        _run(
            [
                javac,
                "--release",
                "17",
                "-nowarn",
                "-encoding",
                "UTF-8",
                "-cp",
                str(server_jar),
                "-d",
                str(classes),
                *sources,
            ]
        )
        shutil.copytree(RESOURCES_DIR, classes, dirs_exist_ok=True)
        _run([jar_tool, "--create", "--file", str(jar_out), "-C", str(classes), "."])


def build_plugin(out_dir: Path | None = None, force: bool = False) -> Path:
    """Build (if needed) the plugin jar; return the directory to use as ``plugins_path``.

    The directory holds only ``tsadapt-plugin.jar`` and a hash stamp, because TorchServe puts
    every jar in ``plugins_path`` on its classpath. With ``$TSADAPT_PLUGIN_DIR`` set (and no
    ``out_dir``), that folder's jar is used as it is.
    """
    prebuilt = os.environ.get(PREBUILT_ENV)
    if prebuilt and out_dir is None and not force:
        if not (Path(prebuilt) / JAR_NAME).is_file():
            raise PluginBuildError(f"${PREBUILT_ENV}={prebuilt} holds no {JAR_NAME}")
        return Path(prebuilt)
    out = Path(out_dir) if out_dir is not None else _default_out_dir()
    if not _writable_dir(out):
        raise PluginBuildError(f"cannot write the plugin to {out}")
    server_jar = model_server_jar()
    wanted = source_hash(server_jar)
    jar, stamp = out / JAR_NAME, out / STAMP_NAME
    if not force and jar.is_file() and stamp.is_file() and stamp.read_text().strip() == wanted:
        return out
    # Build next to the target under a name that is not *.jar, then swap it in atomically.
    tmp_jar = out / f".{JAR_NAME}.{os.getpid()}.tmp"
    try:
        _compile(server_jar, tmp_jar)
        os.replace(tmp_jar, jar)
    finally:
        tmp_jar.unlink(missing_ok=True)
    stamp.write_text(wanted + "\n")
    return out


def prebuilt_dir() -> Path | None:
    """The wheel's prebuilt plugin folder, if there is one and fits this environment: built
    against the pinned TorchServe, it serves that TorchServe, or a server this environment
    does not hold (a sidecar-only install beside the user's own TorchServe)."""
    folder = Path(__file__).resolve().parent / PREBUILT_DIR
    if not (folder / JAR_NAME).is_file():
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("torchserve")
    except PackageNotFoundError:  # the server runs elsewhere: the jar is for the pinned one
        return folder
    return folder if installed == PINNED_TORCHSERVE else None


def plugins_path() -> Path:
    """The folder to give TorchServe as ``plugins_path``: the prebuilt jar's (needs only a
    Java runtime), else one built here from the sources (needs a JDK)."""
    return prebuilt_dir() or build_plugin()


def main(argv: list[str] | None = None) -> int:
    """CLI: build the plugin and print the jar's path."""
    parser = argparse.ArgumentParser(prog="python -m tsadapt.plugin.build", description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: plugin/build")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        out = build_plugin(args.out_dir, force=args.force)
    except PluginBuildError as exc:
        parser.exit(1, f"error: {exc}\n")
    print(out / JAR_NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
