"""Convolutional positional embedding with weight normalisation (spec §1.4).

x + GELU(trim(conv(x))): a grouped Conv1d over time (kernel 128, 16 groups, padding 64, bias),
the trailing output frame dropped for even kernels, whose weight is ``g * v / ||v||`` with the
norm taken per kernel tap over all output and in-group input channels jointly (PyTorch
``weight_norm(dim=2)``). ``g`` and ``v`` are the trained parameters, as in the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax import layers
from mert_jax import sharding as ax
from mert_jax.config import ModelConfig


def weight_norm_kernel(g: jax.Array, v: jax.Array) -> jax.Array:
  """Effective kernel (k, in/groups, out) from g (k,) and v (k, in/groups, out), in float32."""
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))
  return g[:, None, None] * v / norm


class PosConv(nnx.Module):
  """HF name ``encoder.pos_conv_embed.conv`` with parameters ``g`` (k,), ``v`` (k, D/G, D), ``bias``."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, k, groups = cfg.hidden_size, cfg.pos_conv_kernel, cfg.pos_conv_groups
    std = float(np.sqrt(4.0 / (k * d)))              # fairseq make_conv_pos init
    w = std * jax.random.normal(rngs.params(), (k, d // groups, d), jnp.float32)
    self.v = nnx.Param(w, out_sharding=(ax.CONV_KERNEL, None, ax.EMBED))
    self.g = nnx.Param(jnp.sqrt(jnp.sum(jnp.square(w), axis=(1, 2))), out_sharding=(ax.CONV_KERNEL,))
    self.bias = layers.param(rngs, layers.zeros, (d,), (ax.EMBED,))
    self.kernel_size = k
    self.groups = groups
    self.dtype = jnp.dtype(cfg.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x (B, T, D) -> GELU(conv(x)) (B, T, D); the caller adds it to x."""
    kernel = weight_norm_kernel(self.g[...], self.v[...]).astype(self.dtype)
    pad = self.kernel_size // 2
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel, window_strides=(1,), padding=[(pad, pad)],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=self.groups)
    if self.kernel_size % 2 == 0:                    # "same pad" for even kernels: drop the last frame
      y = y[:, :-1]
    y = y + self.bias[...].astype(self.dtype)
    return layers.gelu(y)
