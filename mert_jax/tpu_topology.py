"""TPU slices by the names people write (``v4-32``, ``v5litepod-16``) -> topology strings
(``v4:2x2x4``), chip facts (HBM, cores per chip), and deviceless TPU devices to compile for
(``jax.experimental.topologies``; needs ``libtpu``, no TPU).

Everything here but ``devices`` is pure and imports neither jax nor libtpu, so a misspelt slice
name is refused in milliseconds. The chip facts are data, kept in ``CHIPS`` with their source.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

from mert_jax.terminal.cli_help import did_you_mean

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation as the compiler sees it (one JAX device per chip)."""

  generation: str  # topology prefix: "v4" in "v4:2x2x4"
  accelerator_prefix: str  # Cloud accelerator type prefix: "v4" in "v4-32"
  device_kind: str  # jax.Device.device_kind (mert_jax/train/metrics.py keys its peaks by it)
  hbm_bytes: int  # HBM per chip
  cores_per_chip: int  # TensorCores per chip (v4: 2, fused into one device by megacore)
  accelerator_counts: str  # what N in "v4-N" counts: "cores" or "chips"
  dims: int  # topology dimensions: 3 (v4's 3D torus) or 2 (v5e's 2D torus)
  host_bounds: tuple[int, ...]  # chips per host (libtpu's default chips_per_host_bounds)
  chip_config_name: str | None  # libtpu chip config: "megacore" = one device per v4 chip
  slices: dict[int, str]  # N of the accelerator name -> topology shape (Cloud's slice shapes)


# Sources: cloud.google.com/tpu/docs/v4 (32 GiB HBM2 per chip, 2 TensorCores per chip, "v4-N" counts
# TensorCores, the slice shapes below) and cloud.google.com/tpu/docs/v5e (16 GiB HBM2 per chip,
# 1 TensorCore per chip, "v5litepod-N" counts chips, the slice shapes below), as of 2026-12.
CHIPS: dict[str, Chip] = {
  "v4": Chip(
    generation="v4",
    accelerator_prefix="v4",
    device_kind="TPU v4",
    hbm_bytes=32 * GIB,
    cores_per_chip=2,
    accelerator_counts="cores",
    dims=3,
    host_bounds=(2, 2, 1),
    chip_config_name="megacore",
    slices={
      8: "2x2x1",
      16: "2x2x2",
      32: "2x2x4",
      64: "2x4x4",
      128: "4x4x4",
      256: "4x4x8",
      512: "4x8x8",
      1024: "8x8x8",
      1536: "8x8x12",
      2048: "8x8x16",
      4096: "8x16x16",
    },
  ),
  "v5e": Chip(
    generation="v5e",
    accelerator_prefix="v5litepod",
    device_kind="TPU v5 lite",
    hbm_bytes=16 * GIB,
    cores_per_chip=1,
    accelerator_counts="chips",
    dims=2,
    host_bounds=(2, 2, 1),
    chip_config_name=None,
    slices={
      1: "1x1",
      4: "2x2",
      8: "2x4",
      16: "4x4",
      32: "4x8",
      64: "8x8",
      128: "8x16",
      256: "16x16",
    },
  ),
}

LIBTPU_INSTALL = "pip install 'libtpu==0.0.42.*' (the version jax[tpu] 0.10.2 pins; no TPU needed)"


class TopologyError(ValueError):
  """A slice name that is not a known accelerator type or topology (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Slice:
  """A TPU slice: the name it was asked for, its chip and its topology shape."""

  name: str  # as written: "v4-32" or "v4:2x2x4"
  chip: Chip
  shape: tuple[int, ...]  # chips along each torus axis: (2, 2, 4)

  @property
  def topology(self) -> str:
    """libtpu's topology string: ``v4:2x2x4``."""
    return f"{self.chip.generation}:{'x'.join(map(str, self.shape))}"

  @property
  def chips(self) -> int:
    """Chips in the slice = JAX devices (v4 megacore: one device per chip)."""
    return math.prod(self.shape)

  @property
  def accelerator_type(self) -> str | None:
    """The Cloud accelerator type of this shape (``v4-32``), or None when it has none."""
    text = "x".join(map(str, self.shape))
    for n, shape in self.chip.slices.items():
      if shape == text:
        return f"{self.chip.accelerator_prefix}-{n}"
    return None


