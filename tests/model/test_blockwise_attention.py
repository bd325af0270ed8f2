"""mert_jax/model/blockwise_attention.py: equal to the full softmax attention (values and
gradients) for lengths the blocks do not divide, with and without key padding; dropout drops
normalised weights; memory of the compiled backward grows linearly with the length."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mert_jax.model.attention import _attention_manual
from mert_jax.model.blockwise_attention import blockwise_attention


def _qkv(b: int, t: int, h: int, dh: int, seed: int = 0):
  keys = jax.random.split(jax.random.key(seed), 3)
  # scores of a few units: softmax neither uniform nor one-hot
  return [2.0 * jax.random.normal(k, (b, t, h, dh), jnp.float32) / dh**0.25 for k in keys]


def _full(q, k, v, pad):
  return _attention_manual(
    q, k, v, pad, relax=-1.0, dropout_rate=0.0, dropout_key=None, deterministic=True
  )


def _padding(b: int, t: int) -> jnp.ndarray:
  lengths = np.array([t, t - 7, 5][:b])
  return jnp.asarray(np.arange(t)[None, :] >= lengths[:, None])


@pytest.mark.parametrize("t,block_q,block_k", [(37, 8, 16), (64, 16, 16), (50, 64, 7), (9, 4, 4)])
@pytest.mark.parametrize("padded", [False, True])
def test_blockwise_equals_full_attention(t, block_q, block_k, padded):
  q, k, v = _qkv(3, t, 2, 8)
  pad = _padding(3, t) if padded else None
  got = blockwise_attention(q, k, v, pad, block_q=block_q, block_k=block_k)
  want = _full(q, k, v, pad)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_blockwise_gradients_equal_full_attention(padded):
  t = 45
  q, k, v = _qkv(3, t, 2, 8, seed=1)
  pad = _padding(3, t) if padded else None
  w = jax.random.normal(jax.random.key(9), (3, t, 2, 8))
  if padded:  # padded queries are discarded downstream; their outputs carry no loss
    w = w * (~pad)[:, :, None, None]

  def loss(fn):
    return lambda q, k, v: jnp.sum(w * fn(q, k, v))

  block = lambda q, k, v: blockwise_attention(q, k, v, pad, block_q=16, block_k=8)  # noqa: E731
  full = lambda q, k, v: _full(q, k, v, pad)  # noqa: E731
  got = jax.grad(loss(block), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(full), argnums=(0, 1, 2))(q, k, v)
  for g, w_ in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w_), rtol=1e-4, atol=1e-5)


def test_bfloat16_inputs_stay_close_to_float32():
  q, k, v = _qkv(2, 40, 2, 8, seed=2)
  got = blockwise_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), block_q=16, block_k=16)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    np.asarray(got, np.float32), np.asarray(_full(q, k, v, None)), atol=0.05
  )


def test_dropout_drops_normalised_weights():
  """With v the identity over keys, each output row is the dropped, rescaled attention row: its
  kept entries equal the full softmax / keep, the rest are 0, about ``rate`` of them."""
  t, rate = 48, 0.25
  q, k, _ = _qkv(1, t, 1, 8, seed=3)
  v = jnp.eye(t, dtype=jnp.float32)[None, :, None, :]  # (1, T, 1, T): v_j = e_j
  q, k = q[..., :1, :], k[..., :1, :]

  def attend(deterministic: bool) -> np.ndarray:
    out = blockwise_attention(
      q,
      k,
      v,
      block_q=16,
      block_k=16,
      dropout_rate=rate,
      dropout_key=jax.random.key(0),
      deterministic=deterministic,
    )
    return np.asarray(out)[0, :, 0]

  got = attend(deterministic=False)
  probs = np.asarray(_full(q, k, v, None))[0, :, 0]
  kept = got != 0
  np.testing.assert_allclose(got[kept], probs[kept] / (1 - rate), rtol=1e-5)
  assert 0.15 < 1 - kept.mean() < 0.35
  same = attend(deterministic=True)
  np.testing.assert_allclose(same, probs, rtol=1e-5, atol=1e-7)


def _backward_temp_bytes(t: int, fn) -> int:
  q, k, v = (jax.ShapeDtypeStruct((1, t, 2, 16), jnp.float32) for _ in range(3))
  grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), argnums=(0, 1, 2)))
  return grad.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes


def test_backward_memory_grows_linearly_with_length():
  """XLA's own accounting of the compiled gradient: quadrupling T multiplies the blockwise
  temporaries by about 4 (linear), the full path's by about 10 (its (T, T) scores dominate)."""
  block = lambda q, k, v: blockwise_attention(q, k, v, block_q=128, block_k=128)  # noqa: E731
  full = lambda q, k, v: _full(q, k, v, None)  # noqa: E731
  b1, b4 = _backward_temp_bytes(1024, block), _backward_temp_bytes(4096, block)
  f1, f4 = _backward_temp_bytes(1024, full), _backward_temp_bytes(4096, full)
  assert b4 / b1 < 5 and f4 / f1 > 8, (b1, b4, f1, f4)
  assert b4 < f4 / 8
