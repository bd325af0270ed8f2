"""Transformer encoder in post-LN (MERT-95M) and pre-LN (MERT-330M) form (spec §1.5).

Encoder forward::

  x[padding frames] = 0
  x = x + PosConv(x)
  post-LN: x = LayerNorm_enc(x)          (before the layers)
  x = Dropout(x)
  for each layer: skipped with probability layerdrop in training, else x = Layer(x)
  pre-LN:  x = LayerNorm_enc(x)          (after the last layer)

fairseq pads time to a multiple of 2 (``required_seq_len_multiple``) with masked keys; padded
keys are excluded from attention, so real frames are unchanged and it is omitted here.

``hidden_states`` follow transformers 5.24 ``HubertModel(output_hidden_states=True)``: entry 0 is
the first layer's input, entry n the output of layer n; in pre-LN form the last entry is the
raw output of the last layer and ``last_hidden_state`` is its LayerNorm (spec §5.5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mert_jax import sharding as ax
from mert_jax.config import ModelConfig
from mert_jax.model import layers
from mert_jax.model.attention import SelfAttention
from mert_jax.model.pos_conv import PosConv


class FeedForward(nnx.Module):
  """HF ``feed_forward``: ``intermediate_dense`` (D->F), exact GELU, ``output_dense`` (F->D)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = jnp.dtype(cfg.dtype)
    init = layers.normal(0.02)
    self.intermediate_dense = layers.Dense(
      cfg.hidden_size, cfg.ffn_size, axes=(ax.EMBED, ax.MLP), kernel_init=init, dtype=dt, rngs=rngs
    )
    self.output_dense = layers.Dense(
      cfg.ffn_size, cfg.hidden_size, axes=(ax.MLP, ax.EMBED), kernel_init=init, dtype=dt, rngs=rngs
    )
    self.activation_dropout = cfg.activation_dropout

  def __call__(self, x, *, deterministic: bool, key: jax.Array | None) -> jax.Array:
    h = layers.gelu(self.intermediate_dense(x))
    h = layers.dropout(h, self.activation_dropout, key, deterministic)
    return self.output_dense(h)


class EncoderLayer(nnx.Module):
  """One transformer layer. HF names: ``attention``, ``layer_norm`` (attention side),
  ``feed_forward``, ``final_layer_norm`` (FFN side)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = jnp.dtype(cfg.dtype)
    self.attention = SelfAttention(cfg, rngs)
    self.layer_norm = layers.LayerNorm(
      cfg.hidden_size, axis_name=ax.EMBED, eps=cfg.layer_norm_eps, dtype=dt, rngs=rngs
    )
    self.feed_forward = FeedForward(cfg, rngs)
    self.final_layer_norm = layers.LayerNorm(
      cfg.hidden_size, axis_name=ax.EMBED, eps=cfg.layer_norm_eps, dtype=dt, rngs=rngs
    )
    self.pre_ln = cfg.layer_norm_first
    self.dropout = cfg.dropout

  def __call__(
    self, x: jax.Array, key_padding: jax.Array | None, *, deterministic: bool, key: jax.Array | None
  ) -> jax.Array:
    keys = layers.KeySeq(key)
    drop = lambda h: layers.dropout(h, self.dropout, keys(), deterministic)
    attend = lambda h: self.attention(
      h, key_padding, deterministic=deterministic, dropout_key=keys()
    )
    ffn = lambda h: self.feed_forward(h, deterministic=deterministic, key=keys())
    if self.pre_ln:
      x = x + drop(attend(self.layer_norm(x)))
      return x + drop(ffn(self.final_layer_norm(x)))
    x = self.layer_norm(x + drop(attend(x)))
    return self.final_layer_norm(x + drop(ffn(x)))


def _remat_policy(name: str):
  """The jax.checkpoint policy of ``model.remat_policy``: "full" saves nothing (recompute the whole
  layer: least memory); "dots" saves the outputs of matmuls without batch dimensions (projections
  and FFN), so the backward recomputes only the cheap elementwise work and attention."""
  return {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[name]


class Encoder(nnx.Module):
  """HF name ``encoder``: ``pos_conv_embed.conv``, ``layer_norm``, ``layers[n]``."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = jnp.dtype(cfg.dtype)
    self.pos_conv_embed = nnx.Dict(conv=PosConv(cfg, rngs))
    self.layer_norm = layers.LayerNorm(
      cfg.hidden_size, axis_name=ax.EMBED, eps=cfg.layer_norm_eps, dtype=dt, rngs=rngs
    )
    self.layers = nnx.List([EncoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.pre_ln = cfg.layer_norm_first
    self.dropout = cfg.dropout
    self.layerdrop = cfg.layerdrop
    self.remat = cfg.remat
    self.remat_policy = cfg.remat_policy

  def __call__(
    self,
    x: jax.Array,
    frame_padding: jax.Array | None,
    *,
    deterministic: bool,
    key: jax.Array | None,
    output_hidden_states: bool = False,
  ) -> tuple[jax.Array, tuple[jax.Array, ...] | None]:
    """x (B, T, D) -> (last_hidden_state (B, T, D), hidden_states or None)."""
    keys = layers.KeySeq(key)
    if frame_padding is not None:
      x = jnp.where(frame_padding[..., None], jnp.zeros((), x.dtype), x)
    x = x + self.pos_conv_embed["conv"](x).astype(x.dtype)
    if not self.pre_ln:
      x = self.layer_norm(x)
    x = layers.dropout(x, self.dropout, keys(), deterministic)
    hidden = [x] if output_hidden_states else None

    def run(lyr: EncoderLayer, h: jax.Array, k: jax.Array | None) -> jax.Array:
      return lyr(h, frame_padding, deterministic=deterministic, key=k)

    if self.remat:
      run = nnx.remat(run, policy=_remat_policy(self.remat_policy))
    skip_layers = not deterministic and self.layerdrop > 0
    for layer in self.layers:
      layer_key = keys()
      if skip_layers:
        # One draw per layer per forward pass; the whole layer is skipped for the whole batch.
        # lax.cond runs only the taken branch (forward and backward), so a dropped layer costs
        # nothing; a select (jnp.where) would compute it and throw it away.
        skip = jax.random.uniform(keys(), ()) < self.layerdrop
        x = nnx.cond(skip, lambda lyr, h, k: h, run, layer, x, layer_key)
      else:
        x = run(layer, x, layer_key)
      if hidden is not None:
        hidden.append(x)
    if self.pre_ln:
      x = self.layer_norm(x)
    return x, (tuple(hidden) if hidden is not None else None)
