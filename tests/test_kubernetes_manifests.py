"""configs/kubernetes/: every overlay renders and validates offline; broken manifests fail;
the metric the autoscalers query is the one the sidecar exports; the pieces fit together."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.k8s_render import RenderError, apply_json6902, crd_schemas, render, validate
from tsadapt.policy.controller_config import load
from tsadapt.policy.sim.control import scenario_config
from tsadapt.sidecar.exporter import DEMAND_RATIO, MetricsExporter

ROOT = Path(__file__).resolve().parent.parent / "configs" / "kubernetes"
OVERLAYS = ["base", "overlays/keda", "overlays/hpa", "overlays/gpu", "overlays/monitoring"]
#: labels Prometheus adds to every scraped series from the target (ServiceMonitor/pod SD)
TARGET_LABELS = {"namespace", "service", "pod", "job", "instance", "container", "endpoint"}


@pytest.fixture(scope="module")
def crds() -> dict:
    return crd_schemas()


def rendered(overlay: str) -> list[dict[str, Any]]:
    return render(ROOT / overlay)


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, (kind, name, len(hits))
    return hits[0]


def container(deploy: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_validates(overlay: str, crds: dict) -> None:
    docs = rendered(overlay)
    assert docs
    for doc in docs:
        validate(doc, crds)


def test_crds_are_checked_against_their_own_schema(crds: dict) -> None:
    assert ("keda.sh/v1alpha1", "ScaledObject") in crds
    assert ("monitoring.coreos.com/v1", "ServiceMonitor") in crds


def _broken_deployment() -> dict[str, Any]:
    d = copy.deepcopy(one(rendered("base"), "Deployment"))
    d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] = ["8 cores"]
    return d


def _misspelled_field() -> dict[str, Any]:
    d = copy.deepcopy(one(rendered("base"), "Deployment"))
    d["spec"]["template"]["spec"]["containers"][1]["readinesProbe"] = {"periodSeconds": 5}
    return d


def _hpa_without_target() -> dict[str, Any]:
    d = copy.deepcopy(one(rendered("overlays/hpa"), "HorizontalPodAutoscaler"))
    del d["spec"]["metrics"][0]["external"]["target"]
    return d


def _scaledobject_without_triggers() -> dict[str, Any]:
    d = copy.deepcopy(one(rendered("overlays/keda"), "ScaledObject"))
    del d["spec"]["triggers"]
    return d


def _scaledobject_unknown_field() -> dict[str, Any]:
    d = copy.deepcopy(one(rendered("overlays/keda"), "ScaledObject"))
    d["spec"]["pollingIntervall"] = 30
    return d


def _servicemonitor_bad_port() -> dict[str, Any]:
    d = copy.deepcopy(one(rendered("overlays/monitoring"), "ServiceMonitor"))
    d["spec"]["endpoints"][0]["interval"] = 15  # a duration string, not a number
    return d


@pytest.mark.parametrize(
    "broken",
    [
        _broken_deployment,
        _misspelled_field,
        _hpa_without_target,
        _scaledobject_without_triggers,
        _scaledobject_unknown_field,
        _servicemonitor_bad_port,
    ],
)
def test_broken_manifest_fails(broken, crds: dict) -> None:
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(broken(), crds)


def test_broken_kustomization_fails(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(ROOT / "base" / "deployment.yaml")],
                "patches": [{"path": "p.yaml", "target": {"kind": "Deployment", "name": "nope"}}],
            }
        )
    )
    (tmp_path / "p.yaml").write_text("- {op: remove, path: /spec/replicas}\n")
    with pytest.raises(RenderError, match="matches 0 resources"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("configMapGenerator: []\n")
    with pytest.raises(RenderError, match="unsupported kustomization keys"):
        render(tmp_path)


def test_json6902_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": 1}
    out = apply_json6902(
        doc,
        [
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/x~1y", "value": 4},
            {"op": "replace", "path": "/c", "value": 2},
            {"op": "remove", "path": "/a/b/0"},
        ],
    )
    assert out == {"a": {"b": [2, 3], "x/y": 4}, "c": 2} and doc["c"] == 1
    with pytest.raises(RenderError, match="no such member"):
        apply_json6902(doc, [{"op": "replace", "path": "/zz", "value": 1}])


def _metric_refs(query: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every selector in a PromQL expression."""
    out = []
    for name, labels in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", query):
        out.append((name, {m.split("=")[0].strip().rstrip("!~") for m in labels.split(",")}))
    return out


