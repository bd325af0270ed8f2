r"""Compile the trainer's step for a TPU slice on this machine (no TPU: libtpu's compiler) and say
whether it fits the chips' memory, before a slice is created.

  python -m mert_jax.compile_check --config=configs/mert.py:95m --topology=v4-32
  python -m mert_jax.compile_check --config=95m --topology=v4-8 --per-chip-batch=32 \
      --config.model.remat=true --find-max-batch

--topology is a Cloud accelerator type (v4-8, v4-32, v4-64: TensorCores, two per v4 chip;
v5litepod-16: chips) or a topology string (v4:2x2x4, the single chip v4:1x1x1). --config and
--config.FIELD=VALUE are the trainer's (mert_jax/cli/train.py): the same recipe, mesh and
shardings are compiled. The per-chip batch is clips per chip per micro-batch: --per-chip-batch,
else the recipe's batch_size / grad_accum_steps / chips.

Prints one JSON line per compile: topology, mesh, per-chip batch, per-chip bytes (arguments,
outputs, temporaries, alias, generated code, XLA's peak; measured by the compiler), the chip's HBM,
fits, compile seconds, XLA's cost-model FLOPs and step time (estimates; null when not sane) and
the analytic FLOPs (mert_jax/model/flops.py). --find-max-batch searches the largest per-chip
batch that fits in few compiles (mert_jax/train/batch_search.py states the method) and ends with
a "max_batch" line. Exit status 0 when the step fits (with --find-max-batch: when a batch fits),
1 with one `error:` line when it does not or the input is wrong.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shlex
import sys
from typing import Any, NoReturn

from mert_jax import tpu_topology
from mert_jax.terminal.cli_help import ArgumentParser, option_value, prog

GIB = 2**30
DEFAULT_MAX_COMPILES = 8  # --find-max-batch: compiles at most (each takes minutes at full size)


class _Parser(ArgumentParser):
  """The shared one-line-error parser, exiting 1 (bad input) as every other refusal here."""

  def error(self, message: str) -> NoReturn:
    self.exit(1, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(
    prog=prog("mert_jax.compile_check"),
    usage="%(prog)s --config=RECIPE --topology=SLICE [--config.FIELD=VALUE ...] [options]",
    description=__doc__,
  )
  p.add_argument(
    "--config", metavar="RECIPE", help="the recipe, as mert-train takes it (configs/mert.py:95m)"
  )
  p.add_argument(
    "--config.FIELD",
    metavar="VALUE",
    dest="_field",
    help="set a field of the recipe (mert-train --help lists them); repeatable",
  )
  p.add_argument(
    "--topology",
    metavar="SLICE",
    help="v4-8 ... v4-4096, v5litepod-1 ... v5litepod-256, or a topology such as v4:2x2x4",
  )
  p.add_argument(
    "--per-chip-batch",
    type=int,
    metavar="N",
    help="clips per chip per micro-batch (default: batch_size / grad_accum_steps / chips)",
  )
  p.add_argument(
    "--find-max-batch",
    action="store_true",
    help="search the largest per-chip batch that fits (first compiles: N/2 and N)",
  )
  p.add_argument(
    "--max-compiles",
    type=int,
    default=DEFAULT_MAX_COMPILES,
    metavar="N",
    help="--find-max-batch: compile at most N times",
  )
  p.add_argument("--json", metavar="FILE", help="also append each JSON line to FILE")
  return p


class Refused(Exception):
  """Input this command refuses: printed as one ``error:`` line, exit status 1."""


def run(argv: list[str] | None = None) -> int:
  """The ``mert-compile-check`` command; returns the exit status."""
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    return _run(argv)
  except (Refused, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 1


def _run(argv: list[str]) -> int:
  # Checked in the order of their cost: the slice name (milliseconds), the command line and the
  # recipe (the trainer's parsing imports jax: seconds), libtpu, then the compiles (minutes).
  topology = option_value(argv, "--topology")
  if topology is not None:
    tpu_topology.parse(topology)
  from mert_jax.cli import train as train_cli

  overrides, rest = train_cli.split_overrides(argv)
  args = build_parser().parse_args(rest)
  args.argv = argv
  if not args.topology:
    raise Refused("--topology is required (e.g. --topology=v4-8)")
  if not args.config:
    raise Refused(f"--config is required ({train_cli.CONFIG_HELP})")
  slice_ = tpu_topology.parse(args.topology)
  config = train_cli.resolve(args.config, overrides)
  per_chip = _per_chip_batch(args.per_chip_batch, config, slice_)
  _check_mesh(config, slice_)
  if args.max_compiles < 2:
    raise Refused(f"--max-compiles={args.max_compiles}: the search needs at least 2")
  if not tpu_topology.libtpu_installed():
    raise Refused(f"libtpu is not installed; {tpu_topology.LIBTPU_INSTALL}")

  from mert_jax.train import aot, batch_search  # jax's backends start after the env is set

  devices = _devices(slice_)
  base = _base_row(args, overrides, config, slice_)

  def compile_at(batch: int, role: str) -> aot.Compiled:
    cfg = aot.with_per_chip_batch(config, batch, slice_.chips)
    result = aot.compile_step(cfg, devices, slice_.chip.hbm_bytes)
    _emit(
      {
        **base,
        "kind": "compile",
        "role": role,
        **aot.record(result, cfg, slice_.chips, slice_.chip.device_kind),
      },
      args.json,
    )
    return result

  if not args.find_max_batch:
    result = compile_at(per_chip, "check")
    if not result.fits:
      raise Refused(
        _too_big(config, slice_, result) + "; find the largest that fits with --find-max-batch"
      )
    return 0

  def measure(batch: int) -> batch_search.Probe:
    r = compile_at(batch, "search")
    return batch_search.Probe(batch, r.memory.total, r.fits)

  found = batch_search.find_max_batch(
    measure, slice_.chip.hbm_bytes, (max(1, per_chip // 2), per_chip), args.max_compiles
  )
  _emit(
    {
      **base,
      "kind": "max_batch",
      "max_per_chip_batch": found.max_batch,
      "exact": found.exact,
      "compiles": len(found.probes),
      "probes": [[p.batch, p.bytes, p.fits] for p in found.probes],
      "method": found.method,
    },
    args.json,
  )
  if found.max_batch == 0:
    raise Refused(
      f"{config.variant} does not fit {slice_.chip.generation}'s "
      f"{slice_.chip.hbm_bytes / GIB:g} GiB per chip even at 1 clip per chip; try "
      "--config.model.remat=true or a mesh with fsdp (--config.mesh='[-1,2,1]')"
    )
  return 0


def _per_chip_batch(requested: int | None, config: Any, slice_: tpu_topology.Slice) -> int:
  """--per-chip-batch, else the recipe's batch per chip per micro-batch (a whole number >= 1)."""
  if requested is not None:
    if requested < 1:
      raise Refused(f"--per-chip-batch={requested}: give a number of clips >= 1")
    return requested
  accum = config.optimizer.grad_accum_steps
  per_chip = config.batch_size / accum / slice_.chips
  if per_chip < 1 or not per_chip.is_integer():
    raise Refused(
      f"--config.batch_size={config.batch_size} (grad_accum_steps={accum}) is {per_chip:g} clips "
      f"per chip per micro-batch on {slice_.name}'s {slice_.chips} chips; pass --per-chip-batch=N"
    )
  return int(per_chip)


