"""``tsadapt lab gpu-check --build-kit DIR``: everything the GPU machine lacks, in a few files.

The kit travels with the repository's working tree (the check runs from that checkout, as
an editable install does: the bench reads ``loadtests/`` and the scenarios from it):

- ``site.tar.xz``: the Python packages the machine lacks (:func:`target.needed_packages`),
  installed for the target Python; TorchServe's frontend jar is stored unpacked inside (xz
  packs its classes about twice as tight as the jar's own deflate) without the native
  libraries of other platforms, and ``run.sh`` zips it back;
- ``jre.tar.xz``: a Java runtime cut by ``jlink`` to the modules TorchServe uses;
- ``plugin/tsadapt-plugin.jar`` (the machine has no ``javac``), ``model-store/*.mar``;
- ``run.sh``, the one entry point; ``kit.json``, what is in it and its size.

The two archives are cached under ``build/gpu-kit-cache/`` by content, so a rebuild after a
code change takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from tsadapt.experiments.gpu_check.target import (
    Target,
    download_wheels,
    needed_packages,
    pip_target_args,
)

#: Per-command limit of what travels (working tree plus carried folders), bytes.
TRAVEL_LIMIT_BYTES = 64 * 2**20
#: Modules of the jlinked runtime: ``jdeps -summary`` over model-server.jar's classes, plus
#: the zip file system and the EC crypto provider.
JRE_MODULES = (
    "java.base",
    "java.compiler",
    "java.datatransfer",
    "java.desktop",
    "java.logging",
    "java.management",
    "java.management.rmi",
    "java.naming",
    "java.prefs",
    "java.rmi",
    "java.scripting",
    "java.sql",
    "java.xml",
    "jdk.sctp",
    "jdk.unsupported",
    "jdk.crypto.ec",
    "jdk.zipfs",
)
#: Where the unpacked frontend jar sits in the site tree; ``run.sh`` zips it into the jar.
FRONTEND_DIR = "ts/frontend/model-server.d"
#: Native libraries in the frontend jar that a Linux x86-64 machine never loads.
FOREIGN_NATIVE = ("windows", "osx", "macos", "aarch", "kqueue", "linux32")
DEFAULT_KIT_DIR = Path("build/gpu-kit")
CACHE_DIR = Path("build/gpu-kit-cache")


@dataclass(frozen=True)
class KitInfo:
    """What ``kit.json`` records."""

    python: str
    packages: dict[str, str]
    files: dict[str, int]  # name -> bytes
    total_bytes: int
    repo_bytes: int  # the working tree that travels with it

    @property
    def travel_bytes(self) -> int:
        return self.total_bytes + self.repo_bytes


def _xz_tar(src_dir: Path, names: list[str], out: Path) -> None:
    """``tar`` of ``names`` under ``src_dir``, compressed with all cores' ``xz``."""
    tmp = out.with_suffix(".partial")
    with tmp.open("wb") as sink:
        tar = subprocess.Popen(
            ["tar", "-C", str(src_dir), "-cf", "-", *names], stdout=subprocess.PIPE
        )
        xz = subprocess.run(["xz", "-6", "-T0", "-c"], stdin=tar.stdout, stdout=sink)
        tar.stdout.close()  # type: ignore[union-attr]
        if tar.wait() != 0 or xz.returncode != 0:
            raise RuntimeError(f"packing {out.name} failed")
    os.replace(tmp, out)


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def unpack_frontend_jar(jar: Path, dest: Path) -> None:
    """Extract ``jar`` into ``dest`` without the native libraries of other platforms."""
    with zipfile.ZipFile(jar) as zf:
        for info in zf.infolist():
            low = info.filename.lower()
            if low.startswith("meta-inf/native/") and any(f in low for f in FOREIGN_NATIVE):
                continue
            zf.extract(info, dest)


def build_site(packages: dict[str, str], target: Target, out: Path) -> None:
    """``site.tar.xz``: ``packages`` installed for ``target``, frontend jar unpacked."""
    with tempfile.TemporaryDirectory(prefix="gpu-kit-site-") as tmp:
        wheels = download_wheels(packages, target, Path(tmp) / "wheels")
        site = Path(tmp) / "site"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-compile",
            "--target",
            str(site),
            *pip_target_args(target),
            *map(str, wheels),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install --target failed: {proc.stderr.strip()[-2000:]}")
        shutil.rmtree(site / "bin", ignore_errors=True)  # scripts name this machine's Python
        jar = site / "ts" / "frontend" / "model-server.jar"
        unpack_frontend_jar(jar, site / FRONTEND_DIR)
        jar.unlink()
        _xz_tar(Path(tmp), ["site"], out)


