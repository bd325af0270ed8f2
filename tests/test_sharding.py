"""Logical-axis sharding (mert_jax/sharding.py): mesh shapes, and the PartitionSpec of a parameter
from its logical axes, replicating what the mesh does not divide."""

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from configs import mert as mert_configs
from mert_jax import recipe, sharding
from mert_jax.model.mert import abstract_model
from mert_jax.sharding import BATCH, EMBED, HEADS, KV, LENGTH, MLP

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
  assert sharding.logical_to_spec((BATCH, LENGTH), (16, 10), m, RULES) == P(("data", "fsdp"), None)
  assert sharding.logical_to_spec((BATCH, LENGTH), (12, 10), m, RULES) == P(None, None)  # 12 % 8
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
