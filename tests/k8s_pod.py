"""Run the rendered Deployment's pod with podman, without a cluster.

``podman kube play`` (4.3) cannot run this pod: it starts the init container, then fails
with ``cannot remove container ... as it is running`` and leaves the pod Degraded. So this
tool starts the same pod from the same rendered manifest (``tests/k8s_render.py``) with
``podman pod create`` + ``podman run --pod``, init containers first (each to completion), then
the containers, in manifest order. What it maps, field by field:

* ports: every ``containerPort`` is published on 127.0.0.1 only, on a free host port;
* volumes: ``emptyDir`` -> a podman volume made for the pod (deleted with it), owned by the
  pod's ``fsGroup``/``runAsUser``; ``configMap`` -> the rendered ConfigMap's files in a
  read-only host folder; ``persistentVolumeClaim`` -> a podman named volume of the claim's
  name (podman fills an empty named volume from the image's files at the mount path, so the
  model-store comes from the TorchServe image), kept across runs;
* securityContext: ``runAsUser``/``runAsGroup`` -> ``--user``; ``readOnlyRootFilesystem`` ->
  ``--read-only``; ``capabilities.drop: [ALL]`` -> ``--cap-drop all``;
  ``allowPrivilegeEscalation: false`` -> ``no-new-privileges``; ``seccompProfile:
  RuntimeDefault`` is podman's default;
* ``command``/``args``/``env``/``workingDir``/``resources.limits.memory`` as such;
* probes: run by :func:`wait_ready` from the host, through the published ports (startup
  within ``periodSeconds x failureThreshold``, then readiness); there is no kubelet, so a
  failing liveness probe restarts nothing.

Ignored (no cluster): ``replicas`` (one pod), ``resources.requests`` and CPU limits (no
scheduler; CPU limits need the cgroup controllers a nested host may lack), ``sizeLimit``,
``automountServiceAccountToken``, annotations, the Service (the published ports stand in for
it) and the autoscalers of the overlays.

CLI: ``python -m tests.k8s_pod up|down [--image NAME=IMAGE ...] [--name POD]``; ``up``
prints the published ports as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.k8s_render import render
from tsadapt.serve.server import free_ports

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "configs" / "kubernetes" / "base"
FLAGS_SCRIPT = ROOT / "configs" / "kubernetes" / "podman-flags.sh"
#: The images ``build-images.sh`` tags, for each container of the base Deployment.
VERSION = "0.1.0"
SIDECAR_IMAGE = f"ghcr.io/torchserve-adapt/torchserve-adapt-sidecar:{VERSION}"
TORCHSERVE_IMAGE = f"ghcr.io/torchserve-adapt/torchserve-adapt-torchserve:{VERSION}"
DEFAULT_IMAGES = {"plugin": SIDECAR_IMAGE, "torchserve": TORCHSERVE_IMAGE, "tsadapt": SIDECAR_IMAGE}


class PodError(RuntimeError):
    """The pod could not be started (a container failed, a probe never passed)."""


@dataclass(frozen=True)
class Pod:
    """A running pod: its name, the host port of each named container port, its folder."""

    name: str
    ports: dict[str, int]
    config_dir: Path
    volumes: tuple[str, ...]
    containers: tuple[str, ...] = field(default=())

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def url(self, port_name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}{path}"


@functools.cache
def podman_env() -> dict[str, str]:
    """The environment podman runs in. Where this host needs extra run flags
    (``configs/kubernetes/podman-flags.sh``: another runtime, explicit rlimits), they go into
    a containers.conf (``CONTAINERS_CONF``), so that the pod's infra container, which
    ``podman pod create`` gives no such flags, gets them too."""
    flags = host_flags(SIDECAR_IMAGE)
    if not flags:
        return dict(os.environ)
    pairs = dict(zip(flags[::2], flags[1::2], strict=True))
    ulimits = [v for k, v in zip(flags[::2], flags[1::2], strict=True) if k == "--ulimit"]
    conf = Path(tempfile.mkdtemp(prefix="tsadapt-podman-")) / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f"default_ulimits = {json.dumps(ulimits)}\n"
        "[engine]\n"
        f"runtime = {json.dumps(pairs.get('--runtime', 'crun'))}\n"
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, check: bool = True, timeout: float = 600) -> str:
    """Run podman; its stdout, or :class:`PodError` with its stderr."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False,
        env=podman_env(),
    )  # fmt: skip
    if check and result.returncode != 0:
        raise PodError(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def host_flags(image: str) -> list[str]:
    """Extra run flags this host needs (``configs/kubernetes/podman-flags.sh``)."""
    out = subprocess.run([str(FLAGS_SCRIPT), image], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise PodError(out.stderr.strip())
    return out.stdout.split()


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == "Deployment"]
    if len(hits) != 1:
        raise PodError(f"expected one Deployment, found {len(hits)}")
    return hits[0]


def container_args(
    pod: Pod, spec: dict[str, Any], c: dict[str, Any], image: str, mounts: dict[str, str]
) -> list[str]:
    """``podman run`` arguments for container ``c`` of pod ``spec`` (see the module doc)."""
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    user = csc.get("runAsUser", psc.get("runAsUser"))
    group = csc.get("runAsGroup", psc.get("runAsGroup"))
    args = ["--pod", pod.name, "--name", pod.container(c["name"])]
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if csc.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    if "ALL" in csc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", "all"]
    if csc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if "memory" in c.get("resources", {}).get("limits", {}):
        args += [
            "--memory",
            c["resources"]["limits"]["memory"].replace("Mi", "m").replace("Gi", "g"),
        ]
    for env in c.get("env", []):
        args += ["--env", f"{env['name']}={env['value']}"]
    if "workingDir" in c:
        args += ["--workdir", c["workingDir"]]
    for m in c.get("volumeMounts", []):
        args += [
            "--volume",
            f"{mounts[m['name']]}:{m['mountPath']}:{'ro' if m.get('readOnly') else 'rw'}",
        ]
    if "command" in c:
        args += ["--entrypoint", json.dumps(c["command"])]
    return [*args, image, *c.get("args", [])]


def up(name: str = "tsadapt", images: dict[str, str] | None = None, overlay: Path = BASE) -> Pod:
    """Start the pod of ``overlay``'s Deployment; return it once its probes pass."""
    images = {**DEFAULT_IMAGES, **(images or {})}
    docs = render(overlay)
    spec = deployment(docs)["spec"]["template"]["spec"]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    containers = spec.get("initContainers", []) + spec["containers"]
    down(name)
    names = [p["name"] for c in spec["containers"] for p in c.get("ports", [])]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    publish = [
        f"--publish=127.0.0.1:{ports[p['name']]}:{p['containerPort']}"
        for c in spec["containers"]
        for p in c.get("ports", [])
    ]
    config_dir = Path(tempfile.mkdtemp(prefix=f"{name}-configmaps-"))
    owner = spec.get("securityContext", {})
    uid = owner.get("runAsUser", 0)
    gid = owner.get("fsGroup", owner.get("runAsGroup", uid))
    mounts: dict[str, str] = {}
    made: list[str] = []
    for v in spec["volumes"]:
        if "emptyDir" in v:
            vol = f"{name}-{v['name']}"
            podman("volume", "create", "--opt", f"o=uid={uid},gid={gid}", vol)
            made.append(vol)
            mounts[v["name"]] = vol
        elif "configMap" in v:
            folder = config_dir / v["name"]
            folder.mkdir()
            for key, text in configmaps[v["configMap"]["name"]]["data"].items():
                (folder / key).write_text(text)
            folder.chmod(0o755)
            mounts[v["name"]] = str(folder)
        elif "persistentVolumeClaim" in v:
            mounts[v["name"]] = v["persistentVolumeClaim"]["claimName"]
        else:
            raise PodError(f"volume {v['name']}: only emptyDir, configMap and PVC are mapped")
    config_dir.chmod(0o755)
    podman("pod", "create", "--name", name, *publish)
    pod = Pod(name, ports, config_dir, tuple(made), tuple(c["name"] for c in containers))
    for c in spec.get("initContainers", []):
        out = subprocess.run(
            ["podman", "run", *container_args(pod, spec, c, images[c["name"]], mounts)],
            capture_output=True, text=True, timeout=300, check=False, env=podman_env(),
        )  # fmt: skip
        if out.returncode != 0:
            raise PodError(f"init container {c['name']} exited {out.returncode}: {out.stderr}")
    for c in spec["containers"]:
        podman("run", "--detach", *container_args(pod, spec, c, images[c["name"]], mounts))
    wait_ready(pod, spec["containers"])
    return pod


def _probe(pod: Pod, c: dict[str, Any], probe: dict[str, Any]) -> bool:
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    by_port = {p["containerPort"]: p["name"] for p in c.get("ports", [])}

    def host_port(port: int | str) -> int:
        return pod.ports[port if isinstance(port, str) else by_port[port]]

    try:
        if "tcpSocket" in probe:
            socket.create_connection(
                ("127.0.0.1", host_port(probe["tcpSocket"]["port"])), 2
            ).close()
            return True
        get = probe["httpGet"]
        port = get["port"] if get["port"] in ports or isinstance(get["port"], int) else None
        url = f"http://127.0.0.1:{host_port(port)}{get['path']}"
        return 200 <= requests.get(url, timeout=probe.get("timeoutSeconds", 1)).status_code < 400
    except (OSError, requests.RequestException):
        return False


def wait_ready(pod: Pod, containers: Sequence[dict[str, Any]], limit_s: float = 600) -> None:
    """Wait until each container's startup, then readiness and liveness probes pass."""
    deadline = time.monotonic() + limit_s
    for c in containers:
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
            if kind == "startupProbe" or kind == "readinessProbe":
                budget = max(budget, 300)
            until = min(deadline, time.monotonic() + budget)
            while not _probe(pod, c, probe):
                state = podman("inspect", "--format", "{{.State.Status}}", pod.container(c["name"]))
                if state.strip() != "running" or time.monotonic() > until:
                    logs = podman("logs", "--tail", "40", pod.container(c["name"]), check=False)
                    raise PodError(f"{c['name']}: {kind} did not pass ({state.strip()}):\n{logs}")
                time.sleep(1)


def down(name: str = "tsadapt") -> None:
    """Remove the pod, its containers and its emptyDir volumes (PVC volumes stay)."""
    podman("pod", "rm", "--force", "--ignore", name, check=False)
    for vol in podman("volume", "ls", "--quiet", "--filter", f"name=^{name}-", check=False).split():
        podman("volume", "rm", "--force", vol, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s_pod", description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--name", default="tsadapt")
    parser.add_argument("--image", action="append", default=[], metavar="CONTAINER=IMAGE")
    args = parser.parse_args(argv)
    if args.action == "down":
        down(args.name)
        return 0
    images = dict(item.split("=", 1) for item in args.image)
    pod = up(args.name, images)
    print(json.dumps({"pod": pod.name, "ports": pod.ports}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