def accelerator_names() -> list[str]:
  """Every accelerator type known here (``v4-8``, ..., ``v5litepod-256``)."""
  return [f"{c.accelerator_prefix}-{n}" for c in CHIPS.values() for n in c.slices]


def topology_names() -> list[str]:
  """The topology string of every known accelerator type (``v4:2x2x1``, ...)."""
  return [f"{c.generation}:{s}" for c in CHIPS.values() for s in c.slices.values()]


def parse(name: str) -> Slice:
  """``v4-32`` (an accelerator type) or ``v4:2x2x4`` (a topology of a known generation, any shape,
  e.g. the single chip ``v4:1x1x1``) -> Slice. Raises TopologyError naming the closest names."""
  text = name.strip().lower()
  for chip in CHIPS.values():
    m = re.fullmatch(rf"{re.escape(chip.accelerator_prefix)}-(\d+)", text)
    if m and int(m.group(1)) in chip.slices:
      return Slice(name, chip, _shape(chip.slices[int(m.group(1))]))
    m = re.fullmatch(rf"{re.escape(chip.generation)}:(\d+(?:x\d+)*)", text)
    if m:
      shape = _shape(m.group(1))
      if len(shape) != chip.dims or min(shape) < 1:
        raise TopologyError(
          f"topology {name!r}: a {chip.generation} topology has {chip.dims} positive dimensions "
          f"(e.g. {chip.generation}:{next(iter(chip.slices.values()))})"
        )
      return Slice(name, chip, shape)
  raise TopologyError(
    f"unknown topology {name!r}"
    + (did_you_mean(text, accelerator_names() + topology_names()) or "")
    + f" (accelerator types: {_ranges()}; or a topology such as v4:2x2x4)"
  )


def _shape(text: str) -> tuple[int, ...]:
  return tuple(int(d) for d in text.split("x"))


def _ranges() -> str:
  return ", ".join(
    f"{c.accelerator_prefix}-{{{','.join(map(str, c.slices))}}}" for c in CHIPS.values()
  )


def quiet_libtpu(slice_: Slice) -> None:
  """Environment that keeps libtpu from probing for a TPU on this machine (and printing warnings
  about it): the accelerator type and a local worker, set only where unset. Compiling touches no
  TPU, so libtpu's one-process lock (/tmp/libtpu_lockfile) is waived: several checks may run at
  once, or beside a trainer on a TPU VM. Call before the first ``devices``; JAX's default backend
  should be the CPU (``JAX_PLATFORMS=cpu``)."""
  smallest = f"{slice_.chip.accelerator_prefix}-{min(slice_.chip.slices)}"  # for v4:1x1x1
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", slice_.accelerator_type or smallest)
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # libtpu's INFO/WARNING lines
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def libtpu_installed() -> bool:
  """Whether the libtpu package is importable (checked without loading the TPU runtime)."""
  import importlib.util

  return importlib.util.find_spec("libtpu") is not None


def devices(slice_: Slice) -> list:
  """Deviceless TPU devices of the slice (one per chip), to compile for on any machine.
  Needs libtpu (``LIBTPU_INSTALL``)."""
  from jax.experimental import topologies

  kwargs = {}
  if slice_.chip.chip_config_name:
    kwargs["chip_config_name"] = slice_.chip.chip_config_name
  bounds = (*slice_.shape, *(1,) * (3 - len(slice_.shape)))
  host = tuple(min(h, b) for h, b in zip(slice_.chip.host_bounds, bounds))
  if host != slice_.chip.host_bounds:  # a slice smaller than one host (v4:1x1x1)
    kwargs["chips_per_host_bounds"] = list(host)
  desc = topologies.get_topology_desc(platform="tpu", topology_name=slice_.topology, **kwargs)
  return list(desc.devices)
