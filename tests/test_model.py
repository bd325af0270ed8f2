"""Model structure: frame counts, logical sharding axes on every parameter and a sharded forward
on a (data, fsdp, tensor) = (2, 2, 2) CPU mesh, attention paths, bf16 vs fp32, parameter table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from mert_jax.cli import params as params_cli
from mert_jax.model import mert as model_lib
from mert_jax.config import MODEL_SIZES, model_config
from mert_jax.model.conv_extractor import num_frames, receptive_field
from mert_jax.sharding import DEFAULT_RULES


def test_num_frames_formula():
  layers = MODEL_SIZES["95m"].conv_layers
  assert receptive_field(layers) == 400
  for length in list(range(0, 3000, 7)) + [72000, 120000, 122880]:
    want = (length - 400) // 320 + 1 if length >= 400 else 0
    assert num_frames(length, layers) == want
  assert num_frames(120000, layers) == 374 and num_frames(122880, layers) == 383


def test_model_output_length_matches_formula(music):
  cfg = model_config("tiny", dtype="float32")
  m = model_lib.create_model(cfg)
  for length in (400, 719, 720, 5000):
    out = m(jnp.asarray(music[:length][None]))
    assert out.last_hidden_state.shape == (1, num_frames(length, cfg.conv_layers), cfg.hidden_size)


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_every_parameter_has_logical_axes(size):
  m = model_lib.abstract_model(model_config(size))
  known = {name for name, _ in DEFAULT_RULES}
  for path, var in nnx.to_flat_state(nnx.state(m, nnx.Param)):
    axes = var.get_metadata().get("out_sharding")
    assert axes is not None and len(axes) == len(var.shape), (path, axes)
    assert all(a is None or a in known for a in axes), (path, axes)


def test_sharded_forward_matches_unsharded(music):
  cfg = model_config("tiny", dtype="float32")
  audio = jnp.asarray(music[:4 * 8000].reshape(4, 8000))
  ref = model_lib.create_model(cfg, seed=0)(audio).last_hidden_state
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(DEFAULT_RULES):
    sharded = model_lib.MERTModel(cfg, nnx.Rngs(0))
    kernel = sharded.backbone.encoder.layers[0].attention.q_proj["kernel"]
    assert kernel.get_value().sharding.spec == P("fsdp", "tensor", None)
    fc1 = sharded.backbone.encoder.layers[0].feed_forward.intermediate_dense.kernel
    assert fc1.get_value().sharding.spec == P("fsdp", "tensor")
    graphdef, state = nnx.split(sharded)
    x = jax.device_put(audio, NamedSharding(mesh, P(("data", "fsdp"))))
    out = jax.jit(lambda s, a: nnx.merge(graphdef, s)(a).last_hidden_state)(state, x)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_attention_paths_agree_and_relaxation_is_identity(music):
  audio = jnp.asarray(music[:2 * 6000].reshape(2, 6000))
  pad = np.zeros((2, 6000), bool)
  pad[1, 4000:] = True
  outs = {}
  for impl, relax in [("xla", -1.0), ("manual", -1.0), ("manual", 32.0)]:
    cfg = model_config("tiny", dtype="float32", attention_impl=impl, attention_relax=relax)
    with jax.default_matmul_precision("highest"):
      outs[(impl, relax)] = np.asarray(model_lib.create_model(cfg)(audio, padding_mask=jnp.asarray(pad)).last_hidden_state)
  base = outs[("xla", -1.0)]
  for k, v in outs.items():
    np.testing.assert_allclose(v, base, atol=2e-6, err_msg=str(k))


def test_padding_does_not_leak_into_real_frames(music):
  """Padded keys are excluded from attention: a padded clip's real frames ignore the padding's
  content (up to the extractor GroupNorm, which sees the whole clip; use layer_norm mode here)."""
  cfg = model_config("tiny", dtype="float32", extractor_mode="layer_norm")
  m = model_lib.create_model(cfg)
  a = np.array(music[:8000])
  b = a.copy()
  b[6000:] = np.random.RandomState(0).randn(2000) * 0.3
  pad = np.zeros((2, 8000), bool)
  pad[:, 6000:] = True
  out = np.asarray(m(jnp.asarray(np.stack([a, b])), padding_mask=jnp.asarray(pad)).last_hidden_state)
  real = num_frames(6000 - 400, cfg.conv_layers) - 64   # frames whose receptive fields and pos-conv stay clear of padding
  np.testing.assert_allclose(out[0, :real], out[1, :real], atol=1e-5)


def test_bf16_compute_close_to_fp32(music):
  audio = jnp.asarray(music[:2 * 12000].reshape(2, 12000))
  f32 = model_lib.create_model(model_config("tiny", dtype="float32"))(audio).last_hidden_state
  bf16 = model_lib.create_model(model_config("tiny", dtype="bfloat16"))(audio).last_hidden_state
  assert bf16.dtype == jnp.bfloat16
  err = float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)))
  print(f"bf16 vs fp32 max-abs {err:.3e}")
  assert err < 0.1          # post-LN outputs are O(1); bf16 has 8 mantissa bits
  m = model_lib.create_model(model_config("tiny"))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def test_dropout_needs_key_and_eval_is_deterministic(music):
  m = model_lib.create_model(model_config("tiny"))
  audio = jnp.asarray(music[:2 * 6000].reshape(2, 6000))
  with pytest.raises(ValueError, match="needs key="):
    m(audio, deterministic=False)
  a = m(audio, deterministic=False, key=jax.random.key(0)).last_hidden_state
  b = m(audio, deterministic=False, key=jax.random.key(1)).last_hidden_state
  assert not np.allclose(np.asarray(a, np.float32), np.asarray(b, np.float32))
  np.testing.assert_array_equal(np.asarray(m(audio).last_hidden_state, np.float32),
                                np.asarray(m(audio).last_hidden_state, np.float32))


def test_param_table_cli(capsys):
  params_cli.main(["--size=95m"])
  out = capsys.readouterr().out
  assert "94,371,712" in out and "95,550,160" in out
  params_cli.main(["--size=330m"])
  out = capsys.readouterr().out
  assert "315,428,992" in out and "317,875,664" in out


def test_layerdrop_cond_equals_select_reference_and_skips_gradients():
  """Layerdrop runs a layer under lax.cond; it must equal the plain "compute the layer, then select
  the input where skipped" reference (restated here) for every draw, in value and gradient."""
  from mert_jax.model import layers as layers_lib
  cfg = model_config("tiny", dtype="float32", num_layers=4, layerdrop=0.5, dropout=0.1, attention_dropout=0.0)
  enc = model_lib.create_model(cfg).backbone.encoder
  x = jnp.asarray(np.random.RandomState(0).randn(2, 40, cfg.hidden_size).astype(np.float32))

  def reference(enc, x, key):                        # the select formulation, same key sequence
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
  def loss(fn, s, key):           # a random projection (sum of squares is ~constant after LayerNorm)
    return jnp.sum(fn(nnx.merge(graphdef, s), x, key) * r)
  new_fn = lambda e, h, k: e(h, None, deterministic=False, key=k)[0]
  skipped_any = False
  new_vg, ref_vg = [jax.jit(jax.value_and_grad(lambda s, k, fn=fn: loss(fn, s, k))) for fn in (new_fn, reference)]
  for seed in range(6):
    key = jax.random.key(seed)
    (ln, gn), (lr, gr) = new_vg(state, key), ref_vg(state, key)
    np.testing.assert_allclose(ln, lr, rtol=1e-5)
    # fp32 summation-order noise only: bounded relative to each gradient's scale
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(gr))   # k_proj.bias is exactly 0 in theory
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale), gn, gr)
    zero = [bool(jnp.all(gn["layers"][i]["feed_forward"]["output_dense"]["kernel"][...] == 0))
            for i in range(cfg.num_layers)]
    skipped_any |= any(zero)
  assert skipped_any                                  # some draw skipped a layer: its gradient is exactly 0
