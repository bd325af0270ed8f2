"""The jitted train step (built by mert_jax.train.state.build on one device): gradient
accumulation over micro-batches, and a non-finite step applying no update."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data_pipeline import reader as reader_lib
from mert_jax.model.conv_extractor import num_frames
from mert_jax.objective.loss import pretraining_loss
from mert_jax.train import state as state_lib
from mert_jax.train.step import bind
from tests.train.helpers import tiny

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)

CLIPS = 8
# fp32 compute, and no gradient clipping: Adam's first moment after one update is then exactly
# (1 - b1) * gradient, which the tests read back (the first update itself is ~ lr * sign(gradient),
# blind to the gradient's scale).
EXACT = {"model.dtype": "float32", "optimizer.clip_norm": 1e9, "mesh": [1, 1, 1]}
# Every clip's loss independent of the key and of the other clips: no dropout or layerdrop, no
# mixup, and masks covering every frame (min_masks spans >= frames masks all frames, whatever
# the key).
KEY_FREE = {
  "model.dropout": 0.0,
  "model.attention_dropout": 0.0,
  "model.activation_dropout": 0.0,
  "model.dropout_input": 0.0,
  "model.layerdrop": 0.0,
  "objective.mixup_prob": 0.0,
  "objective.min_masks": 1000,
}


@pytest.fixture(scope="module")
def clips(data_dir: str) -> dict[str, np.ndarray]:
  """8 real training crops of the tiny recipe: audio (8, 48000), labels (8, 8, 150)."""
  c = tiny(data_dir)
  rcfg = reader_lib.ReaderConfig(
    crop_samples=c.crop_samples, batch_size=CLIPS, shuffle_window=1, seed=0
  )
  return next(iter(reader_lib.make_dataset(data_dir, rcfg, split="train")[0]))


def split(batch: dict[str, np.ndarray], accum: int) -> dict[str, jax.Array]:
  """(B, ...) clips -> (accum, B / accum, ...): micro-batch i holds clips i * B / accum onwards."""
  return {
    k: jnp.asarray(v.reshape(accum, v.shape[0] // accum, *v.shape[1:])) for k, v in batch.items()
  }


def adam_mu(state: dict[str, Any]) -> Any:
  return state["opt_state"][1][0].mu


def assert_grads_close(got: Any, want: Any, what: str) -> None:
  """fp32 agreement of two gradient trees: per element, to 1e-5 of the largest entry of its
  parameter, or 1e-7 of the largest entry overall (a gradient that is zero in exact arithmetic,
  e.g. of the key bias, is pure rounding noise)."""
  scale = max(float(np.max(np.abs(w))) for w in jax.tree.leaves(want))
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    atol = 1e-5 * float(np.max(np.abs(w))) + 1e-7 * scale
    np.testing.assert_allclose(
      g, w, rtol=1e-4, atol=atol, err_msg=f"gradient {jax.tree_util.keystr(path)}, {what}"
    )


def one_update(
  setup: state_lib.TrainSetup, batch: dict[str, jax.Array], seed_key: jax.Array
) -> tuple[dict[str, Any], dict[str, Any]]:
  """(state, metrics) on the host after one step from the initial state."""
  state, metrics = setup.train_step(setup.init(), batch, seed_key)
  return jax.device_get(state), jax.device_get(metrics)


def test_grad_accumulation_layouts_give_the_same_update(data_dir, clips):
  """8 clips as 1 x 8, 2 x 4 and 4 x 2 micro-batches give the same gradient, update and metrics.

  Exact math: with no dropout, no mixup and every frame masked (KEY_FREE), clip c's summed loss
  l_c and its masked frames n_c = T do not depend on the key or on the other clips, so every
  layout's update is sum_c grad l_c / (8 T). (The feature penalty, a per-micro-batch mean times
  the micro-batch's masked frames, sums to the same total because micro-batches are equal.)
  Only fp32 summation order differs. The price: with every frame masked the encoder sees no audio
  (attention is uniform, q/k gradients ~0); the next test covers random masks."""
  setup = state_lib.build(tiny(data_dir, **EXACT, **KEY_FREE), devices=jax.devices()[:1])
  b1 = setup.config.optimizer.b1
  t = num_frames(clips["audio"].shape[-1], setup.mcfg.conv_layers)  # 149 model frames (150 labels)
  out = {a: one_update(setup, split(clips, a), jax.random.key(0)) for a in (1, 2, 4)}
  ref_state, ref_m = out[1]
  ref_grads = jax.tree.map(lambda mu: mu / (1 - b1), adam_mu(ref_state))
  assert ref_m["num_masked"] == CLIPS * t  # every frame of every clip masked
  assert bool(ref_m["finite"]) and ref_m["grad_norm"] > 0
  for a in (2, 4):
    state, m = out[a]
    assert int(state["updates"]) == 1 and m["num_masked"] == CLIPS * t
    for k in ("loss", "loss_codes", "loss_cqt", "features_pen", "grad_norm"):
      np.testing.assert_allclose(m[k], ref_m[k], rtol=1e-5, err_msg=f"{k}, {a} micro-batches")
    np.testing.assert_allclose(m["accuracy"], ref_m["accuracy"], rtol=1e-5)
    grads = jax.tree.map(lambda mu: mu / (1 - b1), adam_mu(state))
    assert_grads_close(grads, ref_grads, f"{a} micro-batches")
    # Adam's first update is lr * g / (|g| + eps): where |g| is near eps it magnifies the fp32
    # summation noise of g (checked tightly above), so parameters agree to 1 % of that one step.
    step_size = float(ref_m["lr"])
    for p, r in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(ref_state["params"])):
      np.testing.assert_allclose(p, r, rtol=0, atol=0.01 * step_size)


def test_grad_accumulation_is_summed_micro_batch_gradients_over_all_masked_frames(data_dir, clips):
  """With random masks, mixup and dropout on, 2 micro-batches of 4 clips: the step's gradient is
  (grad loss_sum(mb 0, k0) + grad loss_sum(mb 1, k1)) / (n0 + n1), k_i = fold_in(fold_in(seed,
  step), i), n_i the micro-batch's masked frames; not the mean of per-micro-batch averages (the
  n_i differ, checked). The reference calls pretraining_loss directly, without the step's scan."""
  setup = state_lib.build(tiny(data_dir, **EXACT), devices=jax.devices()[:1])
  seed_key, accum = jax.random.key(3), 2
  batch = split(clips, accum)
  params0 = jax.device_get(setup.init()["params"])
  state, m = one_update(setup, batch, seed_key)

  @jax.jit
  def micro(params, mb, key):
    def loss_sum(p):
      _, mm = pretraining_loss(bind(setup.graphdef, setup.template, p), mb, key, cfg=setup.ocfg)
      return mm["loss_sum"], mm

    return jax.grad(loss_sum, has_aux=True)(params)

  key = jax.random.fold_in(seed_key, 0)  # the state's step counter is 0
  parts = [
    jax.device_get(micro(params0, jax.tree.map(lambda x: x[i], batch), jax.random.fold_in(key, i)))
    for i in range(accum)
  ]
  ns = [float(mm["num_masked"]) for _, mm in parts]
  assert ns[0] != ns[1], ns  # the division by the total matters
  total = sum(ns)
  want = jax.tree.map(
    lambda *g: sum(np.asarray(x, np.float64) for x in g) / total, *[g for g, _ in parts]
  )
  got = jax.tree.map(lambda mu: mu / (1 - setup.config.optimizer.b1), adam_mu(state))
  assert_grads_close(got, want, "2 micro-batches")
  assert m["num_masked"] == total
  np.testing.assert_allclose(
    m["loss"], sum(float(mm["loss_sum"]) for _, mm in parts) / total, rtol=1e-5
  )
  np.testing.assert_allclose(m["grad_norm"], optax.tree.norm(want), rtol=1e-5)


def test_nonfinite_step_applies_no_update(data_dir):
  setup = state_lib.build(tiny(data_dir, mesh=[1, 1, 1]), devices=jax.devices()[:1])
  audio = np.random.RandomState(0).randn(1, 4, 48000).astype(np.float32) * 0.1
  labels = np.zeros((1, 4, 8, 150), np.int32)
  good, m = setup.train_step(
    setup.init(), {"audio": jnp.asarray(audio), "labels": jnp.asarray(labels)}, jax.random.key(0)
  )
  assert bool(m["finite"]) and int(good["updates"]) == 1
  kept = jax.device_get(good)  # the next step donates `good`
  audio[0, 2, 100] = np.nan
  bad, m = setup.train_step(
    good, {"audio": jnp.asarray(audio), "labels": jnp.asarray(labels)}, jax.random.key(0)
  )
  assert not bool(m["finite"])
  counters = ("step", "updates", "nonfinite_total", "nonfinite_run")
  assert tuple(int(bad[k]) for k in counters) == (2, 1, 1, 1)
  for a, b in zip(jax.tree.leaves(kept["params"]), jax.tree.leaves(bad["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(kept["opt_state"]), jax.tree.leaves(bad["opt_state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
