"""Exact attention in memory linear in the sequence length: blockwise, with an online softmax.

The scores of a (T, T) attention never exist at once: queries are taken ``block_q`` at a time
(``lax.map``) and, for each query block, keys ``block_k`` at a time (``lax.scan``) with a running
maximum, normaliser and weighted sum per query (the online softmax of Milakov & Gimelshein 2018,
as in FlashAttention, Dao et al. 2022). The result equals the full softmax attention up to
float32 rounding. Each query block's computation is rematerialised in the backward pass
(``jax.checkpoint``), so training holds one (block_q, T) slice of scores at a time: forward and
backward memory grow linearly with T.

Why written here rather than taken from a library: ``jax.nn.dot_product_attention`` materialises
the (B, H, T, T) scores outside cuDNN (10 minutes of audio at 75 Hz: 45,000 frames, 8 GB of
float32 scores per head), cuDNN's flash kernel exists only on NVIDIA GPUs in half precision, and
the Pallas flash kernels of jax.experimental run on TPU/GPU but not on XLA:CPU, where feature
extraction of long files mostly happens. This is the portable fallback; ``attention.py`` picks it
by length and platform.

Attention dropout (training) drops probabilities after normalisation, as the full path does: a
dropped weight leaves the numerator only, never the normaliser. Its random stream is per block
(``fold_in`` of the block's index), so it differs from the full path's draw, not in distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _pad_to(x: jax.Array, length: int, axis: int, value=0) -> jax.Array:
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, pad, constant_values=value)


def _ceil_to(n: int, block: int) -> int:
  return -(-n // block) * block


def blockwise_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  key_padding: jax.Array | None = None,
  *,
  block_q: int = 512,
  block_k: int = 512,
  dropout_rate: float = 0.0,
  dropout_key: jax.Array | None = None,
  deterministic: bool = True,
) -> jax.Array:
  """softmax(q k^T + mask) v, block by block.

  q, k: (B, T, H, dh), q already scaled; v: (B, T, H, dv); key_padding: (B, T) bool, True =
  padded key, or None. Returns (B, T, H, dv) in v's dtype. Scores, the softmax and the
  accumulation run in float32. T need not divide by the blocks (padded keys are masked, padded
  queries dropped). A query whose keys are all padded gets zeros (the full path gives NaN)."""
  b, t, h, dh = q.shape
  dv = v.shape[-1]
  block_q, block_k = min(block_q, t), min(block_k, t)
  tq, tk = _ceil_to(t, block_q), _ceil_to(t, block_k)
  nq, nk = tq // block_q, tk // block_k
  valid = jnp.ones((b, t), bool) if key_padding is None else ~key_padding
  valid = _pad_to(valid, tk, 1, False).reshape(b, nk, block_k).swapaxes(0, 1)  # (nk, B, bk)

  def blocks(x, length, n, size):
    """(B, T, H, d) -> (n, B, H, size, d): head-major blocks (see _attention_manual: the layout
    XLA:CPU's batched matmuls run fastest in)."""
    x = _pad_to(x, length, 1).transpose(0, 2, 1, 3)
    return x.reshape(b, h, n, size, x.shape[-1]).transpose(2, 0, 1, 3, 4)

  k_blocks, v_blocks = blocks(k, tk, nk, block_k), blocks(v, tk, nk, block_k)
  q_blocks = blocks(q, tq, nq, block_q)
  use_dropout = (not deterministic) and dropout_rate > 0
  if use_dropout and dropout_key is None:
    raise ValueError("attention dropout needs a dropout_key")
  keep = 1.0 - dropout_rate

  def one_query_block(args):
    qb, qi = args  # (B, H, bq, dh), block index

    def step(carry, blk):
      m, l, acc = carry  # (B, H, bq, 1), (B, H, bq, 1), (B, H, bq, dv) float32
      kb, vb, ok, ki = blk
      s = jnp.einsum("bhqd,bhkd->bhqk", qb, kb, preferred_element_type=jnp.float32)
      s = jnp.where(ok[:, None, None, :], s, -jnp.inf)
      m_new = jnp.maximum(m, s.max(axis=-1, keepdims=True))
      m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # rows with no valid key yet
      p = jnp.exp(s - m_safe)
      correction = jnp.exp(m - m_safe)  # exp(-inf) = 0 for the first valid block
      l = l * correction + p.sum(axis=-1, keepdims=True)
      if use_dropout:
        key = jax.random.fold_in(dropout_key, qi * nk + ki)
        p = jnp.where(jax.random.bernoulli(key, keep, p.shape), p / keep, 0.0)
      pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), vb, preferred_element_type=jnp.float32)
      return (m_new, l, acc * correction + pv), None

    init = (
      jnp.full((b, h, block_q, 1), -jnp.inf, jnp.float32),
      jnp.zeros((b, h, block_q, 1), jnp.float32),
      jnp.zeros((b, h, block_q, dv), jnp.float32),
    )
    (_, l, acc), _ = jax.lax.scan(step, init, (k_blocks, v_blocks, valid, jnp.arange(nk)))
    return jnp.where(l > 0, acc / jnp.where(l > 0, l, 1.0), 0.0).astype(v.dtype)

  out = jax.lax.map(jax.checkpoint(one_query_block), (q_blocks, jnp.arange(nq)))  # (nq,B,H,bq,dv)
  return out.transpose(1, 0, 3, 2, 4).reshape(b, tq, h, dv)[:, :t]
