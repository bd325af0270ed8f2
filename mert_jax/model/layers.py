"""Small building blocks shared by the model's modules: parameters with logical axes, a dense
layer and LayerNorm with fp32 master weights and configurable compute dtype, dropout with an
explicit key, exact GELU, and the gradient multiplier.

Parameters are always float32; ``dtype`` is the compute dtype (bf16 in training, fp32 for
parity and feature extraction). Reductions of norms run in float32.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Initializer = Callable[[jax.Array, Sequence[int]], jax.Array]


def param(
  rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], axes: Sequence[str | None]
) -> nnx.Param:
  """A float32 parameter with logical sharding axes (one name or None per dimension)."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {axes} do not match shape {shape}")
  return nnx.Param(init(rngs.params(), tuple(shape)), out_sharding=tuple(axes))


def uniform(low: float, high: float) -> Initializer:
  return lambda key, shape: jax.random.uniform(key, shape, jnp.float32, low, high)


def normal(std: float) -> Initializer:
  return lambda key, shape: std * jax.random.normal(key, shape, jnp.float32)


def zeros(key: jax.Array, shape: Sequence[int]) -> jax.Array:
  del key
  return jnp.zeros(shape, jnp.float32)


def ones(key: jax.Array, shape: Sequence[int]) -> jax.Array:
  del key
  return jnp.ones(shape, jnp.float32)


def torch_linear_init(fan_in: int) -> Initializer:
  """PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
  bound = 1.0 / np.sqrt(fan_in)
  return uniform(-bound, bound)


def matmul(spec: str, x: jax.Array, kernel: jax.Array, dtype) -> jax.Array:
  """``einsum(spec, x, kernel)`` with both operands in ``dtype``, accumulated in float32 and
  returned in ``dtype``. Asking for a float32 result is what lets XLA:CPU hand bfloat16 products
  to its AMX/oneDNN kernels: on the project's CPU a (2048, 768) x (768, 3072) bfloat16 product
  takes 6.5 ms with a float32 result and 44 ms with a bfloat16 one (float32 inputs: 38 ms); TPUs
  and GPUs accumulate in float32 either way (docs/whole_songs.md, benchmarks/cpu_kernels.py)."""
  y = jnp.einsum(spec, x.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32)
  return y.astype(dtype)


class Dense(nnx.Module):
  """y = x @ kernel + bias; kernel (in, out) is stored float32 and cast to ``dtype`` for the
  matmul."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    axes: tuple[str | None, str | None],
    kernel_init: Initializer,
    bias_init: Initializer = zeros,
    use_bias: bool = True,
    dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.kernel = param(rngs, kernel_init, (in_features, out_features), axes)
    self.bias = param(rngs, bias_init, (out_features,), (axes[1],)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = matmul("...i,io->...o", x, self.kernel[...], self.dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


def moments(x: jax.Array, axes: int | tuple[int, ...] = -1) -> tuple[jax.Array, jax.Array]:
  """Mean and biased variance of ``x`` over ``axes`` (kept), in float32."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=axes, keepdims=True)
  return mean, jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)


def standardise(x: jax.Array, mean: jax.Array, var: jax.Array, eps: float) -> jax.Array:
  """(x - mean) / sqrt(var + eps) in float32."""
  return (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + eps)


def layer_norm(
  x: jax.Array,
  scale: jax.Array | None,
  bias: jax.Array | None,
  eps: float,
  axes: int | tuple[int, ...] = -1,
) -> jax.Array:
  """LayerNorm with float32 statistics (biased variance); returns float32."""
  y = standardise(x, *moments(x, axes), eps)
  if scale is not None:
    y = y * scale
  if bias is not None:
    y = y + bias
  return y


class LayerNorm(nnx.Module):
  """Affine LayerNorm over the last axis; statistics in float32, output in ``dtype``."""

  def __init__(
    self,
    features: int,
    *,
    axis_name: str | None,
    eps: float,
    dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.scale = param(rngs, ones, (features,), (axis_name,))
    self.bias = param(rngs, zeros, (features,), (axis_name,))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    return layer_norm(x, self.scale[...], self.bias[...], self.eps).astype(self.dtype)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU computed in float32, as fairseq and HF do; returns the input dtype."""
  return jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)


def dropout(x: jax.Array, rate: float, key: jax.Array | None, deterministic: bool) -> jax.Array:
  """Inverted dropout. Identity when ``deterministic`` or ``rate == 0``; needs ``key`` otherwise."""
  if deterministic or rate <= 0.0:
    return x
  if key is None:
    raise ValueError("dropout needs a PRNG key when deterministic=False")
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def grad_multiply(x: jax.Array, scale: float) -> jax.Array:
  """Identity forward; multiplies the incoming gradient by ``scale`` (fairseq GradMultiply)."""
  return x


def _grad_multiply_fwd(x, scale):
  return x, None


def _grad_multiply_bwd(scale, _, g):
  return (g * scale,)


grad_multiply.defvjp(_grad_multiply_fwd, _grad_multiply_bwd)


class KeySeq:
  """Hands out independent PRNG keys from one key (``None`` in deterministic mode)."""

  def __init__(self, key: jax.Array | None):
    self._key = key
    self._n = 0

  def __call__(self) -> jax.Array | None:
    if self._key is None:
      return None
    self._n += 1
    return jax.random.fold_in(self._key, self._n)
