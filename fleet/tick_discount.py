"""PPO's discount once per control tick, not once per pick.

With several picks per tick (``--picks K``) every pick is one environment step, and the
tick's reward comes on its last pick (0 before). A discount per step would push every later
reward ``gamma ** k`` away after a tick of ``k`` picks, so stopping at the first pick (the
no-op, "done") would always look better than picking on. Here a step that does not end a
tick carries no discount (and no GAE decay): the return is discounted by ``gamma`` per tick,
whatever number of picks the ticks took. With one pick per tick nothing changes.

The environment says which steps end a tick (``info["tick_end"]``, :mod:`fleet.env`);
:func:`tick_end_callback` copies it into :class:`TickRolloutBuffer` before SB3 stores the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def tick_rollout_buffer_class() -> type:
    """SB3's ``RolloutBuffer`` with a per-step discount (built lazily: SB3 imports torch)."""
    from stable_baselines3.common.buffers import RolloutBuffer

    class TickRolloutBuffer(RolloutBuffer):
        """``tick_end[step, env]``: 1 where the step ended a control tick (default 1)."""

        def reset(self) -> None:
            super().reset()
            self.tick_end = np.ones((self.buffer_size, self.n_envs), dtype=np.float32)

        def compute_returns_and_advantage(self, last_values: Any, dones: np.ndarray) -> None:
            last_values = last_values.clone().cpu().numpy().flatten()
            last_gae_lam = 0.0
            for step in reversed(range(self.buffer_size)):
                if step == self.buffer_size - 1:
                    next_non_terminal = 1.0 - dones.astype(np.float32)
                    next_values = last_values
                else:
                    next_non_terminal = 1.0 - self.episode_starts[step + 1]
                    next_values = self.values[step + 1]
                ends = self.tick_end[step]
                gamma = np.where(ends > 0, self.gamma, 1.0)
                lam = np.where(ends > 0, self.gae_lambda, 1.0)
                delta = self.rewards[step] + gamma * next_values * next_non_terminal
                delta = delta - self.values[step]
                last_gae_lam = delta + gamma * lam * next_non_terminal * last_gae_lam
                self.advantages[step] = last_gae_lam
            self.returns = self.advantages + self.values

    return TickRolloutBuffer


def tick_end_callback() -> Any:  # noqa: ANN401 - a stable_baselines3 BaseCallback
    """Copies each step's ``info["tick_end"]`` into the rollout buffer (SB3 calls ``on_step``
    after the environments step and before the buffer stores the step, at ``pos``)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _TickEnd(BaseCallback):
        def _on_step(self) -> bool:
            buf = self.model.rollout_buffer
            infos = self.locals["infos"]
            buf.tick_end[buf.pos] = [1.0 if i.get("tick_end", True) else 0.0 for i in infos]
            return True

    return _TickEnd()
