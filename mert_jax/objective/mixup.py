"""In-batch noise mixup (spec §2.6), jittable, without gradient.

For each clip i, with probability ``mixup_prob``: draw n in {1 .. max_segments} segments from the
*other* clips of the batch, laid end to end as one pool of (B - 1) * L samples (a segment may
straddle two clips, as in the reference), each of a length uniform in [min_len, max_len], and add
each at a uniform position of clip i at gain ``volume``. No rescaling or clipping.

The random draws form a ``MixupPlan`` (so tests can check where every segment came from) that
``apply_mixup`` turns into audio; ``mixup`` does both.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mert_jax.config import ObjectiveConfig


@dataclasses.dataclass
class MixupPlan:
  apply: jax.Array  # (B,) bool: clip is mixed
  num_segments: jax.Array  # (B,) int32 in 1..S
  pool_start: jax.Array  # (B, S) int32: start in the pool of the other clips
  length: jax.Array  # (B, S) int32: segment length in samples
  position: jax.Array  # (B, S) int32: where the segment is added in clip i


jax.tree_util.register_dataclass(
  MixupPlan,
  data_fields=["apply", "num_segments", "pool_start", "length", "position"],
  meta_fields=[],
)


def segment_bounds(cfg: ObjectiveConfig, samples: int) -> tuple[int, int]:
  """(shortest, longest) segment in samples: [mixup_min_len, mixup_max_len], or with
  ``mixup_crop_fraction`` f > 0, [f / 2, f] x the clip length (at least one sample)."""
  if cfg.mixup_crop_fraction > 0:
    longest = max(1, int(round(cfg.mixup_crop_fraction * samples)))
    return max(1, longest // 2), longest
  return cfg.mixup_min_len, cfg.mixup_max_len


def check_mixup_config(cfg: ObjectiveConfig, batch: int, samples: int) -> None:
  if cfg.mixup_crop_fraction > 0:
    return  # the bounds follow the clip (segment_bounds)
  if not 0 < cfg.mixup_min_len <= cfg.mixup_max_len:
    raise ValueError(
      f"objective.mixup_min_len={cfg.mixup_min_len} / mixup_max_len={cfg.mixup_max_len} "
      f"must satisfy 0 < min <= max"
    )
  if cfg.mixup_max_len > samples:
    raise ValueError(
      f"objective.mixup_max_len={cfg.mixup_max_len} samples exceeds the clip length "
      f"{samples}; lower it or use longer crops"
    )


def sample_plan(key: jax.Array, batch: int, samples: int, cfg: ObjectiveConfig) -> MixupPlan:
  s = cfg.mixup_max_segments
  shortest, longest = segment_bounds(cfg, samples)
  k_apply, k_n, k_start, k_len, k_pos = jax.random.split(key, 5)
  pool_len = (batch - 1) * samples
  apply = jax.random.uniform(k_apply, (batch,)) < cfg.mixup_prob
  num = jax.random.randint(k_n, (batch,), 1, s + 1)
  start = jax.random.randint(k_start, (batch, s), 0, pool_len - longest + 1)
  length = jax.random.randint(k_len, (batch, s), shortest, longest + 1)
  # position uniform in {0 .. L - length}: scale a uniform draw by the per-segment range.
  position = jnp.floor(jax.random.uniform(k_pos, (batch, s)) * (samples - length + 1)).astype(
    jnp.int32
  )
  return MixupPlan(apply, num, start, length, position)


def pool_source(pool_index: jax.Array, row: jax.Array, samples: int) -> tuple[jax.Array, jax.Array]:
  """Map a pool index of row i's pool (all clips j != i, in order) to (clip j, offset)."""
  slot = pool_index // samples
  clip = slot + (slot >= row).astype(slot.dtype)
  return clip, pool_index % samples


def apply_mixup(audio: jax.Array, plan: MixupPlan, volume: float) -> jax.Array:
  """audio (B, L) -> mixed (B, L) following ``plan``."""
  batch, samples = audio.shape
  t = jnp.arange(samples)
  rows = jnp.arange(batch)
  out = audio
  for q in range(plan.length.shape[1]):
    offset = t[None, :] - plan.position[:, q : q + 1]  # (B, L)
    active = (
      (offset >= 0)
      & (offset < plan.length[:, q : q + 1])
      & (q < plan.num_segments)[:, None]
      & plan.apply[:, None]
    )
    pool_idx = jnp.clip(plan.pool_start[:, q : q + 1] + offset, 0, (batch - 1) * samples - 1)
    clip, off = pool_source(pool_idx, rows[:, None], samples)
    seg = audio[clip, off]
    out = out + jnp.where(active, volume * seg, jnp.zeros((), audio.dtype))
  return out


def mixup(key: jax.Array, audio: jax.Array, cfg: ObjectiveConfig) -> jax.Array:
  """Mixed audio (B, L); unchanged when mixup is off or the batch has a single clip."""
  batch, samples = audio.shape
  if cfg.mixup_prob <= 0 or batch < 2:
    return audio
  check_mixup_config(cfg, batch, samples)
  plan = sample_plan(key, batch, samples, cfg)
  return jax.lax.stop_gradient(apply_mixup(audio, plan, cfg.mixup_volume))
