"""The optimizer of spec §4: AdamW (betas 0.9/0.98, eps 1e-6, decoupled weight decay 0.01 on
every parameter by default), linear warm-up then linear decay to 0 (fairseq polynomial_decay with
power 1), global-norm clipping. Gradient accumulation and the non-finite guard live in the train
step (mert_jax/train/step.py)."""

from __future__ import annotations

from typing import Any

import jax
import optax


def learning_rate_schedule(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """lr(u) = peak * u / warmup for u <= warmup, then linear to 0 at total_steps; u counts applied
  updates from 1 (so the first update uses peak / warmup, as fairseq)."""
  warm = max(int(warmup_steps), 1)

  def schedule(count):
    u = count + 1
    up = peak * u / warm
    # (total - u) / (total - warm), not 1 - (u - warm) / (total - warm): XLA multiplies by the
    # reciprocal of a constant divisor, and 1 - x would leave ~1e-8 * peak at u = total.
    down = peak * (total_steps - u) / max(total_steps - warm, 1)
    return jax.numpy.clip(jax.numpy.where(u <= warm, up, down), 0.0, peak)

  return schedule


def decay_mask(params: Any, which: str) -> Any:
  """Which parameters get weight decay: "all" (the reference) or "matrices" (ndim >= 2)."""
  if which == "all":
    return jax.tree.map(lambda _: True, params)
  if which == "matrices":
    return jax.tree.map(lambda p: p.ndim >= 2, params)
  raise ValueError(f"optimizer.weight_decay_on must be 'all' or 'matrices', got {which!r}")


def make_optimizer(
  opt_cfg: Any, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(transformation, schedule) from the ``optimizer`` config block."""
  schedule = learning_rate_schedule(opt_cfg.lr, opt_cfg.warmup_steps, total_steps)
  tx = optax.chain(
    optax.clip_by_global_norm(opt_cfg.clip_norm),
    optax.adamw(
      schedule,
      b1=opt_cfg.b1,
      b2=opt_cfg.b2,
      eps=opt_cfg.eps,
      weight_decay=opt_cfg.weight_decay,
      mask=lambda p: decay_mask(p, opt_cfg.weight_decay_on),
    ),
  )
  return tx, schedule
