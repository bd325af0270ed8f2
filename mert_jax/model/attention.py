"""Multi-head self-attention with key padding (fairseq MultiheadAttention / HF HubertAttention).

Projections q, k, v, out are Linear(D, D) with bias, stored per head: q/k/v kernels
(D, H, head_dim) on axes (embed, heads, kv), out kernel (H, head_dim, D). Queries are scaled
by head_dim^-0.5. Softmax is computed in float32. Long sequences go through the blockwise path
(``blockwise_attention.py``: exact, memory linear in length); ``choose_impl`` says when.

Attention relaxation (MERT-330M, alpha = 32): the reference rewrites the scores as
``A' = (A/alpha - max_j(A/alpha)) * alpha``, which equals ``A - max_j A``; softmax is invariant to
subtracting a per-row constant, and every softmax here is already max-subtracted in float32, so
the relaxation is mathematically the ordinary softmax (spec §1.6). The ``manual`` path applies
the formula literally when ``attention_relax > 0`` so tests can show the two agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mert_jax import sharding as ax
from mert_jax.config import ModelConfig
from mert_jax.model import layers
from mert_jax.model.blockwise_attention import blockwise_attention


def _attention_manual(
  q, k, v, key_padding, *, relax: float, dropout_rate: float, dropout_key, deterministic: bool
):
  """q, k, v (B, T, H, dh), already scaled; key_padding (B, T) True = pad or None.

  Computed head-major, (B, H, T, dh): XLA:CPU runs the two batched matmuls about twice as fast
  in that layout as with the heads between time and channels (95M, 749 frames, this project's CPU:
  19-21 ms against 38-40 ms per layer for either ``jax.nn.dot_product_attention``'s XLA path or the
  same einsums on (B, T, H, dh); docs/whole_songs.md, benchmarks/cpu_kernels.py)."""
  qh, kh, vh = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  scores = jnp.einsum("bhqd,bhkd->bhqk", qh, kh, preferred_element_type=jnp.float32)
  if key_padding is not None:
    scores = jnp.where(key_padding[:, None, None, :], -jnp.inf, scores)
  if relax > 0:
    scaled = scores / relax
    scores = (scaled - jnp.max(scaled, axis=-1, keepdims=True)) * relax
  probs = jax.nn.softmax(scores, axis=-1)
  probs = layers.dropout(probs, dropout_rate, dropout_key, deterministic)
  out = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), vh, preferred_element_type=jnp.float32)
  return out.astype(v.dtype).transpose(0, 2, 1, 3)


def choose_impl(impl: str, length: int, blockwise_from: int, dtype, dropout: bool) -> str | None:
  """The implementation ``auto`` stands for at this (static) length: cuDNN's flash kernel on a GPU
  in half precision without dropout (memory-efficient at any length); otherwise blockwise from
  ``blockwise_from`` frames, where the (T, T) scores of the others would grow with the square of
  the length; below it the manual path (head-major, the fastest of the three on XLA:CPU, the same
  computation as XLA's elsewhere, and the one with attention dropout). Any other ``impl`` is
  returned as given."""
  if impl != "auto":
    return impl
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if jax.default_backend() == "gpu" and half and not dropout:
    return None
  if length >= blockwise_from:
    return "blockwise"
  return "manual"


class SelfAttention(nnx.Module):
  """HF name ``attention`` with ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    init = layers.normal(0.02)  # BERT init of every encoder Linear

    def proj():
      return nnx.Dict(
        kernel=layers.param(rngs, init, (d, h, dh), (ax.EMBED, ax.HEADS, ax.KV)),
        bias=layers.param(rngs, layers.zeros, (h, dh), (ax.HEADS, ax.KV)),
      )

    self.q_proj, self.k_proj, self.v_proj = proj(), proj(), proj()
    self.out_proj = nnx.Dict(
      kernel=layers.param(rngs, init, (h, dh, d), (ax.HEADS, ax.KV, ax.EMBED)),
      bias=layers.param(rngs, layers.zeros, (d,), (ax.EMBED,)),
    )
    self.scaling = dh**-0.5
    self.dropout_rate = cfg.attention_dropout
    self.relax = cfg.attention_relax
    self.impl = cfg.attention_impl
    self.block, self.blockwise_from = cfg.attention_block, cfg.attention_blockwise_from
    self.dtype = jnp.dtype(cfg.dtype)

  def _project(self, p, x):
    return layers.matmul("btd,dhk->bthk", x, p["kernel"][...], self.dtype) + p["bias"][...].astype(
      self.dtype
    )

  def __call__(
    self,
    x: jax.Array,
    key_padding: jax.Array | None,
    *,
    deterministic: bool,
    dropout_key: jax.Array | None,
  ) -> jax.Array:
    """x (B, T, D) -> (B, T, D); key_padding (B, T) bool, True = padded key, or None."""
    x = x.astype(self.dtype)
    q = self._project(self.q_proj, x) * jnp.asarray(self.scaling, self.dtype)
    k = self._project(self.k_proj, x)
    v = self._project(self.v_proj, x)
    probs_dropout = (not deterministic) and self.dropout_rate > 0
    impl = choose_impl(self.impl, x.shape[1], self.blockwise_from, self.dtype, probs_dropout)
    if impl == "blockwise":
      o = blockwise_attention(
        q,
        k,
        v,
        key_padding,
        block_q=self.block,
        block_k=self.block,
        dropout_rate=self.dropout_rate,
        dropout_key=dropout_key,
        deterministic=deterministic,
      )
    elif impl == "manual":
      o = _attention_manual(
        q,
        k,
        v,
        key_padding,
        relax=self.relax,
        dropout_rate=self.dropout_rate,
        dropout_key=dropout_key,
        deterministic=deterministic,
      )
    else:
      if probs_dropout:
        raise ValueError(
          f"attention_impl={impl!r} has no attention dropout; use 'manual' or 'auto' "
          f"or set model.attention_dropout=0"
        )
      mask = None if key_padding is None else ~key_padding[:, None, None, :]
      # The query scaling is applied above (as fairseq does), so the kernel's own scale is 1.
      o = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=1.0, implementation=impl)
    return layers.matmul("bthk,hkd->btd", o, self.out_proj["kernel"][...], self.dtype) + (
      self.out_proj["bias"][...].astype(self.dtype)
    )
