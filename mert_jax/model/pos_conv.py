"""Convolutional positional embedding with weight normalisation (spec §1.4).

x + GELU(trim(conv(x))): a grouped Conv1d over time (kernel 128, 16 groups, padding 64, bias),
the trailing output frame dropped for even kernels, whose weight is ``g * v / ||v||`` with the
norm taken per kernel tap over all output and in-group input channels jointly (PyTorch
``weight_norm(dim=2)``). ``g`` and ``v`` are the trained parameters, as in the reference.

The forward is XLA's grouped convolution. Its kernel gradient is a convolution with
``batch_group_count`` = groups, which XLA:CPU lowers very slowly (measured on the project's CPU,
95M, 2 x 5 s clips, bf16: forward 47 ms, forward + backward 3.3 s, ~37 % of the whole training
step). ``grouped_conv`` with ``weight_grad="einsum"`` keeps the forward and the input gradient and
computes the kernel gradient as chunked per-tap einsums instead (forward + backward 0.32 s, equal
to fp32 rounding; benchmarks/README.md). ``model.pos_conv_impl`` picks it ("auto": einsum on CPU
and TPU, XLA's own gradient on GPU). On TPU the choice rests on compiled memory, not speed (no
chip measured either): XLA:TPU's plan for the 95M step at 31 clips per chip needs 31.91 GiB with
the einsum gradient and 32.88 GiB with XLA's, for the same FLOP count within 0.1 %
(docs/scaling.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax import sharding as ax
from mert_jax.config import ModelConfig
from mert_jax.model import layers


def weight_norm_kernel(g: jax.Array, v: jax.Array) -> jax.Array:
  """Effective kernel (k, in/groups, out) from g (k,) and v (k, in/groups, out), in float32."""
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))
  return g[:, None, None] * v / norm


# Kernel taps per einsum in the kernel gradient: the backward materialises (B, T, TAP_CHUNK, D)
# windows of the input one chunk at a time (16 taps: 16x the activations, transient).
TAP_CHUNK = 16


def _conv(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  """Grouped "same" convolution over time: x (B, T, D), kernel (k, D/groups, D)
  -> (B, T + 1 - k % 2, D)."""
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(1,),
    padding=[(pad, pad)],
    dimension_numbers=("NWC", "WIO", "NWC"),
    feature_group_count=groups,
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def grouped_conv_einsum_grad(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  """``_conv`` with the kernel gradient computed as per-tap einsums (see the module docstring)."""
  return _conv(x, kernel, groups)


def _fwd(x, kernel, groups):
  return _conv(x, kernel, groups), (x, kernel)


def _bwd(groups, res, dy):
  x, kernel = res
  dx = jax.vjp(lambda x_: _conv(x_, kernel, groups), x)[1](dy)[0]  # a grouped conv: fast everywhere
  k, cin, d = kernel.shape
  b, t_out = dy.shape[:2]
  pad = k // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0))).reshape(b, -1, groups, cin)
  dyg = dy.reshape(b, t_out, groups, d // groups)
  parts = []
  for j0 in range(0, k, TAP_CHUNK):  # dK[j, g, c, o] = sum_{b,t} xp[b, t + j, g, c] dy[b, t, g, o]
    taps = range(j0, min(j0 + TAP_CHUNK, k))
    win = jnp.stack([xp[:, j : j + t_out] for j in taps], axis=2)  # (B, T, taps, G, cin)
    parts.append(jnp.einsum("btjgc,btgo->jgco", win, dyg, preferred_element_type=jnp.float32))
  dk = jnp.concatenate(parts, axis=0).transpose(0, 2, 1, 3).reshape(k, cin, d)
  return dx, dk.astype(kernel.dtype)


grouped_conv_einsum_grad.defvjp(_fwd, _bwd)


def grouped_conv(x: jax.Array, kernel: jax.Array, groups: int, impl: str = "auto") -> jax.Array:
  """The positional convolution with the configured kernel-gradient implementation."""
  if impl == "auto":
    # Chosen when lowering, for the platform compiled for (not JAX's default backend: an
    # ahead-of-time compile for a TPU runs with the CPU as the default backend).
    return jax.lax.platform_dependent(
      x,
      kernel,
      cpu=lambda x_, k_: grouped_conv_einsum_grad(x_, k_, groups),
      tpu=lambda x_, k_: grouped_conv_einsum_grad(x_, k_, groups),
      default=lambda x_, k_: _conv(x_, k_, groups),
    )
  return (
    grouped_conv_einsum_grad(x, kernel, groups) if impl == "einsum" else _conv(x, kernel, groups)
  )


class PosConv(nnx.Module):
  """HF name ``encoder.pos_conv_embed.conv`` with parameters ``g`` (k,), ``v`` (k, D/G, D),
  ``bias``."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, k, groups = cfg.hidden_size, cfg.pos_conv_kernel, cfg.pos_conv_groups
    std = float(np.sqrt(4.0 / (k * d)))  # fairseq make_conv_pos init
    w = std * jax.random.normal(rngs.params(), (k, d // groups, d), jnp.float32)
    self.v = nnx.Param(w, out_sharding=(ax.CONV_KERNEL, None, ax.EMBED))
    self.g = nnx.Param(
      jnp.sqrt(jnp.sum(jnp.square(w), axis=(1, 2))), out_sharding=(ax.CONV_KERNEL,)
    )
    self.bias = layers.param(rngs, layers.zeros, (d,), (ax.EMBED,))
    self.kernel_size = k
    self.groups = groups
    self.dtype = jnp.dtype(cfg.dtype)
    self.impl = cfg.pos_conv_impl

  def __call__(self, x: jax.Array) -> jax.Array:
    """x (B, T, D) -> GELU(conv(x)) (B, T, D); the caller adds it to x."""
    kernel = weight_norm_kernel(self.g[...], self.v[...]).astype(self.dtype)
    y = grouped_conv(x.astype(self.dtype), kernel, self.groups, self.impl)
    if self.kernel_size % 2 == 0:  # "same pad" for even kernels: drop the last frame
      y = y[:, :-1]
    y = y + self.bias[...].astype(self.dtype)
    return layers.gelu(y)
