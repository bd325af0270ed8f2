"""Span masking with the statistics of fairseq's ``compute_mask_indices`` (spec §2.4), jittable.

fairseq (mask_type "static", no_overlap False, require_same_masks True, mask_dropout 0), per row::

  sz = T - padded frames
  n  = max(min_masks, floor(mask_prob * sz / span + u)),  u ~ U[0, 1)
  lo = span;  if sz - lo <= n: lo = sz - n - 1
  starts = n distinct integers uniform from {0 .. sz - lo - 1}
  idx = {s + o : s in starts, o < span} restricted to [0, sz)       (spans may overlap)

then every row keeps a uniformly random subset of exactly M = min_rows |idx| indices.

Here the draws are reformulated for static shapes: "n distinct uniform integers from a range"
is "the n smallest of i.i.d. uniform scores over the range", and "a random M-subset of idx" is
"the M smallest scores among idx". Both give the same distributions as numpy's choice without
replacement; tests compare the statistics with a NumPy restatement of fairseq's loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from data_pipeline.audio_format import HOP


def _rank(scores: jax.Array) -> jax.Array:
  """Rank of each entry along the last axis (0 = smallest)."""
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)


def compute_mask(
  key: jax.Array,
  batch: int,
  frames: int,
  *,
  mask_prob: float,
  mask_length: int,
  min_masks: int,
  frame_padding: jax.Array | None = None,
) -> jax.Array:
  """A (batch, frames) bool mask, True = masked; exactly the same count M in every row.

  frame_padding: (batch, frames) bool, True = padding (spans live in the unpadded prefix).
  """
  if frames < mask_length + 2:
    raise ValueError(
      f"cannot mask {frames} frames with spans of {mask_length}: need at least "
      f"{mask_length + 2} frames (about {(mask_length + 2) * HOP} samples at {HOP} per frame)"
    )
  k_num, k_start, k_keep = jax.random.split(key, 3)
  pos = jnp.arange(frames)
  if frame_padding is None:
    sz = jnp.full((batch,), frames, jnp.int32)
  else:
    sz = frames - jnp.sum(frame_padding, axis=-1).astype(jnp.int32)
  u = jax.random.uniform(k_num, (batch,))
  n = jnp.maximum(min_masks, jnp.floor(mask_prob * sz / mask_length + u).astype(jnp.int32))
  lo = jnp.where(sz - mask_length <= n, sz - n - 1, mask_length)
  n_starts = sz - lo  # starts are drawn from {0 .. n_starts - 1}
  scores = jax.random.uniform(k_start, (batch, frames))
  scores = jnp.where(
    pos[None] < n_starts[:, None], scores, 2.0
  )  # out-of-range positions never chosen
  is_start = _rank(scores) < n[:, None]
  # Span of `mask_length` frames from every start (overlaps allowed), clipped to the unpadded
  # prefix.
  spans = jnp.zeros((batch, frames), bool)
  for offset in range(mask_length):
    spans = spans | jnp.pad(is_start, ((0, 0), (offset, 0)))[:, :frames]
  spans = spans & (pos[None] < sz[:, None])
  # require_same_masks: every row keeps a uniformly random subset of M = min count.
  m = jnp.min(jnp.sum(spans, axis=-1))
  keep_scores = jnp.where(spans, jax.random.uniform(k_keep, (batch, frames)), 2.0)
  return spans & (_rank(keep_scores) < m)
