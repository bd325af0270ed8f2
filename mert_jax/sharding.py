"""Logical axis names carried by every parameter and by the batch, and the default rules mapping
them onto the (data, fsdp, tensor) device mesh.

Model code names only logical axes; which mesh axis shards which logical axis is data
(``DEFAULT_RULES``, overridable as ``config.rules``), as in MaxText / T5X. The rules are the only
source: parameters are placed by their logical axes (``param_shardings``) and a batch's clips by
the ``batch`` rule (``batch_sharding``). Activations carry no constraint of their own: XLA's
sharding propagation (Auto mesh axes) carries the batch split through the step, which the
fake-device tests and ``compile_check`` verify (tests/test_sharding.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# Logical axes: the batch's clip axis, and the axes of the parameters.
BATCH = "batch"  # a batch's clips (the audio's and the labels' clip axis)
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
)


# ----------------------------------------------------------------------------- mesh and shardings

MESH_AXES = ("data", "fsdp", "tensor")


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


def batch_mesh_axes(rules: AxisRules) -> tuple[str, ...]:
  """The mesh axes the ``batch`` rule splits a batch's clips over (() when it maps to None:
  every device sees the whole batch). A table without a ``batch`` rule, or one naming an axis
  the mesh lacks, is refused in one line: a batch must not be replicated by a typo."""
  table = dict(rules)
  if BATCH not in table:
    raise ValueError(f'config.rules has no {BATCH!r} rule: add [{BATCH!r}, ["data", "fsdp"]]')
  axes = table[BATCH]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  unknown = [a for a in axes if a not in MESH_AXES]
  if unknown:
    raise ValueError(
      f"config.rules: the {BATCH!r} rule names {unknown}, not mesh axes (of {list(MESH_AXES)})"
    )
  return axes


def batch_shards(mesh: Mesh, rules: AxisRules) -> int:
  """Devices that hold different clips of a batch: the product of the batch rule's mesh axes."""
  return math.prod(mesh.shape[axis] for axis in batch_mesh_axes(rules))


def batch_sharding(mesh: Mesh, rules: AxisRules, ndim: int, batch_axis: int = 0) -> NamedSharding:
  """A batch array's sharding: its ``batch_axis`` split as the ``batch`` rule says, the rest
  whole. Unlike a parameter's, a batch the mesh does not divide is an error (``check_batch_layout``
  refuses such a batch size first), never silently replicated."""
  spec: list = [None] * ndim
  axes = batch_mesh_axes(rules)
  spec[batch_axis] = axes or None
  return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def describe(shardings: dict) -> list[str]:
  """One line per parameter: path and PartitionSpec (logged once at start)."""
  flat = jax.tree_util.tree_leaves_with_path(
    shardings, is_leaf=lambda x: isinstance(x, NamedSharding)
  )
  return [f"{jax.tree_util.keystr(path)}: {s.spec}" for path, s in flat]