def test_autoscalers_query_the_metric_the_sidecar_exports() -> None:
    config = scenario_config(
        ROOT.parent / "controller.yaml",
        ROOT.parent.parent / "loadtests" / "scenarios" / "bursty.yaml",
    )
    exporter = MetricsExporter(port=0, config=config)
    try:
        from tests.controller_helpers import model_obs, observation

        cfg = exporter.config
        assert cfg is not None
        exporter.update(observation(*(model_obs(n) for n in cfg.model_names)), {}, {})
        series = [ln for ln in exporter.render().splitlines() if ln.startswith(DEMAND_RATIO)]
    finally:
        exporter.close()
    assert len(series) == 1 and "{" not in series[0]  # no labels of its own
    own_labels: set[str] = set()

    so = one(rendered("overlays/keda"), "ScaledObject")
    query = so["spec"]["triggers"][0]["metadata"]["query"]
    refs = _metric_refs(query)
    assert [n for n, _ in refs] == [DEMAND_RATIO]
    assert refs[0][1] <= TARGET_LABELS | own_labels

    hpa = one(rendered("overlays/hpa"), "HorizontalPodAutoscaler")
    ext = hpa["spec"]["metrics"][0]["external"]
    rules = yaml.safe_load(
        one(rendered("overlays/hpa"), "ConfigMap", "prometheus-adapter-tsadapt")["data"][
            "config.yaml"
        ]
    )["externalRules"][0]
    assert ext["metric"]["name"] == rules["name"]["as"] == DEMAND_RATIO
    assert re.fullmatch(rules["name"]["matches"], DEMAND_RATIO)
    assert [n for n, _ in _metric_refs(rules["seriesQuery"])] == [DEMAND_RATIO]
    assert DEMAND_RATIO in rules["metricsQuery"]
    assert set(ext["metric"]["selector"]["matchLabels"]) <= TARGET_LABELS
    # both variants: desired = ceil(sum of demand ratios / the same threshold)
    assert ext["target"]["type"] == so["spec"]["triggers"][0]["metricType"] == "AverageValue"
    assert float(so["spec"]["triggers"][0]["metadata"]["threshold"]) == 0.8
    assert ext["target"]["averageValue"] == "800m"


