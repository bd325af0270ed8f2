"""Ahead-of-time compile of the trainer's own step for devices that are not attached (deviceless TPU
slices, mert_jax/tpu_topology.py): per-chip memory, XLA's cost model, and whether it fits a chip.

The step is the one ``train()`` runs: ``state.build`` (same mesh, rules, shardings, donation) and
``loop.compile_train_step``, given ShapeDtypeStructs instead of arrays, so nothing is allocated.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from data_pipeline import reader
from mert_jax import sharding
from mert_jax.model.flops import train_flops_per_clip
from mert_jax.train import state as state_lib
from mert_jax.train.loop import compile_train_step
from mert_jax.train.metrics import PEAK_BF16_FLOPS
from mert_jax.train.run_config import RunConfig

# XLA:TPU refuses a program that does not fit with "... Used 34.2G of 31.2G hbm ..." (G = GiB), or,
# when the temporaries alone are too many, with their bytes (a lower bound of the whole plan).
_OOM_USED = re.compile(r"Used ([\d.]+)([KMGT])? of ([\d.]+)([KMGT])? hbm")
_OOM_TEMPORARIES = re.compile(r"memory required for HLO temporaries \(([\d.]+)([KMGT])?\) exceeds")
_UNITS = {None: 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclasses.dataclass(frozen=True)
class Memory:
  """Per-chip bytes of a compiled step (``Compiled.memory_analysis``); None where unknown (a
  compile XLA refused for memory reports only what it used)."""

  arguments: int | None
  outputs: int | None
  temporaries: int | None
  alias: int | None  # outputs that reuse argument buffers (the donated state)
  generated_code: int | None  # the program itself, held in HBM
  peak: int | None  # XLA's peak estimate (peak_memory_in_bytes)
  total: int  # what the chip must hold: the peak, else arguments + outputs + temporaries - alias
  # + generated code


def memory_of(stats: Any) -> Memory:
  """Memory from jax's CompiledMemoryStats."""
  parts = dict(
    arguments=stats.argument_size_in_bytes,
    outputs=stats.output_size_in_bytes,
    temporaries=stats.temp_size_in_bytes,
    alias=stats.alias_size_in_bytes,
    generated_code=stats.generated_code_size_in_bytes,
  )
  peak = getattr(stats, "peak_memory_in_bytes", 0) or None
  planned = (
    parts["arguments"]
    + parts["outputs"]
    + parts["temporaries"]
    - parts["alias"]
    + parts["generated_code"]
  )
  return Memory(**parts, peak=peak, total=max(planned, peak or 0))


def oom_memory(message: str) -> Memory | None:
  """The bytes a compile refused for running out of HBM says it needed; None when ``message`` is
  not such a refusal."""
  m = _OOM_USED.search(message)
  if m:
    used = int(float(m.group(1)) * _UNITS[m.group(2)])
    return Memory(None, None, None, None, None, peak=None, total=used)
  m = _OOM_TEMPORARIES.search(message)
  if m:
    temporaries = int(float(m.group(1)) * _UNITS[m.group(2)])
    return Memory(None, None, temporaries, None, None, peak=None, total=temporaries)
  return None


@dataclasses.dataclass(frozen=True)
class Cost:
  """XLA's cost model for one chip's program (``Compiled.cost_analysis``); None where absent."""

  flops: float | None
  optimal_seconds: float | None


def cost_of(analysis: Any) -> Cost:
  """Cost from ``cost_analysis()`` (a dict, or a list of one dict in older jax)."""
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  return Cost(flops=analysis.get("flops"), optimal_seconds=analysis.get("optimal_seconds"))


def sane_seconds(seconds: float | None, flops: float, peak_flops: float | None) -> float | None:
  """``seconds`` when it is a possible step time: positive, finite, and no faster than the chip's
  peak allows for ``flops``; else None (XLA's deviceless estimate can be negative)."""
  if seconds is None or not math.isfinite(seconds) or seconds <= 0:
    return None
  if peak_flops and seconds < flops / peak_flops:
    return None
  return seconds


def with_per_chip_batch(config: RunConfig, per_chip_batch: int, chips: int) -> RunConfig:
  """A copy of ``config`` whose global batch gives each chip ``per_chip_batch`` clips per
  micro-batch: ``batch_size = per_chip_batch x chips x grad_accum_steps``."""
  return config.replace(batch_size=per_chip_batch * chips * config.optimizer.grad_accum_steps)


def per_chip_batch_of(config: RunConfig, chips: int) -> float:
  """Clips per chip per micro-batch of ``config`` on ``chips`` chips (may be fractional)."""
  return config.batch_size / config.optimizer.grad_accum_steps / chips


