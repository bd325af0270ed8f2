"""Logical-axis sharding (mert_jax/sharding.py): mesh shapes, and the PartitionSpec of a parameter
from its logical axes, replicating what the mesh does not divide."""

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from configs import mert as mert_configs
from mert_jax import recipe, sharding
from mert_jax.model.mert import abstract_model
from mert_jax.sharding import BATCH, EMBED, HEADS, KV, MLP

RULES = sharding.DEFAULT_RULES


def mesh(*shape: int) -> jax.sharding.Mesh:
  return sharding.make_mesh(list(shape), jax.devices()[:8])


def test_make_mesh_names_and_sizes():
  m = mesh(2, -1, 2)
  assert m.axis_names == sharding.MESH_AXES and dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_heads_the_tensor_axis_does_not_divide_are_replicated():
  tensor8 = mesh(1, 1, 8)
  assert sharding.logical_to_spec((EMBED, HEADS, KV), (32, 4, 8), tensor8, RULES) == P(
    None, None, None
  )
  assert sharding.logical_to_spec((EMBED, HEADS, KV), (32, 8, 4), tensor8, RULES) == P(
    None, "tensor", None
  )
  assert sharding.logical_to_spec((EMBED, MLP), (32, 64), tensor8, RULES) == P(None, "tensor")
  fsdp2_tensor4 = mesh(1, 2, 4)
  assert sharding.logical_to_spec((EMBED, HEADS, KV), (32, 4, 8), fsdp2_tensor4, RULES) == P(
    "fsdp", "tensor", None
  )
  assert sharding.logical_to_spec((EMBED, HEADS, KV), (32, 2, 16), fsdp2_tensor4, RULES) == P(
    "fsdp", None, None
  )
  assert sharding.logical_to_spec((EMBED, HEADS, KV), (31, 4, 8), fsdp2_tensor4, RULES) == P(
    None, "tensor", None
  )


def test_tiny_model_with_4_heads_on_8_tensor_devices():
  """The tiny model's plan (4 heads, FFN 64) on tensor=8: heads replicated, MLP sharded."""
  c = mert_configs.get_config("tiny")
  mcfg = recipe.model_config_from(c)
  assert mcfg.num_heads == 4
  _, template = nnx.split(abstract_model(mcfg), nnx.Param)
  plan = sharding.param_shardings(template, mesh(1, 1, 8), RULES)
  layer = plan["backbone"]["encoder"]["layers"][0]
  assert layer["attention"]["q_proj"]["kernel"].spec == P(None, None, None)
  assert layer["feed_forward"]["intermediate_dense"]["kernel"].spec == P(None, "tensor")
  assert layer["feed_forward"]["output_dense"]["kernel"].spec == P("tensor", None)


def test_a_mesh_axis_is_used_once_per_parameter():
  both_fsdp = [(EMBED, "fsdp"), (MLP, "fsdp")]
  fsdp8 = mesh(1, 8, 1)
  assert sharding.logical_to_spec((EMBED, MLP), (16, 64), fsdp8, both_fsdp) == P("fsdp", None)
  # An earlier dimension that cannot take the axis leaves it to a later one.
  assert sharding.logical_to_spec((EMBED, MLP), (12, 64), fsdp8, both_fsdp) == P(None, "fsdp")
  # A multi-axis rule drops the axes already used and keeps the rest.
  rules = [(EMBED, "fsdp"), (BATCH, ("data", "fsdp"))]
  assert sharding.logical_to_spec((EMBED, BATCH), (16, 8), mesh(2, 4, 1), rules) == P(
    "fsdp", "data"
  )


def test_batch_rule_over_two_mesh_axes():
  m = mesh(2, 4, 1)
  assert sharding.logical_to_spec((BATCH, None), (16, 10), m, RULES) == P(("data", "fsdp"), None)
  assert sharding.logical_to_spec((BATCH, None), (12, 10), m, RULES) == P(None, None)  # 12 % 8
  # Mesh axes of size 1 are dropped from the spec; unnamed and unknown axes stay replicated.
  assert sharding.logical_to_spec((BATCH, None, "unknown"), (16, 4, 4), mesh(8, 1, 1), RULES) == P(
    "data", None, None
  )


