"""The numpy-only PPO runtime gives the torch path's actions and never imports torch."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tsadapt.policy.agent_view import OBS_LAYOUT
from tsadapt.policy.ppo_policy import SHIPPED_POLICY, PolicyFileError, PPOPolicy
from tsadapt.policy.ppo_runtime import load_actor, read_state_dict
from tsadapt.policy.sim.control import controller_config_for, run_controlled
from tsadapt.policy.sim.scenario import load_scenario

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "stable_baselines3", "gymnasium")


@pytest.fixture(scope="module")
def torch_net():
    from tsadapt.policy.ppo_policy import load_policy_file

    net, _ = load_policy_file(SHIPPED_POLICY)
    return net


def test_state_dict_matches_torch(torch_net) -> None:
    with zipfile.ZipFile(SHIPPED_POLICY) as z:
        ours = read_state_dict(z.read("policy.pt"))
    theirs = torch_net.state_dict()
    assert set(ours) == set(theirs)
    for key, tensor in theirs.items():
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_actions_as_torch_on_many_observations(torch_net, seed: int) -> None:
    """20,000 observations: uniform in the unit box, near-corners, and all-equal rows."""
    actor, _ = load_actor(SHIPPED_POLICY)
    rng = np.random.default_rng(seed)
    n = len(OBS_LAYOUT)
    x = np.concatenate(
        [
            rng.random((15_000, n)),
            rng.choice([0.0, 1.0], size=(4_000, n)) * rng.uniform(0.9, 1.0, (4_000, n)),
            np.repeat(np.linspace(0, 1, 1_000)[:, None], n, axis=1),
        ]
    ).astype(np.float32)
    want, _ = torch_net.predict(x, deterministic=True)
    np.testing.assert_array_equal(actor.act(x), np.asarray(want, dtype=np.int64))


def test_same_decisions_in_closed_loop() -> None:
    """Behind the guards on a simulated scenario both policies make identical runs."""
    sc = load_scenario(REPO / "configs" / "scenarios" / "bursty-shared.yaml")
    config = controller_config_for(sc, policy="ppo")
    a = run_controlled(sc, PPOPolicy.from_file(SHIPPED_POLICY, config, torch=True), config, seed=3)
    b = run_controlled(sc, PPOPolicy.from_file(SHIPPED_POLICY, config), config, seed=3)
    assert b.policy == "ppo"
    assert a.reconfigurations == b.reconfigurations > 0
    assert a.as_dict() == b.as_dict()


def test_import_chain_has_no_torch() -> None:
    code = (
        "import sys\n"
        "from tsadapt.policy.factory import make_policy\n"
        "import tsadapt.sidecar.runner, tsadapt.cli.control_commands, tsadapt.serve.attach\n"
        "from tsadapt.policy.sim.control import scenario_config\n"
        f"cfg = scenario_config(r'{REPO / 'configs' / 'controller.yaml'}',"
        f" r'{REPO / 'loadtests' / 'scenarios' / 'bursty.yaml'}', policy='ppo')\n"
        f"p = make_policy('ppo', cfg, r'{SHIPPED_POLICY}')\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_refuses_code_in_weights(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with zipfile.ZipFile(SHIPPED_POLICY) as z:
        meta = z.read("metadata.json")
    inner = tmp_path / "w.zip"
    with zipfile.ZipFile(inner, "w") as w:
        w.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}))
        w.writestr("archive/byteorder", "little")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("metadata.json", meta)
        z.writestr("policy.pt", inner.read_bytes())
    with pytest.raises(PolicyFileError, match="unexpected global builtins.print"):
        load_actor(bad)
