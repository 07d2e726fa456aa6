"""Security of the controller against a real TorchServe with token auth on: the keys never
leak into anything the sidecar writes or serves (its output, decision log, error messages,
/metrics), even while the server is unreachable; ``/adapt`` refuses callers without the
management token; the sidecar listens on loopback only unless told otherwise; the key file is
read, never written or copied."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tsadapt.experiments.fault_harness import MODEL, SidecarProc, write_controller_config
from tsadapt.experiments.tcp_proxy import DelayProxy

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _keys(key_file: Path) -> dict[str, str]:
    return {api: entry["key"] for api, entry in json.loads(key_file.read_text()).items()}


def _fingerprint(path: Path) -> tuple[Any, ...]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _listening(pid: int) -> list[tuple[str, int]]:
    return [
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


@pytest.mark.parametrize("metrics_host", ["default", "0.0.0.0"])
def test_the_sidecar_never_leaks_the_key_and_listens_where_told(
    torchserve: Any, tmp_path: Path, metrics_host: str
) -> None:
    key_file = Path(torchserve.server.key_file)
    keys = _keys(key_file)
    before = _fingerprint(key_file)
    mgmt_port = int(torchserve.management_url.rsplit(":", 1)[1])
    proxy = DelayProxy(mgmt_port)
    cfg = write_controller_config(tmp_path / "ctl.yaml")
    host = [] if metrics_host == "default" else ["--metrics-host", metrics_host]
    args = ["--config", str(cfg), "--workdir", str(torchserve.workdir),
            "--management-url", proxy.url, "--key-file", str(key_file), *host]  # fmt: skip
    sc = SidecarProc(args, tmp_path / "decisions.jsonl")
    pages = []
    try:
        sc.wait_ticks(2)
        url = re.search(r"metrics (http://\S+/metrics)", sc.output).group(1)
        listening = _listening(sc.pid)
        pages.append(requests.get(url.replace("0.0.0.0", "127.0.0.1"), timeout=5).text)
        proxy.set_mode("blackhole")  # errors: timeouts, unreachable records, warnings
        time.sleep(8.0)
        pages.append(requests.get(url.replace("0.0.0.0", "127.0.0.1"), timeout=5).text)
        proxy.set_mode("pass")
        sc.wait_ticks(len([r for r in sc.records() if "tick" in r]) + 2)
    finally:
        code = sc.stop()
        proxy.close()
    assert code == 0, sc.output
    written = [sc.output, sc.decisions.read_text(), *pages]
    written += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert any('"event": "unreachable"' in w for w in written)  # the error path ran
    for api, key in keys.items():
        assert not any(key in w for w in written), f"the {api} key leaked"
    assert _fingerprint(key_file) == before  # read, never written
    copies = [p for p in Path(torchserve.workdir).rglob("*") if p.is_file() and p != key_file
              and keys["management"].encode() in p.read_bytes()]  # fmt: skip
    assert copies == []
    if metrics_host == "default":
        assert listening and all(ip == "127.0.0.1" for ip, _ in listening)
    else:
        assert any(ip == "0.0.0.0" for ip, _ in listening)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "adapt/models"), ("PUT", f"adapt/models/{MODEL}")]
)
@pytest.mark.parametrize("token", ["none", "inference", "wrong"])
def test_adapt_refuses_callers_without_the_management_token(
    torchserve: Any, method: str, path: str, token: str
) -> None:
    keys = _keys(Path(torchserve.server.key_file))
    headers = {
        "none": {},
        "inference": {"Authorization": f"Bearer {keys['inference']}"},
        "wrong": {"Authorization": "Bearer not-the-key"},
    }[token]
    before = torchserve.client.describe(MODEL)["batchSize"]
    resp = requests.request(
        method, f"{torchserve.management_url}/{path}", headers=headers,
        params={"batch_size": before + 1} if method == "PUT" else None, timeout=10,
    )  # fmt: skip
    assert resp.status_code in (400, 401, 403), resp.text
    assert torchserve.client.describe(MODEL)["batchSize"] == before
    ok = requests.get(f"{torchserve.management_url}/adapt/models", timeout=10,
                      headers={"Authorization": f"Bearer {keys['management']}"})  # fmt: skip
    assert ok.status_code == 200
