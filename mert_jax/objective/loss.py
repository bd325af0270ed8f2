"""MERT's pretraining objective (spec §1.8-1.10, §1.13), a pure function of a key and a batch.

  loss = [ sum_k w_k sum_masked CE_k  +  10 * features_pen * n
           +  1 * sum_masked sum_bins (cqt_pred - cqt)^2 / bins
           +  w_u * sum_visible sum_bins (cqt_pred - cqt)^2 / bins ] / n

with n the number of masked frames and w_k the codebook weights (objective.codebook_weights, MERT:
all 1); i.e. the weighted sum over codebooks of the mean masked CE, plus
10 * mean(conv features^2), plus the CQT MSE over masked frames and bins. CE_k is a softmax
cross-entropy over codebook k's C_k labels with logits cos(z_k, E_k[j]) / 0.1 (this equals
fairseq's "positive first, duplicate set to -inf" construction). Only masked, unpadded frames
carry loss unless objective.cqt_unmasked_weight w_u > 0 (MERT: 0; the CQT term on the visible
frames, fairseq HuBERT's pred_nomask_weight for the CQT head). The codes and the CQT target
come from the *clean* audio, before mixup (mert_jax/objective/targets.py: the offline teacher's
labels or BEST-RQ codes; raw or log-standardised CQT).

The step returns the sums and counts next to the loss so a trainer can sum them over devices
and micro-batches and normalise once, as fairseq does.

Shapes: audio (B, L) float; labels (B, K, T_lab) int codes in [0, codebook_size).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.model.conv_extractor import num_frames
from mert_jax.model.mert import MERTModel, check_audio
from mert_jax.objective import targets as targets_lib
from mert_jax.objective.masking import compute_mask
from mert_jax.objective.mixup import mixup

CqtFn = targets_lib.CqtFn

COSINE_EPS = 1e-8


def check_labels(labels: Any, audio_shape: tuple[int, int], cfg: ModelConfig) -> None:
  """Static checks of the label tensor against the audio; safe under jit."""
  shape, dtype = getattr(labels, "shape", None), getattr(labels, "dtype", None)
  b, length = audio_shape
  t = num_frames(length, cfg.conv_layers)
  if shape is None or len(shape) != 3 or shape[0] != b or shape[1] != cfg.num_codebooks:
    raise ValueError(
      f"labels must have shape (batch={b}, codebooks={cfg.num_codebooks}, frames); got {shape}"
    )
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"labels must be integer codes; got dtype {dtype}")
  if not t <= shape[2] <= t + 2:
    raise ValueError(
      f"labels have {shape[2]} frames but {length} audio samples give {t} model frames "
      f"(75 Hz at 24 kHz); a crop of L samples needs round(L / {cfg.frame_stride}) labels, "
      f"between {t} and {t + 2}. Were the tokens computed at another rate or for another crop?"
    )


def check_label_values(labels: np.ndarray, cfg: ModelConfig) -> None:
  """Host-side range check of label codes (call on numpy batches, never inside a step)."""
  lo, hi = int(np.min(labels)), int(np.max(labels))
  if lo < 0 or hi >= cfg.codebook_size:
    raise ValueError(
      f"labels hold codes in [{lo}, {hi}]; expected [0, {cfg.codebook_size}) "
      f"(model.codebook_size). Wrong teacher or codebook size?"
    )


def cosine_logits(z: jax.Array, emb: jax.Array, temp: float) -> jax.Array:
  """z (..., d), emb (C, d) -> cos(z, emb_j) / temp, (..., C) in float32."""
  z = z.astype(jnp.float32)
  emb = emb.astype(jnp.float32)
  zn = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), COSINE_EPS)
  en = emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), COSINE_EPS)
  return jnp.einsum("...d,cd->...c", zn, en, precision=jax.lax.Precision.HIGHEST) / temp


def codebook_losses(
  z: jax.Array, emb: jax.Array, targets: jax.Array, weights: jax.Array, temp: float
) -> tuple[jax.Array, jax.Array]:
  """Masked CE sums and correct counts per codebook.

  z (B, T, K, d) projections; emb (K, C, d); targets (B, T, K) label indices; weights (B, T) 0/1.
  Returns (ce_sum (K,), correct (K,)). Codebooks are processed one at a time under
  ``jax.checkpoint``, so only one codebook's (B, T, C) float32 logits are ever live.
  """

  @jax.checkpoint
  def one(args):
    zk, ek, tk = args  # (B, T, d), (C, d), (B, T)
    logits = cosine_logits(zk, ek, temp)  # (B, T, C) float32
    lse = jax.nn.logsumexp(logits, axis=-1)
    true = jnp.take_along_axis(logits, tk[..., None], axis=-1)[..., 0]
    ce = jnp.sum((lse - true) * weights)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == tk) * weights)
    return ce, correct

  ce, correct = jax.lax.map(one, (jnp.moveaxis(z, 2, 0), emb, jnp.moveaxis(targets, 2, 0)))
  return ce, correct


def cqt_target_fn(mcfg: ModelConfig, cfg: ObjectiveConfig) -> CqtFn:
  """The configured CQT magnitudes (mert_jax/objective/targets.py)."""
  return targets_lib.cqt_fn(mcfg, cfg)


@dataclasses.dataclass(frozen=True)
class MaskedForward:
  """What the model sees and must predict for one batch (B clips, T frames)."""

  cqt: jax.Array  # (B, T, bins) float32 regression target from the clean audio's CQT
  codes: jax.Array  # (B, T, K) int32 target codes of the clean audio (objective/targets.py)
  mask: jax.Array  # (B, T) bool, True = masked frame
  out: Any  # the model's output on the mixed, masked audio (last_hidden_state, features_pen, ...)


def masked_forward(
  model: MERTModel,
  audio: jax.Array,
  key: jax.Array,
  *,
  cfg: ObjectiveConfig,
  cqt_fn: CqtFn | None = None,
  deterministic: bool = False,
  labels: jax.Array | None = None,
) -> MaskedForward:
  """The objective's view of a batch of audio (B, L): one key split three ways (mask, mixup,
  dropout), the CQT target and the codes of the clean audio (``labels``: the teacher's (B, K,
  T_lab), read with objective.targets="teacher"), in-batch mixup, span masking and the forward
  pass. ``pretraining_loss`` scores it; eval pictures draw it."""
  mcfg = model.cfg
  cqt_fn = cqt_fn or cqt_target_fn(mcfg, cfg)
  b, length = audio.shape
  t = num_frames(length, mcfg.conv_layers)
  k_mask, k_mix, k_drop = jax.random.split(key, 3)

  cqt = jax.lax.stop_gradient(cqt_fn(audio)).astype(jnp.float32)  # clean audio, before mixup
  if cqt.ndim != 3 or cqt.shape[0] != b or cqt.shape[1] < t or cqt.shape[2] != mcfg.cqt_bins:
    raise ValueError(
      f"cqt_fn returned shape {cqt.shape}; expected (batch={b}, frames>={t}, bins={mcfg.cqt_bins})"
    )
  codes = targets_lib.codes(audio, cqt, labels, mcfg, cfg)
  target = targets_lib.regression_target(cqt[:, :t], cfg)
  mixed = mixup(k_mix, audio, cfg)
  mask = compute_mask(
    k_mask, b, t, mask_prob=cfg.mask_prob, mask_length=cfg.mask_length, min_masks=cfg.min_masks
  )
  out = model(mixed, mask=mask, deterministic=deterministic, key=k_drop)
  return MaskedForward(cqt=target, codes=codes, mask=mask, out=out)


def pretraining_loss(
  model: MERTModel,
  batch: dict[str, jax.Array],
  key: jax.Array,
  *,
  cfg: ObjectiveConfig,
  cqt_fn: CqtFn | None = None,
  deterministic: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The MERT loss for one batch and its metrics (sums, counts and per-term values).

  ``cqt_fn`` overrides the configured CQT target (``cqt_target_fn``), e.g. in tests."""
  mcfg = model.cfg
  audio, labels = batch["audio"], batch["labels"]
  check_audio(audio, mcfg, name="batch['audio']")
  if cfg.targets == "teacher":
    check_labels(labels, audio.shape, mcfg)
  fwd = masked_forward(
    model, audio, key, cfg=cfg, cqt_fn=cqt_fn, deterministic=deterministic, labels=labels
  )
  cqt, mask, out = fwd.cqt, fwd.mask, fwd.out
  b, t = mask.shape
  x = out.last_hidden_state  # (B, T, D)
  unpadded = True if out.frame_padding is None else ~out.frame_padding
  weights = (mask & unpadded).astype(jnp.float32)
  n = jnp.sum(weights)

  targets = fwd.codes + mcfg.num_special_labels
  z = model.heads.codebook_projections(x)  # (B, T, K, d) float32
  ce_sum, correct = codebook_losses(
    z, model.heads.label_embeddings(), targets, weights, cfg.logit_temp
  )
  cb_weights = jnp.asarray(cfg.codebook_weights or (1.0,) * mcfg.num_codebooks, jnp.float32)
  # (K, C) counts of the target codes on the weighted frames: the code frequencies behind the
  # prior baseline (mert_jax/train/health.py)
  k_index = jnp.broadcast_to(jnp.arange(mcfg.num_codebooks), fwd.codes.shape)
  code_counts = (
    jnp.zeros((mcfg.num_codebooks, mcfg.codebook_size), jnp.float32)
    .at[k_index, fwd.codes]
    .add(jnp.broadcast_to(weights[..., None], fwd.codes.shape))
  )

  cqt_pred = model.heads.cqt(x)  # (B, T, bins) float32
  cqt_sq = jnp.sum(jnp.square(cqt_pred - cqt), axis=-1)  # (B, T)
  cqt_sq_sum = jnp.sum(cqt_sq * weights)
  # the visible frames' term only where it is weighted (the config is static under jit)
  cqt_unmasked = 0.0
  if cfg.cqt_unmasked_weight:
    visible = (~mask & unpadded).astype(jnp.float32)
    cqt_unmasked = cfg.cqt_unmasked_weight * jnp.sum(cqt_sq * visible) / mcfg.cqt_bins

  pen = out.features_pen
  total = (
    jnp.sum(cb_weights * ce_sum)
    + cfg.feature_pen_weight * pen * n
    + cfg.cqt_weight * cqt_sq_sum / mcfg.cqt_bins
    + cqt_unmasked
  )
  denom = jnp.maximum(n, 1.0)
  loss = total / denom
  metrics = {
    "loss": loss,
    "loss_sum": total,
    "num_masked": n,
    "ce_sum": ce_sum,  # (K,)
    "correct": correct,  # (K,)
    "code_counts": code_counts,  # (K, C)
    "ce": ce_sum / denom,  # (K,) mean masked CE per codebook
    "accuracy": correct / denom,  # (K,)
    "features_pen": pen,
    "cqt_sq_sum": cqt_sq_sum,
    "cqt_mse": cqt_sq_sum / (denom * mcfg.cqt_bins),
    "mask_fraction": n / (b * t),
  }
  return loss, metrics
