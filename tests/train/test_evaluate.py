"""Held-out evaluation through the trainer: the logged eval_* metrics against a hand computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipeline import reader as reader_lib
from mert_jax import recipe
from mert_jax.checkpointing import model_checkpoint
from mert_jax.objective.loss import pretraining_loss
from mert_jax.train.loop import train
from tests.train.helpers import rows, tiny

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)


def test_eval_metrics_equal_a_hand_computation(data_dir, tmp_path):
  """eval_every=2 through train() (2 micro-batches per step on a (4, 1, 2) mesh): the eval_ row of
  step 2 equals the final parameters' deterministic loss on the first eval_batches batches of the
  valid split (crops of seed 0, no shuffle, batch_size clips), batch i masked and mixed with
  key(10_000 + i), its loss sums added over the batches and divided by the total masked frames."""
  wd = str(tmp_path / "run")
  c = tiny(
    data_dir,
    total_steps=2,
    eval_every=2,
    eval_batches=2,
    **{"model.dtype": "float32", "optimizer.grad_accum_steps": 2, "mesh": [4, 1, 2]},
  )
  train(c, wd)
  evals = [r for r in rows(wd) if "eval_loss" in r]
  assert [r["step"] for r in evals] == [2]
  got = evals[0]

  model = model_checkpoint.load_model(wd)  # the last checkpoint: step 2, evaluated above
  assert model.cfg.dtype == "float32"
  ocfg = recipe.objective_config_from(c)
  loss = jax.jit(
    lambda batch, key: pretraining_loss(model, batch, key, cfg=ocfg, deterministic=True)[1]
  )
  rcfg = reader_lib.ReaderConfig(
    crop_samples=c.crop_samples, batch_size=c.batch_size, shuffle_window=1, seed=0
  )
  it = iter(reader_lib.make_dataset(data_dir, rcfg, split="valid")[0])
  sums = {
    "loss_sum": 0.0,
    "num_masked": 0.0,
    "ce_sum": 0.0,
    "correct": 0.0,
    "cqt_sq_sum": 0.0,
    "pen_weighted": 0.0,
  }
  for i in range(c.eval_batches):
    batch = jax.tree.map(jnp.asarray, next(it))
    assert batch["audio"].shape == (c.batch_size, c.crop_samples)
    m = jax.device_get(loss(batch, jax.random.key(10_000 + i)))
    for k in ("loss_sum", "num_masked", "ce_sum", "correct", "cqt_sq_sum"):
      sums[k] = sums[k] + np.asarray(m[k], np.float64)
    sums["pen_weighted"] += float(m["features_pen"]) * float(m["num_masked"])
  n = sums["num_masked"]
  assert got["eval_num_masked"] == n
  np.testing.assert_allclose(got["eval_loss"], sums["loss_sum"] / n, rtol=1e-5)
  np.testing.assert_allclose(got["eval_loss_codes"], np.sum(sums["ce_sum"]) / n, rtol=1e-5)
  np.testing.assert_allclose(
    got["eval_loss_cqt"], sums["cqt_sq_sum"] / (n * model.cfg.cqt_bins), rtol=1e-5
  )
  np.testing.assert_allclose(got["eval_features_pen"], sums["pen_weighted"] / n, rtol=1e-5)
  np.testing.assert_allclose(got["eval_accuracy"], sums["correct"] / n, rtol=1e-5, atol=1e-7)
