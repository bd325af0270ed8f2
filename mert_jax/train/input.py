"""The trainer's input: which data folder, whether it fits the model, and the per-process batches
placed as global arrays on the mesh."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from data_pipeline import default_corpus
from data_pipeline import reader as reader_lib
from mert_jax import workdir_files
from mert_jax.config import ModelConfig
from mert_jax.train import distributed
from mert_jax.train.run_config import RunConfig


class DataError(ValueError):
  """The data folder does not fit the run; the message names the folder and what to change (the
  trainer prints it as one line)."""


def resolve_data_dir(config: RunConfig, mcfg: ModelConfig, workdir: str) -> str:
  """``config.data.dir``, or the embedded default corpus prepared (once, by process 0) under the
  workdir."""
  if config.data.dir:
    return config.data.dir
  root = os.path.join(workdir, workdir_files.DATA)
  if jax.process_index() == 0:
    default_corpus.ensure_default_corpus(
      root,
      num_codebooks=mcfg.num_codebooks,
      codebook_size=mcfg.codebook_size,
      minutes=config.data.default_minutes,
      seed=config.seed,
    )
  distributed.sync("default corpus prepared")
  return default_corpus.corpus_dir(root, mcfg.num_codebooks, mcfg.codebook_size)


def load_manifest(data_dir: str) -> dict[str, Any]:
  """The folder's manifest; a folder ``prepare`` did not write is a ``DataError``."""
  try:
    return reader_lib.load_manifest(data_dir)
  except FileNotFoundError as e:
    raise DataError(str(e)) from e


def check_manifest(
  manifest: dict[str, Any], mcfg: ModelConfig, data_dir: str, targets: str = "teacher"
) -> None:
  """Refuses a dataset whose teacher shape (when its codes are the targets), sample rate or label
  hop differs from the model's (``DataError``)."""
  got = (manifest["num_codebooks"], manifest["codebook_size"])
  if targets == "teacher" and got != (mcfg.num_codebooks, mcfg.codebook_size):
    raise DataError(
      f"{data_dir}: the teacher has {got[0]} codebooks of {got[1]} codes but the model expects "
      f"{mcfg.num_codebooks} x {mcfg.codebook_size}; set --config.model.num_codebooks / "
      f"--config.model.codebook_size"
    )
  if manifest["sample_rate"] != mcfg.sample_rate:
    raise DataError(
      f"{data_dir}: the data is at {manifest['sample_rate']} Hz but the model "
      f"(model.sample_rate) expects {mcfg.sample_rate} Hz; prepare the data at the model's rate"
    )
  if manifest["hop"] != mcfg.frame_stride:
    raise DataError(
      f"{data_dir}: the teacher labels every {manifest['hop']} samples but the model's frame "
      f"stride (product of model.conv_layers strides) is {mcfg.frame_stride}; they must match"
    )


def reader_config(config: RunConfig, groups: int) -> reader_lib.ReaderConfig:
  return reader_lib.ReaderConfig(
    crop_samples=config.crop_samples,
    batch_size=config.batch_size // groups,
    shuffle_window=config.data.shuffle_window,
    seed=config.seed,
    train_shards=config.data.train_shards,
  )


def train_stream(data_dir: str, rcfg: reader_lib.ReaderConfig, groups: int):
  """(dataset, drop counters) of this process's share of the training groups. The reader's checks
  (shard sizes, shards per process, data.train_shards) fail as a ``DataError``."""
  try:
    return reader_lib.make_grouped_dataset(
      data_dir,
      rcfg,
      groups=groups,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
  except ValueError as e:
    raise DataError(str(e)) from e


def restart_seed(seed: int, step: int) -> int:
  """The seed of a fresh data stream started at ``step`` (data.on_state_mismatch=restart)."""
  return seed * 1_000_003 + step


def global_batch(
  local: dict[str, np.ndarray], accum: int, shardings: dict[str, NamedSharding]
) -> dict[str, jax.Array]:
  """Per-process (groups_local, B_group, ...) numpy -> global (accum, B / accum, ...) arrays with
  ``shardings`` (the trainer's ``TrainSetup.batch_shardings``: the clip axis split as the ``batch``
  rule says). Micro-batch i takes the i-th slice of every group, so the global micro-batches do not
  depend on how the groups are spread over processes."""
  out = {}
  for k, v in local.items():
    g, b = v.shape[:2]
    v = (
      v.reshape(g, accum, b // accum, *v.shape[2:])
      .swapaxes(0, 1)
      .reshape(accum, g * (b // accum), *v.shape[2:])
    )
    global_shape = (accum, v.shape[1] * jax.process_count(), *v.shape[2:])
    out[k] = jax.make_array_from_process_local_data(shardings[k], v, global_shape)
  return out
