"""In-batch noise mixup: segments come only from other clips, the reference's loop restated in
NumPy reproduces the JAX output from the same plan, the mixed fraction matches the configured
probability, and the CQT target is computed from the clean audio."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mert_jax.config import ObjectiveConfig, model_config
from mert_jax.model import conv_extractor
from mert_jax.model.mert import create_model
from mert_jax.objective.loss import pretraining_loss
from mert_jax.objective.mixup import apply_mixup, mixup, pool_source, sample_plan

CFG = ObjectiveConfig(mixup_min_len=500, mixup_max_len=1500)


def reference_mix(clean: np.ndarray, plan) -> np.ndarray:
  """spec §2.6 loop: pool = concat(clean[j] for j != i);
  out[pos:pos+dur] += pool[start:start+dur]."""
  out = clean.copy()
  b = clean.shape[0]
  for i in range(b):
    if not plan.apply[i]:
      continue
    pool = np.concatenate([clean[j] for j in range(b) if j != i])
    for q in range(int(plan.num_segments[i])):
      s, d, p = int(plan.pool_start[i, q]), int(plan.length[i, q]), int(plan.position[i, q])
      out[i, p : p + d] += pool[s : s + d]
  return out


def test_jax_mixup_equals_reference_loop(music):
  clean = music[: 6 * 4000].reshape(6, 4000)
  plan = jax.tree.map(np.asarray, sample_plan(jax.random.key(0), 6, 4000, CFG))
  assert plan.apply.any() and not plan.apply.all()
  got = np.asarray(apply_mixup(jnp.asarray(clean), jax.tree.map(jnp.asarray, plan), 1.0))
  np.testing.assert_allclose(got, reference_mix(clean, plan), atol=1e-6)
  # Plan ranges as specified: 1..3 segments, lengths within [min, max], segments inside the clip.
  assert plan.num_segments.min() >= 1 and plan.num_segments.max() <= 3
  assert plan.length.min() >= CFG.mixup_min_len and plan.length.max() <= CFG.mixup_max_len
  assert (plan.position + plan.length <= 4000).all()


def test_segments_come_from_other_clips():
  b, length = 5, 3000
  # Clip j is the constant 10**j: the added signal reveals which clips contributed.
  clean = np.stack([np.full(length, 10.0**j, np.float32) for j in range(b)])
  for seed in range(20):
    plan = sample_plan(jax.random.key(seed), b, length, CFG)
    added = np.asarray(apply_mixup(jnp.asarray(clean), plan, 1.0)) - clean
    for i in range(b):
      digits = np.round(added[i]).astype(np.int64)
      own_digit = (digits // 10**i) % 10
      assert (own_digit == 0).all(), f"row {i} received its own audio (seed {seed})"
    rows = jnp.arange(b)[:, None]
    clips, _ = pool_source(plan.pool_start, rows, length)
    assert (np.asarray(clips) != np.arange(b)[:, None]).all()


@pytest.mark.parametrize("prob", [0.5, 0.2])
def test_applied_fraction_matches_probability(prob):
  cfg = CFG.replace(mixup_prob=prob)
  b, length, n = 8, 2000, 400
  clean = jnp.asarray(np.random.RandomState(0).randn(b, length).astype(np.float32))
  fn = jax.jit(jax.vmap(lambda k: jnp.any(mixup(k, clean, cfg) != clean, axis=-1)))
  changed = np.asarray(fn(jax.random.split(jax.random.key(1), n)))
  frac = changed.mean()
  se = np.sqrt(prob * (1 - prob) / changed.size)
  print(f"mixup_prob={prob}: applied to {frac:.4f} of clips")
  assert abs(frac - prob) < 4 * se


def test_mixup_off_and_single_clip_unchanged():
  x = jnp.ones((1, 2000))
  assert mixup(jax.random.key(0), x, CFG) is x
  y = jnp.ones((3, 2000))
  assert mixup(jax.random.key(0), y, CFG.replace(mixup_prob=0.0)) is y


def test_cqt_target_is_computed_from_clean_audio(music, monkeypatch):
  cfg = model_config("tiny", dtype="float32")
  model = create_model(cfg)
  b, length = 4, 12000
  clean = jnp.asarray(music[: b * length].reshape(b, length))
  labels = jnp.zeros((b, 8, 37), jnp.int32)
  seen = {}

  def cqt_fn(a):
    seen["cqt_input"] = np.asarray(a)
    return jnp.zeros((a.shape[0], 40, cfg.cqt_bins))

  original = conv_extractor.ConvFeatureExtractor.__call__

  def spy(self, audio):
    seen["model_input"] = np.asarray(audio)
    return original(self, audio)

  monkeypatch.setattr(conv_extractor.ConvFeatureExtractor, "__call__", spy)
  pretraining_loss(
    model,
    {"audio": clean, "labels": labels},
    jax.random.key(2),
    cqt_fn=cqt_fn,
    cfg=CFG.replace(mixup_prob=1.0),
    deterministic=True,
  )
  np.testing.assert_array_equal(seen["cqt_input"], np.asarray(clean))
  assert (np.abs(seen["model_input"] - np.asarray(clean)).max(axis=-1) > 0).all()


@pytest.mark.parametrize("samples", [24_000, 72_000])
def test_crop_fraction_scales_the_segments_with_the_crop(samples):
  """mixup_crop_fraction=f: lengths uniform in [f / 2, f] x the crop, whatever the absolute
  bounds say; 0 keeps mixup_min_len / mixup_max_len."""
  cfg = ObjectiveConfig(mixup_min_len=10, mixup_max_len=20, mixup_crop_fraction=0.2)
  lengths = np.concatenate(
    [np.asarray(sample_plan(jax.random.key(s), 4, samples, cfg).length).ravel() for s in range(50)]
  )
  lo, hi = round(0.1 * samples), round(0.2 * samples)
  assert lengths.min() >= lo and lengths.max() <= hi
  assert lengths.min() < lo + 0.1 * (hi - lo) and lengths.max() > hi - 0.1 * (hi - lo)
  absolute = np.asarray(sample_plan(jax.random.key(0), 4, samples, CFG).length)
  assert absolute.min() >= CFG.mixup_min_len and absolute.max() <= CFG.mixup_max_len