def abstract_args(setup: state_lib.TrainSetup) -> tuple[dict, dict, jax.ShapeDtypeStruct]:
  """(state, batch, seed key) of the train step as ShapeDtypeStructs with the trainer's
  shardings: a batch is (micro-batches, clips, ...) float32 audio and int32 labels."""
  c, m = setup.config, setup.mcfg
  accum = setup.grad_accum_steps
  clips = c.batch_size // accum
  state = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
    setup.abstract_state,
    setup.state_shardings,
  )
  labels = reader.labels_per_crop(c.crop_samples, m.frame_stride)
  batch = {
    "audio": jax.ShapeDtypeStruct(
      (accum, clips, c.crop_samples), jnp.float32, sharding=setup.batch_shardings["audio"]
    ),
    "labels": jax.ShapeDtypeStruct(
      (accum, clips, m.num_codebooks, labels), jnp.int32, sharding=setup.batch_shardings["labels"]
    ),
  }
  key = jax.eval_shape(lambda: jax.random.key(c.seed))
  return state, batch, key


@dataclasses.dataclass(frozen=True)
class Compiled:
  """What one compile of the step for a slice tells: memory, cost, fit and the time it took."""

  per_chip_batch: int
  mesh: dict[str, int]
  memory: Memory
  cost: Cost
  compile_seconds: float
  hbm_bytes: int

  @property
  def fits(self) -> bool:
    return self.memory.total <= self.hbm_bytes


def compile_step(
  config: RunConfig,
  devices: Sequence[jax.Device],
  hbm_bytes: int,
  clock: Callable[[], float] = time.perf_counter,
) -> Compiled:
  """Compiles the trainer's step of ``config`` for ``devices``; a compile XLA refuses for memory
  is a result that does not fit (other compile errors raise)."""
  setup = state_lib.build(config, devices)
  began = clock()
  try:
    compiled = compile_train_step(setup, *abstract_args(setup), clock, announce=False)
    memory, cost = memory_of(compiled.memory_analysis()), cost_of(compiled.cost_analysis())
  except jax.errors.JaxRuntimeError as e:
    memory = oom_memory(str(e))
    if memory is None:
      raise
    memory = dataclasses.replace(memory, total=max(memory.total, hbm_bytes + 1))
    cost = Cost(None, None)
  return Compiled(
    per_chip_batch=int(per_chip_batch_of(config, len(devices))),
    mesh=dict(setup.mesh.shape),
    memory=memory,
    cost=cost,
    compile_seconds=clock() - began,
    hbm_bytes=hbm_bytes,
  )


def record(
  result: Compiled,
  config: RunConfig,
  chips: int,
  device_kind: str,
) -> dict[str, Any]:
  """The JSON row of one compile: per-chip memory (measured by the compiler), XLA's cost-model
  FLOPs and step time (estimates; null when not sane) and the analytic FLOPs beside them."""
  mcfg = config.model
  peak = PEAK_BF16_FLOPS.get(device_kind)
  analytic = train_flops_per_clip(mcfg, config.crop_samples) * result.per_chip_batch
  accum = config.optimizer.grad_accum_steps
  xla_flops = result.cost.flops if result.cost.flops and result.cost.flops > 0 else None
  step_s = sane_seconds(result.cost.optimal_seconds, xla_flops or analytic, peak)
  clips_per_update = result.per_chip_batch * accum
  return {
    "per_chip_batch": result.per_chip_batch,
    "grad_accum_steps": accum,
    "global_batch": config.batch_size,
    "mesh": result.mesh,
    "batch_shards": math.prod(result.mesh[a] for a in sharding.batch_mesh_axes(config.rules)),
    "clip_seconds": config.crop_samples / mcfg.sample_rate,
    "bytes_per_chip": dataclasses.asdict(result.memory),
    "gib_per_chip": round(result.memory.total / 2**30, 3),
    "hbm_bytes_per_chip": result.hbm_bytes,
    "fits": result.fits,
    "compile_s": round(result.compile_seconds, 1),
    "xla_flops_per_chip": xla_flops,  # per micro-batch (estimate)
    "xla_step_s": step_s,  # per micro-batch (estimate; null when not sane)
    "xla_optimal_seconds_reported": result.cost.optimal_seconds,  # as XLA gave it, sane or not
    "xla_clips_per_s_per_chip": result.per_chip_batch / step_s if step_s else None,
    "analytic_flops_per_chip": analytic,  # per micro-batch, mert_jax/model/flops.py
    "analytic_step_s_at_peak": analytic / peak if peak else None,
    "peak_flops_per_chip": peak,
    "clips_per_update_per_chip": clips_per_update,
  }
