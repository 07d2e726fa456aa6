"""What the GPU machine already has, and which Python packages the kit must bring.

The GPU machine runs Python 3.12 with a CUDA build of torch and a fixed set of packages; it
cannot fetch anything. :func:`needed_packages` walks torchserve-adapt's requirements through
the installed metadata of this environment (so the kit carries the versions tested here) and
keeps what the machine lacks; :func:`download_wheels` fetches them for the target Python.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

#: The packages installed on the GPU machine (its image's package list, names normalised).
GPU_MACHINE_PACKAGES = frozenset(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio interface-meta iniconfig jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
    jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
    lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
    ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
    nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
    nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
    nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
    pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf
    psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
    pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
    pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
    scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
    shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
    tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
    torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
    treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
    werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
)
#: The distribution whose requirements the kit satisfies.
ROOT = "torchserve-adapt"
#: The extras of :data:`ROOT` the check runs with: real servers and Locust (bench), the
#: simulator's training stack (learn).
ROOT_EXTRAS = ("bench", "learn")
#: pip's platform tags for the GPU machine's x86-64 Linux.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Target:
    """The Python the kit is built for and the packages that Python already has."""

    python_version: str = "3.12"
    preinstalled: frozenset[str] = GPU_MACHINE_PACKAGES

    @property
    def tag(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def marker_env(self, extra: str = "") -> dict[str, str]:
        env = dict(default_environment())
        env.update(
            python_version=self.python_version,
            python_full_version=f"{self.python_version}.0",
            extra=extra,
        )
        return env


def needed_packages(
    target: Target, root: str = ROOT, extras: tuple[str, ...] = ROOT_EXTRAS
) -> dict[str, str]:
    """``{name: version}`` of every distribution ``root`` with its ``extras`` needs
    (transitively, markers evaluated for ``target``) that ``target`` does not have, at the
    versions installed here."""
    need: dict[str, str] = {}
    todo = [root]
    seen: set[str] = set()
    while todo:
        name = normalise(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        envs = [target.marker_env(e) for e in ("", *(extras if name == normalise(root) else ()))]
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = normalise(req.name)
            if dep in target.preinstalled or dep in need:
                continue
            try:
                need[dep] = metadata.version(dep)
            except metadata.PackageNotFoundError:
                raise RuntimeError(f"{name} needs {req}, which is not installed here") from None
            todo.append(dep)
    return dict(sorted(need.items()))


def pip_target_args(target: Target) -> list[str]:
    """pip's flags selecting wheels for ``target`` (binary only, any of :data:`PLATFORMS`)."""
    args = [
        "--only-binary=:all:",
        "--python-version",
        target.python_version,
        "--implementation",
        "cp",
    ]
    for platform in (*PLATFORMS, "any"):
        args += ["--platform", platform]
    return args


def download_wheels(packages: dict[str, str], target: Target, dest: Path) -> list[Path]:
    """Fetch one wheel per package for ``target`` into ``dest`` (pip's cache and index)."""
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{n}=={v}" for n, v in packages.items()]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "-d",
        str(dest),
        *pip_target_args(target),
        *specs,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download failed: {proc.stderr.strip()[-2000:]}")
    wheels = sorted(dest.glob("*.whl"))
    got = {normalise(w.name.split("-")[0]) for w in wheels}
    missing = sorted(set(packages) - got)
    if missing:
        raise RuntimeError(f"no wheel for {', '.join(missing)} ({target.tag})")
    return wheels
