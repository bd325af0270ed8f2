"""The MARBLE v1 probe (spec, "Resolved or added since": MARBLE probing protocol): a small head on
frozen features.

Features are one vector per layer per example: ``(N, L + 1, D)``, layer 0 the CNN front end's
projection and 1..L the transformer layers, each time-averaged over the clip; or, for frame-level
tasks (beat), one per layer per frame: ``(N, L + 1, T, D)``, and the head classifies each frame.
The head reads one layer, or a learnable softmax-weighted sum of layers 1..L, then
Linear(D -> 512) -> ReLU -> Dropout(0.2) -> Linear(512 -> classes). Pure functions over a
parameter dict; ``fit.py`` trains it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

WEIGHTED = -1  # the ``layer`` that means "the softmax-weighted sum of layers 1..L"

Params = dict[str, jax.Array]


def init_head(key: jax.Array, dim: int, classes: int, num_layers: int, hidden: int) -> Params:
  """Parameters of a head on ``dim``-wide features of ``num_layers`` transformer layers (L):
  PyTorch's Linear initialisation (uniform in +-1/sqrt(fan_in)), equal layer weights."""
  k1, k2, k3, k4 = jax.random.split(key, 4)

  def uniform(k: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

  return {
    "layer_logits": jnp.zeros((num_layers,), jnp.float32),
    "w1": uniform(k1, (dim, hidden), dim),
    "b1": uniform(k2, (hidden,), dim),
    "w2": uniform(k3, (hidden, classes), hidden),
    "b2": uniform(k4, (classes,), hidden),
  }


def select_layer(params: Params, feats: jax.Array, layer: int | jax.Array) -> jax.Array:
  """(N, L + 1, [T,] D) -> (N, [T,] D): layer ``layer``, or with WEIGHTED the
  softmax(layer_logits)-weighted sum of layers 1..L. ``layer`` may be traced: one compiled program
  serves every layer. Stored features may be float16; the sum is float32."""
  soft = jnp.concatenate([jnp.zeros((1,)), jax.nn.softmax(params["layer_logits"])])
  one_hot = jax.nn.one_hot(layer, feats.shape[1])
  mix = jnp.where(jnp.asarray(layer) == WEIGHTED, soft, one_hot)
  return jnp.einsum("l,nl...d->n...d", mix, feats.astype(jnp.float32))


def head_logits(
  params: Params, feats: jax.Array, layer: int | jax.Array, dropout: float, key: jax.Array | None
) -> jax.Array:
  """(N, L + 1, [T,] D) features -> (N, [T,] classes) logits; dropout only when ``key`` is given
  (training)."""
  h = jax.nn.relu(select_layer(params, feats, layer) @ params["w1"] + params["b1"])
  if key is not None and dropout > 0:
    keep = jax.random.bernoulli(key, 1.0 - dropout, h.shape)
    h = jnp.where(keep, h / (1.0 - dropout), 0.0)
  return h @ params["w2"] + params["b2"]


def layer_weights(params: Params) -> Any:
  """The weighted sum's weights over layers 1..L (a list of floats)."""
  return jax.nn.softmax(params["layer_logits"]).tolist()
