"""Logical axis names carried by every parameter, and the default rules mapping them onto the
(data, fsdp, tensor) device mesh.

Model code names only logical axes; which mesh axis shards which logical axis is data
(``DEFAULT_RULES``, overridable from the config), as in MaxText / T5X.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# Logical axes used by parameters and activations.
BATCH = "batch"  # activations: the batch axis
LENGTH = "length"  # activations: time frames / samples
EMBED = "embed"  # model width D
MLP = "mlp"  # FFN width F
HEADS = "heads"  # attention heads
KV = "kv"  # per-head width
CONV_IN = "conv_in"  # extractor conv input channels
CONV_OUT = "conv_out"  # extractor conv output channels
CONV_KERNEL = "conv_kernel"  # conv taps (never sharded)
FINAL_DIM = "final_dim"  # per-codebook projection width
VOCAB = "vocab"  # label-embedding rows (codebooks x labels)
CQT_BINS = "cqt_bins"  # CQT head outputs

AxisRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# FSDP shards the model width of every matrix; tensor parallelism splits heads and the MLP.
DEFAULT_RULES: AxisRules = (
  (BATCH, ("data", "fsdp")),
  (EMBED, "fsdp"),
  (MLP, "tensor"),
  (HEADS, "tensor"),
  (KV, None),
  (CONV_IN, None),
  (CONV_OUT, None),  # the extractor is 4.2M parameters: replicated (its cost is activations)
  (CONV_KERNEL, None),
  (FINAL_DIM, None),
  (VOCAB, None),
  (CQT_BINS, None),
  (LENGTH, None),
)


# ----------------------------------------------------------------------------- mesh and shardings

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_MESH_AXES = ("data", "fsdp")  # the batch is split over both data-parallel axes


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """(data, fsdp, tensor) with at most one -1 meaning "the remaining devices"."""
  shape = [int(s) for s in shape]
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh shape {shape} does not divide {num_devices} devices")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(
      f"mesh shape {tuple(shape)} uses {math.prod(shape)} devices but {num_devices} are present; "
      f"set config.mesh so the product is {num_devices} (or use -1 for one axis)"
    )
  return tuple(shape)


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over all (global) devices, with Auto axis types (GSPMD-style
  propagation; jax's default Explicit axes reject the FSDP matmuls, see shared/notes/stack.md)."""
  devices = list(devices or jax.devices())
  resolved = resolve_mesh_shape(shape, len(devices))
  return jax.make_mesh(resolved, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(
  axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: AxisRules
) -> P:
  """PartitionSpec for a parameter with logical ``axes``; a dimension the mesh axes do not divide
  stays replicated (a 4-head model on 8 tensor devices replicates its heads)."""
  table = dict(rules)
  out, used = [], set()
  for name, size in zip(axes, shape):
    mesh_axes = table.get(name) if name is not None else None
    if mesh_axes is None:
      out.append(None)
      continue
    tup = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    tup = tuple(a for a in tup if a not in used and mesh.shape[a] > 1)
    n = math.prod(mesh.shape[a] for a in tup)
    if not tup or size % n:
      out.append(None)
      continue
    used.update(tup)
    out.append(tup[0] if len(tup) == 1 else tup)
  return P(*out)


def param_shardings(param_state: nnx.State, mesh: Mesh, rules: AxisRules) -> dict:
  """Pure-dict tree of NamedShardings for the parameters, from their logical axes."""

  def one(var):
    axes = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
    return NamedSharding(mesh, logical_to_spec(axes, var.shape, mesh, rules))

  specs = jax.tree.map(one, param_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(specs)


def batch_shards(mesh: Mesh) -> int:
  """Devices that hold different clips of a batch: the product of the batch's mesh axes."""
  return math.prod(mesh.shape[axis] for axis in BATCH_MESH_AXES)


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
  spec = [None] * ndim
  spec[batch_axis] = BATCH_MESH_AXES
  return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def describe(shardings: dict) -> list[str]:
  """One line per parameter: path and PartitionSpec (logged once at start)."""
  flat = jax.tree_util.tree_leaves_with_path(
    shardings, is_leaf=lambda x: isinstance(x, NamedSharding)
  )
  return [f"{jax.tree_util.keystr(path)}: {s.spec}" for path, s in flat]
