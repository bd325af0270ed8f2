"""MERTModel: logical sharding axes on every parameter and a sharded forward on a
(data, fsdp, tensor) = (2, 2, 2) CPU mesh, bf16 vs fp32, dropout modes, the non-finite audio
check, and the parameter counts of every size (pinned in tests/expected.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from mert_jax.config import MODEL_SIZES, model_config
from mert_jax.model import mert as model_lib
from mert_jax.sharding import DEFAULT_RULES
from tests.expected import BACKBONE_PARAMS, TOTAL_PARAMS


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_every_parameter_has_logical_axes(size: str) -> None:
  m = model_lib.abstract_model(model_config(size))
  known = {name for name, _ in DEFAULT_RULES}
  for path, var in nnx.to_flat_state(nnx.state(m, nnx.Param)):
    axes = var.get_metadata().get("out_sharding")
    assert axes is not None and len(axes) == len(var.shape), (path, axes)
    assert all(a is None or a in known for a in axes), (path, axes)


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_parameter_counts(size: str) -> None:
  rows = model_lib.param_table(model_config(size))  # count_params of one abstract model
  table = dict(rows)
  backbone = table["backbone (= transformers.HubertModel)"]
  assert backbone == BACKBONE_PARAMS[size]
  assert table["total"] == TOTAL_PARAMS[size] == backbone + table["heads"]
  parts = [n for name, n in rows if name.startswith("backbone.")]
  assert sum(parts) == backbone
  heads = [n for name, n in rows if name.startswith("heads.")]
  assert sum(heads) == table["heads"]


def test_sharded_forward_matches_unsharded(music: np.ndarray) -> None:
  cfg = model_config("tiny", dtype="float32")
  audio = jnp.asarray(music[: 4 * 8000].reshape(4, 8000))
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


def test_bf16_compute_close_to_fp32(music: np.ndarray) -> None:
  audio = jnp.asarray(music[: 2 * 12000].reshape(2, 12000))
  f32 = model_lib.create_model(model_config("tiny", dtype="float32"))(audio).last_hidden_state
  bf16 = model_lib.create_model(model_config("tiny", dtype="bfloat16"))(audio).last_hidden_state
  assert bf16.dtype == jnp.bfloat16
  err = float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)))
  print(f"bf16 vs fp32 max-abs {err:.3e}")
  assert err < 0.1  # post-LN outputs are O(1); bf16 has 8 mantissa bits
  m = model_lib.create_model(model_config("tiny"))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def _f32(out: model_lib.BackboneOutput) -> np.ndarray:
  return np.asarray(out.last_hidden_state, np.float32)


def test_dropout_needs_key_and_eval_mode_has_no_dropout(music: np.ndarray) -> None:
  cfg = model_config("tiny")
  m = model_lib.create_model(cfg)
  audio = jnp.asarray(music[: 2 * 6000].reshape(2, 6000))
  with pytest.raises(ValueError, match="needs key="):
    m(audio, deterministic=False)
  k0, k1 = jax.random.key(0), jax.random.key(1)
  a, b = _f32(m(audio, deterministic=False, key=k0)), _f32(m(audio, deterministic=False, key=k1))
  assert not np.allclose(a, b)  # train mode: the key draws the dropout
  # Eval mode ignores a key, differs from train mode, and equals train mode with every dropout
  # rate and layerdrop at 0 (same seed, same parameters).
  evaluated = _f32(m(audio))
  np.testing.assert_array_equal(_f32(m(audio, key=k0)), evaluated)
  np.testing.assert_array_equal(_f32(m(audio, key=k1)), evaluated)
  assert not np.allclose(evaluated, a)
  no_dropout = model_lib.create_model(
    cfg.replace(
      dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0, layerdrop=0.0
    )
  )
  for p, q in zip(
    jax.tree.leaves(nnx.state(m, nnx.Param)), jax.tree.leaves(nnx.state(no_dropout, nnx.Param))
  ):
    np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
  np.testing.assert_array_equal(_f32(no_dropout(audio, deterministic=False, key=k0)), evaluated)


def test_non_finite_audio_is_named() -> None:
  x = np.zeros((3, 1000), np.float32)
  x[2, 7] = np.nan
  x[1, 3] = np.inf
  with pytest.raises(ValueError, match=r"2 non-finite samples \(NaN or inf\) in row\(s\) \[1, 2\]"):
    model_lib.check_finite(x)