def test_the_pod_fits_together() -> None:
    docs = rendered("overlays/monitoring")
    deploy = one(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    ts, side = container(deploy, "torchserve"), container(deploy, "tsadapt")
    mounts = {c["name"]: {m["mountPath"]: m for m in c["volumeMounts"]} for c in (ts, side)}

    props = dict(
        line.split("=", 1)
        for line in one(docs, "ConfigMap", "torchserve-config")["data"][
            "config.properties"
        ].splitlines()
        if line and not line.startswith("#")
    )
    # the plugin jar: copied by the init container into the volume plugins_path points at
    assert mounts["torchserve"][props["plugins_path"]]["name"] == "plugins"
    init = pod["initContainers"][0]
    assert any(m["name"] == "plugins" for m in init["volumeMounts"])
    assert "tsadapt-plugin.jar" in " ".join(init["command"])
    assert props["management_address"].startswith("http://127.0.0.1:")  # pod-local only

    args = side["command"]
    opt = {args[i]: args[i + 1] for i in range(2, len(args) - 1) if args[i].startswith("--")}
    assert args[:2] == ["tsadapt", "control"]
    # the key file is TorchServe's, written into its working directory, a shared volume
    key_dir = str(Path(opt["--key-file"]).parent)
    assert ts["workingDir"] == key_dir
    assert mounts["torchserve"][key_dir]["name"] == mounts["tsadapt"][key_dir]["name"]
    assert mounts["tsadapt"][key_dir]["readOnly"] is True
    assert "emptyDir" in volumes[mounts["tsadapt"][key_dir]["name"]]
    assert not any("key" in str(e).lower() for c in (ts, side) for e in c.get("env", []))
    # both configs come from ConfigMaps mounted where the command line reads them
    ts_cfg = mounts["tsadapt"][str(Path(opt["--ts-config"]).parent)]
    assert volumes[ts_cfg["name"]]["configMap"]["name"] == "torchserve-config"
    ctl = mounts["tsadapt"][str(Path(opt["--config"]).parent)]
    assert volumes[ctl["name"]]["configMap"]["name"] == "tsadapt-controller"
    # the metrics port is served off loopback and reached by name through the Service
    port = int(opt["--metrics-port"])
    assert opt["--metrics-host"] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in side["ports"]} == {"tsadapt-metrics": port}
    svc_ports = {p["name"] for p in one(docs, "Service")["spec"]["ports"]}
    sm_ports = {e["port"] for e in one(docs, "ServiceMonitor")["spec"]["endpoints"]}
    assert sm_ports == {"ts-metrics", "tsadapt-metrics"} <= svc_ports
    # security: non-root, no escalation, read-only root filesystems, all capabilities dropped
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in [*pod["containers"], *pod["initContainers"]]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    for c in pod["containers"]:
        assert c["readinessProbe"] and c["livenessProbe"]
    # no probe on a token-protected TorchServe endpoint (see test_ping_needs_the_token)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = ts[probe].get("httpGet")
        assert get is None or get["port"] == "ts-metrics", probe
    assert side["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert side["livenessProbe"]["httpGet"]["path"] == "/live"


def test_gpu_overlay_requests_a_gpu() -> None:
    deploy = one(rendered("overlays/gpu"), "Deployment")
    ts = container(deploy, "torchserve")
    assert ts["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert ts["image"].endswith("-gpu")
    base = container(one(rendered("base"), "Deployment"), "torchserve")
    assert "nvidia.com/gpu" not in base["resources"]["limits"]


def test_controller_configmap_loads(tmp_path: Path) -> None:
    cm = one(rendered("base"), "ConfigMap", "tsadapt-controller")
    path = tmp_path / "controller.yaml"
    path.write_text(cm["data"]["controller.yaml"])
    cfg = load(path)
    assert cfg.policy == "ppo" and cfg.worker_budget == 8


def test_sidecar_options_exist() -> None:
    import argparse

    from tsadapt.cli import control_commands

    parser = argparse.ArgumentParser()
    control_commands.register(parser.add_subparsers())
    deploy = one(rendered("base"), "Deployment")
    args = container(deploy, "tsadapt")["command"][1:]
    known = {a for action in parser._subparsers._group_actions[0].choices["control"]._actions
             for a in action.option_strings}  # fmt: skip
    mine = {"--metrics-port", "--metrics-host", "--config", "--decision-log"}
    assert mine <= {a for a in args if a.startswith("--")} and mine <= known


def test_dockerfile_builds_what_the_pod_uses() -> None:
    text = (ROOT / "images" / "Dockerfile").read_text()
    repo = ROOT.parent.parent
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for part in src.split():
            if part != "build/wheels/":  # made by build-images.sh (an optional torch wheel)
                assert list(repo.glob(part)), part
    deploy = one(rendered("base"), "Deployment")
    init = deploy["spec"]["template"]["spec"]["initContainers"][0]
    jar_dir = re.search(r"tsadapt\.plugin\.build --out-dir (\S+)", text)
    assert jar_dir and f"{jar_dir.group(1)}/tsadapt-plugin.jar" in " ".join(init["command"])
    uid = deploy["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert f"USER {uid}:{uid}" in text
    assert "download.pytorch.org/whl/cpu" in text and "ARG TORCH_VERSION=2.13.0" in text
    for c in [init, *deploy["spec"]["template"]["spec"]["containers"]]:
        if c["name"] != "torchserve":  # the user's TorchServe image
            assert c["image"].startswith("ghcr.io/torchserve-adapt/torchserve-adapt-sidecar:")


@pytest.mark.server
def test_ping_needs_the_token_metrics_do_not(torchserve) -> None:
    """Why the probes avoid /ping: TorchServe 0.12 with token authorization refuses it."""
    import requests

    assert requests.get(f"{torchserve.inference_url}/ping", timeout=10).status_code == 400
    assert requests.get(torchserve.metrics_url, timeout=10).status_code == 200
