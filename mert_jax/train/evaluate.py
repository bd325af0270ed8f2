"""Held-out loss: the first ``eval_batches`` batches of the valid split with fixed crops, masks and
mixup, so successive evaluations of a run compare like with like."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from data_pipeline import reader as reader_lib
from mert_jax.train.input import global_batch
from mert_jax.train.metrics import normalise_sums
from mert_jax.train.state import TrainSetup

EVAL_SEED = 0  # the valid split's crop positions
EVAL_KEY_OFFSET = (
  10_000  # batch i of every evaluation masks and mixes with key(EVAL_KEY_OFFSET + i)
)


def evaluate(
  setup: TrainSetup,
  params: Any,
  data_dir: str,
  manifest: dict[str, Any],
  rcfg: reader_lib.ReaderConfig,
) -> dict[str, Any]:
  """Loss terms and per-codebook accuracy summed over the batches, then normalised once, and the
  (K, C) ``code_counts`` of the target codes on the masked frames.

  Each process reads a share of the valid shards (all of them when there are fewer shards)."""
  config = setup.config
  paths = reader_lib.shard_paths(data_dir, manifest, "valid")
  readers = min(jax.process_count(), len(paths))
  ecfg = dataclasses.replace(
    rcfg, shuffle_window=1, seed=EVAL_SEED, batch_size=config.batch_size // jax.process_count()
  )
  it = iter(
    reader_lib.make_dataset(
      data_dir,
      ecfg,
      split="valid",
      process_index=jax.process_index() % readers,
      process_count=readers,
    )[0]
  )
  sums: dict[str, Any] = {}
  for i in range(config.eval_batches):
    local = jax.tree.map(lambda x: x[None], next(it))
    batch = global_batch(local, setup.grad_accum_steps, setup.batch_shardings)
    out = jax.device_get(setup.eval_step(params, batch, jax.random.key(EVAL_KEY_OFFSET + i)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64)
  out = normalise_sums(sums, setup.mcfg.cqt_bins)
  out["code_counts"] = sums["code_counts"]  # (K, C): the loop hands it to train/health.py
  return out