def build_jre(out: Path) -> None:
    """``jre.tar.xz``: ``jlink`` of :data:`JRE_MODULES` (uncompressed: xz packs it)."""
    jlink = shutil.which("jlink")
    if jlink is None:
        raise RuntimeError("jlink not found: building the kit needs a JDK 17+ with jlink")
    with tempfile.TemporaryDirectory(prefix="gpu-kit-jre-") as tmp:
        cmd = [
            jlink,
            "--add-modules",
            ",".join(JRE_MODULES),
            "--strip-debug",
            "--no-header-files",
            "--no-man-pages",
            "--compress=0",
            "--output",
            str(Path(tmp) / "jre"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"jlink failed: {proc.stderr.strip()}")
        _xz_tar(Path(tmp), ["jre"], out)


def _cached(name: str, key: str, build, cache: Path) -> Path:  # noqa: ANN001 - a callable
    path = cache / f"{name}-{key}.tar.xz"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        for stale in cache.glob(f"{name}-*.tar.xz"):
            stale.unlink()
        build(path)
    return path


def java_version() -> str:
    proc = subprocess.run(["java", "-version"], capture_output=True, text=True)
    return (proc.stderr or proc.stdout).splitlines()[0] if proc.returncode == 0 else "none"


def repo_bytes(repo: Path) -> int:
    """Bytes of the files that travel as the working tree: tracked and untracked, not ignored
    (outside a git checkout, e.g. a copy of just those files: every file but ``build/``)."""
    if not (repo / ".git").exists():
        files = (p for p in repo.rglob("*") if p.is_file() and p.parts[len(repo.parts)] != "build")
        return sum(p.stat().st_size for p in files)
    proc = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    )
    total = 0
    for name in proc.stdout.decode().split("\0"):
        path = repo / name
        if name and path.is_file():
            total += path.stat().st_size
    return total


def render_run_sh(kit_id: str) -> str:
    template = resources.files("tsadapt.experiments.gpu_check").joinpath("run.sh.template")
    return template.read_text().replace("@KIT_ID@", kit_id)


def build_kit(
    kit: Path, target: Target | None = None, cache: Path = CACHE_DIR, repo: Path | None = None
) -> KitInfo:
    """Build the kit in ``kit`` (replaced) for ``target`` (default: the GPU machine)."""
    from tsadapt.plugin.build import JAR_NAME, build_plugin
    from tsadapt.serve.archive import archive_all

    repo = repo or Path.cwd()
    target = target or Target()
    if kit.resolve().parent.parent != repo.resolve():
        raise ValueError(f"put the kit two levels under the repository (build/NAME), not {kit}")
    packages = needed_packages(target)
    site = _cached(
        f"site-{target.tag}",
        _digest(target.python_version, sorted(target.preinstalled), packages, FOREIGN_NATIVE),
        lambda p: build_site(packages, target, p),
        cache,
    )
    jre = _cached("jre", _digest(JRE_MODULES, java_version()), build_jre, cache)
    if kit.exists():
        shutil.rmtree(kit)
    kit.mkdir(parents=True)
    shutil.copy(site, kit / "site.tar.xz")
    shutil.copy(jre, kit / "jre.tar.xz")
    (kit / "plugin").mkdir()
    shutil.copy(build_plugin() / JAR_NAME, kit / "plugin" / JAR_NAME)
    archive_all(kit / "model-store")
    kit_id = _digest(site.name, jre.name)
    (kit / "run.sh").write_text(render_run_sh(kit_id))
    (kit / "run.sh").chmod(0o755)
    files = {
        str(p.relative_to(kit)): p.stat().st_size for p in sorted(kit.rglob("*")) if p.is_file()
    }
    info = KitInfo(target.python_version, packages, files, sum(files.values()), repo_bytes(repo))
    (kit / "kit.json").write_text(json.dumps({**asdict(info), "kit_id": kit_id}, indent=1))
    return info
