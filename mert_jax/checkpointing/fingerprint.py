"""Fingerprints of a pytree of arrays (the train state, model parameters): one uint32 per array,
computed on the device, so a checkpoint read back from disk can be checked against the state that
was saved.

Each array's bytes are viewed as 32-bit words (2- and 1-byte types widened, 8-byte types split in
two); every word is XORed with its position times the golden-ratio constant, mixed by the murmur3
finaliser, and the mixed words are summed modulo 2**32. Integer sums are exact and commutative, so
the fingerprint depends neither on the reduction order nor on the sharding: a state saved on one
mesh verifies on another. A changed word changes its mixed value pseudo-randomly, so a corruption
(flipped bits, a zeroed or shuffled block) goes unnoticed with a probability of about 2**-32 per
array. The cost is a few integer operations per word, one jitted program per state layout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)


def leaf_name(path: tuple[Any, ...]) -> str:
  """``params/backbone/encoder/layers/0/...`` for a key path of ``tree_flatten_with_path``
  (dict keys, sequence indices and namedtuple fields alike)."""
  parts = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def leaf_names(tree: Any) -> list[str]:
  """The names of ``tree``'s leaves, in ``jax.tree.leaves`` order."""
  return [leaf_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _words(x: jax.Array) -> jax.Array:
  """``x``'s bytes as uint32 words, in an array of ``x``'s shape (plus a trailing axis of 2 for
  8-byte types), so a sharded array is never reshaped across its shards."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = x.dtype.itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # (..., 2)
  narrow = {1: jnp.uint8, 2: jnp.uint16}[size]
  return jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)


def _mix(h: jax.Array) -> jax.Array:
  """murmur3's 32-bit finaliser: every input bit affects every output bit."""
  h = h ^ (h >> 16)
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _array_fingerprint(x: jax.Array) -> jax.Array:
  w = _words(x)
  index = jnp.zeros(w.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(w.ndim)):  # the row-major position of every word
    index = index + jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis) * np.uint32(stride)
    stride = (stride * w.shape[axis]) % 2**32
  return jnp.sum(_mix(w ^ (index * _GOLDEN)), dtype=jnp.uint32)


def _all_finite(leaves: list[jax.Array]) -> jax.Array:
  flags = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


@jax.jit
def _digest(leaves: list[jax.Array]) -> tuple[list[jax.Array], jax.Array]:
  return [_array_fingerprint(x) for x in leaves], _all_finite(leaves)


def digest(tree: Any) -> tuple[dict[str, int], bool]:
  """({leaf name: fingerprint}, whether every floating-point leaf is finite) of a pytree of
  arrays. Every process of a multi-process run must call it (it is one jitted program)."""
  names = leaf_names(tree)
  fps, finite = jax.device_get(_digest(jax.tree.leaves(tree)))
  return {n: int(f) for n, f in zip(names, fps)}, bool(finite)
