"""The encoder's layerdrop: lax.cond equals the select formulation in value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax.config import model_config
from mert_jax.model import layers as layers_lib
from mert_jax.model import mert as model_lib


def test_layerdrop_cond_equals_select_reference_and_skips_gradients() -> None:
  """Layerdrop runs a layer under lax.cond; it must equal the plain "compute the layer, then select
  the input where skipped" reference (restated here) for every draw, in value and gradient."""
  cfg = model_config(
    "tiny", dtype="float32", num_layers=4, layerdrop=0.5, dropout=0.1, attention_dropout=0.0
  )
  enc = model_lib.create_model(cfg).backbone.encoder
  x = jnp.asarray(np.random.RandomState(0).randn(2, 40, cfg.hidden_size).astype(np.float32))

  def reference(enc, x, key):  # the select formulation, same key sequence
    keys = layers_lib.KeySeq(key)
    x = x + enc.pos_conv_embed["conv"](x)
    x = enc.layer_norm(x)
    x = layers_lib.dropout(x, enc.dropout, keys(), False)
    for layer in enc.layers:
      k_layer, k_skip = keys(), keys()
      y = layer(x, None, deterministic=False, key=k_layer)
      x = jnp.where(jax.random.uniform(k_skip, ()) < enc.layerdrop, x, y)
    return x

  graphdef, state = nnx.split(enc)
  r = jnp.asarray(np.random.RandomState(1).randn(*x.shape).astype(np.float32))

  def loss(fn, s, key):  # a random projection (sum of squares is ~constant after LayerNorm)
    return jnp.sum(fn(nnx.merge(graphdef, s), x, key) * r)

  new_fn = lambda e, h, k: e(h, None, deterministic=False, key=k)[0]
  skipped_any = False
  new_vg, ref_vg = [
    jax.jit(jax.value_and_grad(lambda s, k, fn=fn: loss(fn, s, k))) for fn in (new_fn, reference)
  ]
  for seed in range(6):
    key = jax.random.key(seed)
    (ln, gn), (lr, gr) = new_vg(state, key), ref_vg(state, key)
    np.testing.assert_allclose(ln, lr, rtol=1e-5)
    # fp32 summation-order noise only: bounded relative to each gradient's scale
    # (k_proj.bias is exactly 0 in theory)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(gr))
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale), gn, gr
    )
    zero = [
      bool(jnp.all(gn["layers"][i]["feed_forward"]["output_dense"]["kernel"][...] == 0))
      for i in range(cfg.num_layers)
    ]
    skipped_any |= any(zero)
  assert skipped_any  # some draw skipped a layer: its gradient is exactly 0