def test_resolve_mesh_shape():
  assert sharding.resolve_mesh_shape([-1, 1, 1], 8) == (8, 1, 1)
  assert sharding.resolve_mesh_shape([2, -1, 2], 8) == (2, 2, 2)
  assert sharding.resolve_mesh_shape([1, 1, 8], 8) == (1, 1, 8)
  with pytest.raises(ValueError, match=r"at most one axis may be -1"):
    sharding.resolve_mesh_shape([-1, -1, 1], 8)
  with pytest.raises(ValueError, match=r"mesh shape \[3, -1, 1\] does not divide 8 devices"):
    sharding.resolve_mesh_shape([3, -1, 1], 8)
  with pytest.raises(
    ValueError,
    match=r"mesh shape \(2, 2, 1\) uses 4 devices but 8 are present; "
    r"set config.mesh so the product is 8",
  ):
    sharding.resolve_mesh_shape([2, 2, 1], 8)


# ------------------------------------------------------------------ the batch rule places batches


def _tiny(mesh_shape: list[int], batch_rule) -> ml_collections.ConfigDict:
  c = mert_configs.get_config("tiny")
  c.mesh, c.num_devices, c.batch_size = mesh_shape, 8, 16
  c.rules = [[BATCH, batch_rule] if r[0] == BATCH else r for r in c.rules]
  return c


@pytest.mark.parametrize(
  "mesh_shape, batch_rule, spec, shards",
  [
    ([2, 4, 1], ["data", "fsdp"], ("data", "fsdp"), 8),  # the default rule
    ([2, 4, 1], ["data"], "data", 2),  # fsdp holds parameters only: each fsdp group sees 8 clips
    ([2, 2, 2], ["data", "tensor"], ("data", "tensor"), 4),
    ([8, 1, 1], None, None, 1),  # every device sees the whole batch
  ],
)
def test_batch_placement_follows_the_batch_rule(mesh_shape, batch_rule, spec, shards):
  """The trainer's batch shardings, its global batches and its batch-shard count all come from
  config.rules' batch rule (there is no second, hard-coded batch layout)."""
  from mert_jax.train import input as input_lib
  from mert_jax.train import state as state_lib

  config = _tiny(mesh_shape, batch_rule)
  setup = state_lib.build(config)
  assert setup.batch_shardings["audio"].spec == P(None, spec, None)
  assert setup.batch_shardings["labels"].spec == P(None, spec, None, None)
  assert sharding.batch_shards(setup.mesh, setup.rules) == shards
  state_lib.check_batch_layout(config, setup.mesh, groups=1)
  local = {
    "audio": np.zeros((1, 16, 400), np.float32),
    "labels": np.zeros((1, 16, 8, 2), np.int32),
  }
  batch = input_lib.global_batch(local, 1, setup.batch_shardings)
  assert batch["audio"].sharding.spec == P(None, spec, None)
  assert batch["labels"].sharding.spec == P(None, spec, None, None)
  # Each device holds 16 / shards clips.
  assert {s.data.shape[1] for s in batch["audio"].addressable_shards} == {16 // shards}


def test_a_batch_the_rule_does_not_divide_is_refused_naming_the_axes():
  from mert_jax.train import state as state_lib

  config = _tiny([2, 4, 1], ["data", "fsdp"])
  config.batch_size = 12
  with pytest.raises(ValueError, match="divisible by data x fsdp = 8"):
    state_lib.check_batch_layout(config, mesh(2, 4, 1), groups=1)
  config.rules = [[BATCH, ["data"]] if r[0] == BATCH else r for r in config.rules]
  state_lib.check_batch_layout(config, mesh(2, 4, 1), groups=1)  # 12 clips over data = 2


def test_rules_without_a_usable_batch_rule_are_refused():
  no_batch = [r for r in RULES if r[0] != BATCH]
  with pytest.raises(ValueError, match="no 'batch' rule"):
    sharding.batch_mesh_axes(no_batch)
  with pytest.raises(ValueError, match=r"names \['dta'\], not mesh axes"):
    sharding.batch_mesh_axes([(BATCH, ("dta", "fsdp"))])


def test_every_logical_axis_has_exactly_one_default_rule_and_each_is_used():
  """The rules are the only source, so each logical axis is named once, and each names an axis
  that something carries (a parameter, or the batch)."""
  names = [name for name, _ in RULES]
  assert len(names) == len(set(names))
  model = abstract_model(recipe.model_config_from(mert_configs.get_config("tiny")))
  params = nnx.state(model, nnx.Param)
  used = {BATCH}
  for var in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    used |= {a for a in (var.get_metadata().get("out_sharding") or ()) if a is not None}
  assert set(names) == used, (
    f"rules for no axis: {set(names) - used}; axes without a rule: {used - set(names)}"
  )
