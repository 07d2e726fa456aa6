"""Make an unpacked kit runnable; run by ``run.sh`` before ``tsadapt`` can be imported.

``python3 prepare.py REPO WORK``: zips TorchServe's unpacked frontend jar back together (stored:
the JVM reads it as fast) and lays out ``WORK/src/tsadapt`` as links into the checkout REPO,
one per package of ``setup.cfg``'s ``package_dir``, as an editable install does. Standard
library only: nothing of the kit is importable yet.
"""

from __future__ import annotations

import configparser
import shutil
import sys
import zipfile
from pathlib import Path

FRONTEND_DIR = "ts/frontend/model-server.d"  # kit.FRONTEND_DIR


def zip_frontend(site: Path) -> Path:
    """``model-server.d/`` -> ``model-server.jar`` (manifest first, as ``jar`` writes it)."""
    unpacked = site / FRONTEND_DIR
    jar = unpacked.parent / "model-server.jar"
    if not unpacked.is_dir():
        return jar
    files = sorted(p for p in unpacked.rglob("*") if p.is_file())
    first = [p for p in files if p.relative_to(unpacked).as_posix() == "META-INF/MANIFEST.MF"]
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_STORED) as zf:
        for path in first + [p for p in files if p not in first]:
            zf.write(path, path.relative_to(unpacked).as_posix())
    shutil.rmtree(unpacked)
    return jar


def package_dirs(repo: Path) -> dict[str, Path]:
    """``{dotted package: folder}`` from ``setup.cfg``'s ``package_dir``."""
    cfg = configparser.ConfigParser()
    cfg.read(repo / "setup.cfg")
    out = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        name, _, folder = (part.strip() for part in line.partition("="))
        out[name] = (repo / folder).resolve()
    return out


def link_checkout(repo: Path, src: Path) -> None:
    """``src/<package path>`` for every package: the top one a folder of links to its
    files, each subpackage a link to its folder."""
    packages = package_dirs(repo)
    root = min(packages, key=len)
    top = src / root
    if top.exists():
        shutil.rmtree(top)
    top.mkdir(parents=True)
    for item in packages[root].iterdir():
        if item.name != "__pycache__":
            (top / item.name).symlink_to(item)
    for name, folder in sorted(packages.items()):
        if name == root:
            continue
        link = src.joinpath(*name.split("."))
        if not link.parent.exists():
            raise RuntimeError(f"{name}: its parent package is not laid out")
        if link.exists() and link.resolve() == folder:
            continue  # a subfolder of a package already linked
        link.symlink_to(folder, target_is_directory=True)


def main(argv: list[str]) -> int:
    repo, work = Path(argv[1]).resolve(), Path(argv[2]).resolve()
    print(f"frontend jar: {zip_frontend(work / 'site')}")
    link_checkout(repo, work / "src")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
