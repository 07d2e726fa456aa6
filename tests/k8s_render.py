"""Render and validate ``configs/kubernetes/`` offline (no kustomize binary, no cluster).

:func:`render` implements the subset of Kustomize the manifests use, with Kustomize's
semantics: ``resources`` (files, or directories holding a ``kustomization.yaml``, rendered
first, in order), ``patches`` with a JSON 6902 patch file (a YAML list of ``add`` /
``replace`` / ``remove`` operations; RFC 6901 paths) and a ``target`` of ``kind`` and
``name`` that must match exactly one resource, and ``namespace``. Any other key is an error,
so a manifest that needs more of Kustomize fails here instead of rendering differently.

:func:`validate` checks built-in kinds against the Kubernetes OpenAPI schemas of
:data:`KUBERNETES_VERSION` (``kubernetes-validate``, strict: unknown fields are errors) and
the CRDs used (KEDA ``ScaledObject``, Prometheus Operator ``ServiceMonitor``) against their
``openAPIV3Schema`` shipped in ``tests/data/crds/``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
CRD_DIR = Path(__file__).resolve().parent / "data" / "crds"
_KEYS = {"apiVersion", "kind", "resources", "patches", "namespace"}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class RenderError(ValueError):
    """The kustomization uses something outside the subset, or a patch does not apply."""


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add``/``replace``/``remove`` on a copy of ``doc``."""
    out = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        if kind not in ("add", "replace", "remove") or not path.startswith("/"):
            raise RenderError(f"unsupported patch operation {op!r}")
        *parents, last = [_unescape(t) for t in path[1:].split("/")]
        node: Any = out
        for t in parents:
            try:
                node = node[int(t)] if isinstance(node, list) else node[t]
            except (KeyError, IndexError, ValueError):
                raise RenderError(f"{kind} {path}: no such parent ({t!r})") from None
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if kind == "add":
                if not 0 <= index <= len(node):
                    raise RenderError(f"add {path}: index out of range")
                node.insert(index, op["value"])
            elif not 0 <= index < len(node):
                raise RenderError(f"{kind} {path}: index out of range")
            elif kind == "replace":
                node[index] = op["value"]
            else:
                del node[index]
        elif isinstance(node, dict):
            if kind != "add" and last not in node:
                raise RenderError(f"{kind} {path}: no such member")
            if kind == "remove":
                del node[last]
            else:
                node[last] = op["value"]
        else:
            raise RenderError(f"{kind} {path}: parent is not an object or array")
    return out


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources ``kubectl apply -k directory`` would apply (for the subset above)."""
    directory = Path(directory)
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    extra = set(spec) - _KEYS
    if extra:
        raise RenderError(f"{directory}: unsupported kustomization keys {sorted(extra)}")
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        docs += render(path) if path.is_dir() else _docs(path)
    for patch in spec.get("patches", []):
        target = patch.get("target", {})
        if set(target) - {"kind", "name"} or set(patch) - {"path", "target"}:
            raise RenderError(f"{directory}: unsupported patch {patch!r}")
        ops = yaml.safe_load((directory / patch["path"]).read_text())
        if not isinstance(ops, list):
            raise RenderError(f"{patch['path']}: only JSON 6902 patches (a list) are supported")
        hits = [
            i
            for i, d in enumerate(docs)
            if all(
                (d.get("kind") if k == "kind" else d.get("metadata", {}).get("name")) == v
                for k, v in target.items()
            )
        ]
        if len(hits) != 1:
            raise RenderError(f"{patch['path']}: target {target} matches {len(hits)} resources")
        docs[hits[0]] = apply_json6902(docs[hits[0]], ops)
    if "namespace" in spec:
        for d in docs:
            if d.get("kind") not in _CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = spec["namespace"]
    seen: set[tuple[str, str, str]] = set()
    for d in docs:
        key = (d.get("apiVersion", ""), d.get("kind", ""), d.get("metadata", {}).get("name", ""))
        if key in seen:
            raise RenderError(f"{directory}: duplicate resource {key}")
        seen.add(key)
    return docs


def strict(schema: Any) -> Any:
    """``schema`` with unknown fields refused wherever it lists properties (what
    ``kubectl apply --validate=strict`` does; the API server would silently prune them)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> strict openAPIV3Schema of every CRD in :data:`CRD_DIR`."""
    out = {}
    for path in sorted(CRD_DIR.glob("*.json")):
        crd = json.loads(path.read_text())
        key = (f"{crd['group']}/{crd['version']}", crd["kind"])
        out[key] = strict(crd["openAPIV3Schema"])
    return out


def validate(doc: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Raise (``kubernetes_validate.ValidationError`` or ``jsonschema.ValidationError``)
    unless ``doc`` fits its schema."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in crds:
        jsonschema.validate(doc, crds[key])
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
