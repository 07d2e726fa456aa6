"""A new policy file without a restart: ``tsadapt control --policy-file F`` re-reads F on
SIGHUP and records the switch (old/new file, checksum) in the decision log; a corrupt or
mismatched file is refused and logged, and the old policy keeps running. Also: a policy
file whose network does not take this code's observation size is refused at load."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tsadapt.policy.agent_view import OBS_LAYOUT
from tsadapt.policy.controller_config import from_dict
from tsadapt.policy.factory import make_policy
from tsadapt.policy.ppo_policy import (
    FIRST_LAYER,
    META_MEMBER,
    SHIPPED_POLICY,
    WEIGHTS_MEMBER,
    PolicyFileError,
    copy_policy_file,
    file_sha256,
    load_policy_file,
    read_metadata,
)
from tsadapt.policy.ppo_runtime import load_actor
from tsadapt.sidecar.decision_log import read_log
from tsadapt.sidecar.policy_reload import PolicySource
from tsadapt.sidecar.runner import Sidecar

CONFIG = {
    "policy": "ppo",
    "tick_s": 0.2,
    "window_s": 1.0,
    "worker_budget": 1,
    "cooldown_s": 1.0,
    "models": {"text": {"slo_ms": 150, "min_workers": 1, "max_workers": 1, "max_batch": 32}},
}


def load_ppo(path: Path, cfg: Any) -> Any:
    return make_policy("ppo", cfg, path)


def wrong_obs_size(src: Path, dst: Path, inputs: int) -> Path:
    """``src`` with a first layer that takes ``inputs`` entries (metadata untouched)."""
    import torch

    with zipfile.ZipFile(src) as z:
        meta = z.read(META_MEMBER)
        state = torch.load(io.BytesIO(z.read(WEIGHTS_MEMBER)), weights_only=True)
    w = state[FIRST_LAYER]
    state[FIRST_LAYER] = torch.zeros((w.shape[0], inputs), dtype=w.dtype)
    buf = io.BytesIO()
    torch.save(state, buf)
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr(META_MEMBER, meta)
        z.writestr(WEIGHTS_MEMBER, buf.getvalue())
    return dst


def another_policy(dst: Path) -> Path:
    """The shipped weights under new metadata: another file, another checksum."""
    meta = read_metadata(SHIPPED_POLICY)
    return copy_policy_file(SHIPPED_POLICY, dst, {**meta, "command": "a retrained policy"})


@pytest.mark.parametrize("loader", ["numpy", "torch"])
def test_observation_size_mismatch_names_both_sizes(tmp_path: Path, loader: str) -> None:
    bad = wrong_obs_size(SHIPPED_POLICY, tmp_path / "bad.zip", len(OBS_LAYOUT) + 3)
    want = rf"observation of {len(OBS_LAYOUT) + 3} entries, this code gives {len(OBS_LAYOUT)}"
    with pytest.raises(PolicyFileError, match=want):
        load_actor(bad) if loader == "numpy" else load_policy_file(bad)


def test_layout_mismatch_names_both_sizes(tmp_path: Path) -> None:
    meta = read_metadata(SHIPPED_POLICY)
    f = copy_policy_file(SHIPPED_POLICY, tmp_path / "p.zip", meta)
    with zipfile.ZipFile(f) as z:
        weights, doc = z.read(WEIGHTS_MEMBER), json.loads(z.read(META_MEMBER))
    doc["observation_layout"] = doc["observation_layout"][:-2]
    with zipfile.ZipFile(f, "w") as z:
        z.writestr(META_MEMBER, json.dumps(doc))
        z.writestr(WEIGHTS_MEMBER, weights)
    n = len(OBS_LAYOUT)
    with pytest.raises(PolicyFileError, match=rf"\({n - 2} entries in the file, {n} here"):
        load_actor(f)


def unreachable() -> Any:
    raise ConnectionError("no server in this test")


@pytest.fixture
def running(tmp_path: Path) -> tuple[Sidecar, Path, Path]:
    live = tmp_path / "policy.zip"
    shutil.copy(SHIPPED_POLICY, live)
    cfg = from_dict(CONFIG)
    policy, source = PolicySource.open(live, load_ppo, cfg)
    log = tmp_path / "decisions.jsonl"
    sidecar = Sidecar(cfg, policy, unreachable, log, policy_source=source)
    return sidecar, live, log


def reload_records(log: Path) -> list[dict[str, Any]]:
    return [r for r in read_log(log) if str(r.get("event", "")).startswith("policy_reload")]


def test_reload_switches_and_logs_checksums(running: tuple, tmp_path: Path) -> None:
    sidecar, live, log = running
    old_policy, old_sha = sidecar.policy, file_sha256(live)
    another_policy(tmp_path / "new.zip").replace(live)
    new_sha = file_sha256(live)
    assert new_sha != old_sha
    sidecar.request_reload()
    sidecar.tick()
    sidecar.close()
    (rec,) = reload_records(log)
    assert rec["event"] == "policy_reload"
    assert rec["old"] == {"file": str(live), "sha256": old_sha}
    assert rec["new"] == {"file": str(live), "sha256": new_sha}
    assert sidecar.policy is not old_policy
    assert sidecar.policy.metadata["command"] == "a retrained policy"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "obs-size", "missing"])
def test_bad_file_is_refused_and_old_policy_kept(
    running: tuple, tmp_path: Path, damage: str
) -> None:
    sidecar, live, log = running
    old_policy, old_sha = sidecar.policy, file_sha256(live)
    if damage == "garbage":
        live.write_bytes(b"not a policy")
    elif damage == "truncated":
        live.write_bytes(live.read_bytes()[:2000])
    elif damage == "obs-size":
        wrong_obs_size(SHIPPED_POLICY, tmp_path / "w.zip", 5).replace(live)
    else:
        live.unlink()
    sidecar.request_reload()
    sidecar.tick()
    sidecar.tick()  # keeps ticking with the old policy
    sidecar.close()
    (rec,) = reload_records(log)
    assert rec["event"] == "policy_reload_refused"
    assert rec["kept"] == {"file": str(live), "sha256": old_sha}
    assert str(live) in rec["error"]
    if damage == "obs-size":
        assert f"observation of 5 entries, this code gives {len(OBS_LAYOUT)}" in rec["error"]
    assert sidecar.policy is old_policy and sidecar.policy_source.sha256 == old_sha
    assert sidecar.tick_count == 2


def test_reload_without_a_policy_file_is_logged(tmp_path: Path) -> None:
    cfg = from_dict({**CONFIG, "policy": "queue"})
    log = tmp_path / "d.jsonl"
    sidecar = Sidecar(cfg, make_policy("queue", cfg), unreachable, log)
    sidecar.request_reload()
    sidecar.tick()
    sidecar.close()
    (rec,) = reload_records(log)
    assert rec["event"] == "policy_reload_refused" and rec["error"] == "no policy file"


def wait_for(log: Path, pred: Any, timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = read_log(log) if log.exists() else []
        if pred(records):
            return records
        time.sleep(0.2)
    raise AssertionError(f"timed out; log: {read_log(log) if log.exists() else 'none'}")


@pytest.mark.server
def test_sighup_reloads_a_running_controller(torchserve: Any, tmp_path: Path) -> None:
    """``tsadapt control`` as a user runs it: a new file, then a corrupt one."""
    from test_sidecar_server import put, snapshot

    from tsadapt.plugin.adapt_client import AdaptClient

    adapt = AdaptClient(torchserve.client)
    before = snapshot(adapt)["text"]
    live = tmp_path / "policy.zip"
    shutil.copy(SHIPPED_POLICY, live)
    cfg_file = tmp_path / "controller.yaml"
    cfg_file.write_text(json.dumps({**CONFIG, "tick_s": 0.5}))
    log = tmp_path / "decisions.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tsadapt.cli.main", "control",
            "--config", str(cfg_file), "--policy", "ppo", "--policy-file", str(live),
            "--workdir", str(torchserve.workdir), "--decision-log", str(log),
            "--metrics-port", "0",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def ticks(records: list) -> int:
            return sum(r.get("event") == "tick" for r in records)

        recs = wait_for(log, lambda r: ticks(r) >= 2)
        (first,) = [r for r in recs if r.get("event") == "policy_file"]
        assert first["sha256"] == file_sha256(SHIPPED_POLICY)
        another_policy(tmp_path / "new.zip").replace(live)
        proc.send_signal(signal.SIGHUP)
        recs = wait_for(log, lambda r: len(reload_records(log)) >= 1)
        ok = reload_records(log)[0]
        assert ok["event"] == "policy_reload"
        assert ok["old"]["sha256"] == file_sha256(SHIPPED_POLICY)
        assert ok["new"]["sha256"] == file_sha256(live)
        good_sha = file_sha256(live)
        live.write_bytes(b"PK\x03\x04 corrupt")
        proc.send_signal(signal.SIGHUP)
        wait_for(log, lambda r: len(reload_records(log)) >= 2)
        n = ticks(read_log(log))
        wait_for(log, lambda r: ticks(r) >= n + 2)  # still controlling, old policy
        bad = reload_records(log)[1]
        assert bad["event"] == "policy_reload_refused"
        assert bad["kept"]["sha256"] == good_sha
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        put(torchserve, adapt, "text", *before)
    assert proc.returncode == 0, out
    assert "policy reload refused" in out
    assert read_log(log)[-1]["event"] == "stop"
