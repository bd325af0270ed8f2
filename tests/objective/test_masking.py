"""compute_mask against a NumPy restatement of fairseq's compute_mask_indices.

The restatement below follows fairseq/data/data_utils.py (mask_type "static", no_overlap False,
require_same_masks True, mask_dropout 0, padding mask given, as HuBERT/MERT call it).
Distributions are compared over thousands of draws; tolerances are ~4 standard errors.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mert_jax.objective.masking import compute_mask

PROB, SPAN, MIN_MASKS = 0.8, 5, 2


def fairseq_compute_mask_indices(shape, padding_mask, mask_prob, mask_length, min_masks, rng):
  bsz, all_sz = shape
  mask = np.full(shape, False)
  mask_idcs = []
  for i in range(bsz):
    sz = all_sz - int(padding_mask[i].sum())
    num_mask = int(mask_prob * sz / float(mask_length) + rng.random())
    num_mask = max(min_masks, num_mask)
    lengths = np.full(num_mask, mask_length)
    min_len = min(lengths)
    if sz - min_len <= num_mask:
      min_len = sz - num_mask - 1
    mask_idc = rng.choice(sz - min_len, num_mask, replace=False)
    mask_idc = np.asarray(
      [mask_idc[j] + offset for j in range(len(mask_idc)) for offset in range(lengths[j])]
    )
    mask_idcs.append(np.unique(mask_idc[mask_idc < sz]))
  min_len = min(len(m) for m in mask_idcs)
  for i, mask_idc in enumerate(mask_idcs):
    if len(mask_idc) > min_len:
      mask_idc = rng.choice(mask_idc, min_len, replace=False)
    mask[i, mask_idc] = True
  return mask


def numpy_masks(n, batch, frames, pad=None, seed=0):
  rng = np.random.default_rng(seed)
  pad = np.zeros((batch, frames), bool) if pad is None else pad
  return np.stack(
    [
      fairseq_compute_mask_indices((batch, frames), pad, PROB, SPAN, MIN_MASKS, rng)
      for _ in range(n)
    ]
  )


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _jax_masks(keys, batch, frames, with_pad, pad):
  fn = lambda k: compute_mask(
    k,
    batch,
    frames,
    mask_prob=PROB,
    mask_length=SPAN,
    min_masks=MIN_MASKS,
    frame_padding=pad if with_pad else None,
  )
  return jax.vmap(fn)(keys)


def jax_masks(n, batch, frames, pad=None, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  dummy = jnp.zeros((batch, frames), bool) if pad is None else jnp.asarray(pad)
  return np.asarray(_jax_masks(keys, batch, frames, pad is not None, dummy))


@pytest.mark.parametrize("batch,frames", [(16, 374), (7, 383), (1, 374)])
def test_masked_fraction_matches_fairseq(batch, frames):
  n = 600 if batch > 1 else 3000
  ref = numpy_masks(n, batch, frames).mean(axis=(1, 2))
  got = jax_masks(n, batch, frames).mean(axis=(1, 2))
  print(
    f"B={batch} T={frames}: fairseq {ref.mean():.4f}±{ref.std():.4f}  "
    f"jax {got.mean():.4f}±{got.std():.4f}"
  )
  se = np.sqrt(ref.var() / n + got.var() / n)
  assert abs(ref.mean() - got.mean()) < 4 * se + 1e-4
  assert 0.8 < got.std() / ref.std() < 1.25
  # The spec's simulated values (§2.4): about 0.54 (B=16), 0.55 (B=7), 0.58 (B=1).
  assert abs(got.mean() - {16: 0.54, 7: 0.55, 1: 0.58}[batch]) < 0.01


@pytest.mark.parametrize("frames", [12, 40])
def test_count_distribution_matches_fairseq_short_rows(frames):
  """Single rows (no equalisation): the full distribution of masked counts, incl. the
  min_masks=2 rule and the shortened start range when spans barely fit."""
  n = 4000
  ref = numpy_masks(n, 1, frames).sum(axis=(1, 2))
  got = jax_masks(n, 1, frames).sum(axis=(1, 2))
  bins = np.arange(frames + 2)
  p, q = np.histogram(ref, bins)[0] / n, np.histogram(got, bins)[0] / n
  tv = 0.5 * np.abs(p - q).sum()
  print(f"T={frames}: total variation {tv:.3f}; min count fairseq {ref.min()} jax {got.min()}")
  assert tv < 0.05
  assert got.min() >= SPAN + 1  # two distinct starts -> at least span + 1 frames


def test_rows_equal_count_last_frame_never_masked_and_keys():
  masks = jax_masks(200, 8, 120)
  counts = masks.sum(axis=-1)
  assert (counts == counts[:, :1]).all()  # require_same_masks
  assert not masks[..., -1].any()  # starts never exceed sz - 6
  k = jax.random.key(3)
  fn = lambda key: np.asarray(
    compute_mask(key, 4, 100, mask_prob=PROB, mask_length=SPAN, min_masks=MIN_MASKS)
  )
  np.testing.assert_array_equal(fn(k), fn(k))
  assert (fn(k) != fn(jax.random.key(4))).any()


def test_padding_respected():
  pad = np.zeros((4, 100), bool)
  pad[1, 60:] = True
  pad[3, 30:] = True
  masks = jax_masks(300, 4, 100, pad=pad)
  assert not (masks & pad[None]).any()
  ref = numpy_masks(300, 4, 100, pad=pad)
  assert abs(masks.mean() - ref.mean()) < 0.01


def test_too_short_raises():
  with pytest.raises(ValueError, match="cannot mask 5 frames"):
    compute_mask(jax.random.key(0), 2, 5, mask_prob=PROB, mask_length=SPAN, min_masks=MIN_MASKS)
