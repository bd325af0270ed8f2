"""What the model must predict on masked frames: the codes of one teacher and the CQT regression
target, both from the clean audio (before mixup).

Codes (``objective.targets``):
  teacher  the data's offline teacher (k-means or EnCodec codes, data_pipeline.prepare), read with
           the batch as ``labels`` (B, K, T_lab);
  bestrq   random-projection quantizer codes computed here, inside the jitted step
           (mert_jax/objective/bestrq.py); the batch's labels are not read.
Both give (B, T, K) int32 codes in [0, model.codebook_size).

CQT target (``objective.cqt_target``): ``raw`` magnitudes (MERT's code) or ``log_standardised``
(log magnitudes standardised per bin with the corpus statistics of
mert_jax/objective/target_stats.py).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.model.conv_extractor import num_frames
from mert_jax.objective import bestrq
from mert_jax.objective import cqt as cqt_lib
from mert_jax.objective import target_stats_file as target_stats

CqtFn = Callable[[jax.Array], jax.Array]  # (B, L) audio -> (B, T_cqt >= T, bins) magnitudes


def cqt_fn(mcfg: ModelConfig, cfg: ObjectiveConfig) -> CqtFn:
  """The configured CQT (mert_jax.objective.cqt) for this model: its bins, frame stride and rate."""
  return functools.partial(
    cqt_lib.cqt,
    sample_rate=mcfg.sample_rate,
    hop_length=mcfg.frame_stride,
    fmin=cfg.cqt_fmin,
    n_bins=mcfg.cqt_bins,
    bins_per_octave=cfg.cqt_bins_per_octave,
    method=cfg.cqt_method,
  )


def regression_target(cqt: jax.Array, cfg: ObjectiveConfig) -> jax.Array:
  """(B, T, bins) CQT magnitudes -> the configured regression target, float32."""
  if cfg.cqt_target == "raw":
    return cqt
  stats = target_stats.load(cfg.target_stats)
  return (target_stats.log_floor(cqt) - stats["cqt_mean"]) / stats["cqt_std"]


def codes(
  audio: jax.Array,
  cqt: jax.Array,
  labels: jax.Array | None,
  mcfg: ModelConfig,
  cfg: ObjectiveConfig,
) -> jax.Array:
  """(B, T, K) int32 target codes of the clean audio (B, L); ``cqt``: its (B, >= T, bins)
  magnitudes; ``labels``: the teacher's (B, K, T_lab) codes (read with targets="teacher")."""
  if cfg.targets == "bestrq":
    return bestrq.codes(audio, cqt, mcfg, cfg)
  if labels is None:
    raise ValueError("objective.targets=teacher needs the batch's labels")
  frames = num_frames(audio.shape[1], mcfg.conv_layers)
  return jnp.moveaxis(labels[:, :, :frames], 1, 2).astype(jnp.int32)