def _check_mesh(config: Any, slice_: tpu_topology.Slice) -> None:
  from mert_jax import sharding

  try:
    sharding.resolve_mesh_shape(config.mesh, slice_.chips)
  except ValueError as e:
    raise Refused(
      f"--config.mesh={list(config.mesh)} on {slice_.name} ({slice_.chips} chips): {e}"
    ) from None


def _devices(slice_: tpu_topology.Slice) -> list:
  """The slice's deviceless devices, libtpu's warnings about this machine silenced and JAX's
  default backend the CPU (unless the caller chose one)."""
  import jax

  tpu_topology.quiet_libtpu(slice_)
  if "JAX_PLATFORMS" not in os.environ:
    jax.config.update("jax_platforms", "cpu")
  try:
    return tpu_topology.devices(slice_)
  except jax.errors.JaxRuntimeError as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise Refused(f"libtpu refused topology {slice_.topology} ({slice_.name}): {first}") from None


def _base_row(
  args: argparse.Namespace, overrides: list, config: Any, slice_: tpu_topology.Slice
) -> dict[str, Any]:
  return {
    "command": f"{prog('mert_jax.compile_check')} {shlex.join(args.argv)}",
    "topology": slice_.name,
    "topology_string": slice_.topology,
    "accelerator_type": slice_.accelerator_type,
    "chips": slice_.chips,
    "device_kind": slice_.chip.device_kind,
    "hbm_gib_per_chip": slice_.chip.hbm_bytes / GIB,
    "config": args.config,
    "variant": config.variant,
    "overrides": [f"{'no' * neg}{f}={t}" if t is not None else f for f, t, neg in overrides],
    "jax": importlib.metadata.version("jax"),
    "libtpu": importlib.metadata.version("libtpu"),  # the compiler whose plan this is
  }


def _too_big(config: Any, slice_: tpu_topology.Slice, result: Any) -> str:
  return (
    f"{config.variant} at {result.per_chip_batch} clips/chip needs "
    f"{result.memory.total / GIB:.1f} GiB per chip, {slice_.chip.generation} has "
    f"{slice_.chip.hbm_bytes / GIB:g} GiB"
  )


def _emit(row: dict[str, Any], path: str | None) -> None:
  line = json.dumps(row)
  print(line, flush=True)
  if path:
    with open(path, "a") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  sys.exit(run())
