"""The optimizer: the learning-rate schedule (warm-up from the first update, linear decay to 0)
and which parameters get weight decay."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import mert as mert_configs
from mert_jax.train.optim import decay_mask, learning_rate_schedule, make_optimizer

PEAK, WARMUP, TOTAL = 2e-3, 20, 200


def lr_at(update: int, schedule=None) -> float:
  """The learning rate of the ``update``-th update (u, counted from 1); optax passes u - 1."""
  schedule = schedule or learning_rate_schedule(PEAK, WARMUP, TOTAL)
  return float(jax.jit(schedule)(jnp.int32(update - 1)))


def test_schedule_warmup_peak_and_linear_decay_to_zero():
  # float32: 1 - (u - warm-up) / (total - warm-up) near the end loses ~1e-7 of the peak.
  approx = lambda x: pytest.approx(x, rel=1e-6, abs=1e-7 * PEAK)
  assert lr_at(1) == approx(PEAK / WARMUP)  # the first update: peak / warm-up
  assert lr_at(2) == approx(2 * PEAK / WARMUP)
  assert lr_at(WARMUP // 2) == approx(PEAK / 2)  # mid warm-up
  assert lr_at(WARMUP) == approx(PEAK)  # peak at u = warm-up
  assert lr_at(WARMUP + 1) == approx(PEAK * (1 - 1 / (TOTAL - WARMUP)))
  assert lr_at((WARMUP + TOTAL) // 2) == approx(PEAK / 2)  # half-way down
  assert lr_at(TOTAL - 1) == approx(PEAK / (TOTAL - WARMUP))
  assert lr_at(TOTAL) == 0.0  # 0 at total_steps
  assert lr_at(TOTAL + 1) == 0.0 and lr_at(10 * TOTAL) == 0.0  # clipped at 0 after


def test_schedule_without_warmup_starts_at_peak():
  no_warmup = learning_rate_schedule(PEAK, 0, TOTAL)
  assert lr_at(1, no_warmup) == pytest.approx(PEAK, rel=1e-6)
  assert lr_at(TOTAL, no_warmup) == 0.0


def optimizer_config(**over) -> ml_collections.ConfigDict:
  c = mert_configs.get_config("tiny").optimizer
  c.update(dict(lr=PEAK, warmup_steps=WARMUP, **over))
  return c


def test_optimizer_steps_follow_the_schedule_from_the_first_update():
  """A constant unit gradient on zero parameters: each Adam direction is 1 (bias-corrected), so
  update u moves every parameter by -lr(u) (no decay of zero parameters)."""
  tx, _ = make_optimizer(optimizer_config(), TOTAL)
  params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros((4,))}
  grads = jax.tree.map(jnp.ones_like, params)
  opt = tx.init(params)
  for u in (1, 2, 3):
    updates, opt = tx.update(grads, opt, params)
    for x in jax.tree.leaves(updates):
      np.testing.assert_allclose(x, -lr_at(u) / (1 + 1e-6), rtol=1e-5)


def test_decay_mask_all_and_matrices():
  params = {
    "w": jnp.zeros((3, 4)),
    "b": jnp.zeros((4,)),
    "conv": jnp.zeros((2, 3, 4)),
    "s": jnp.zeros(()),
  }
  assert decay_mask(params, "all") == {"w": True, "b": True, "conv": True, "s": True}
  assert decay_mask(params, "matrices") == {"w": True, "b": False, "conv": True, "s": False}
  with pytest.raises(
    ValueError, match=r"optimizer.weight_decay_on must be 'all' or 'matrices', got 'bias'"
  ):
    decay_mask(params, "bias")


@pytest.mark.parametrize("which,decayed", [("all", {"w", "b"}), ("matrices", {"w"})])
def test_weight_decay_reaches_the_masked_parameters(which, decayed):
  """Zero gradients on unit parameters: only decoupled weight decay moves them, by -lr * wd."""
  cfg = optimizer_config(weight_decay_on=which)
  tx, _ = make_optimizer(cfg, TOTAL)
  params = {"w": jnp.ones((3, 4)), "b": jnp.ones((4,))}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  for name, x in updates.items():
    want = -lr_at(1) * cfg.weight_decay if name in decayed else 0.0
    np.testing.assert_allclose(x, want, rtol=1e-6, err_msg=name)
  with pytest.raises(ValueError, match="weight_decay_on"):
    bad, _ = make_optimizer(optimizer_config(weight_decay_on="bias"), TOTAL)
    bad.init(params)
