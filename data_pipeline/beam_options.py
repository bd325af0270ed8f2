"""Beam's pipeline options on our command lines (``prepare`` and ``extract``, ``--engine=beam``):
which of the arguments a command did not know are Beam's, refused in one line when they are not,
and the options a pipeline runs with.

Beam is the optional ``beam`` extra, so it is imported inside the functions: a command without it
still parses, and names the extra when Beam's options are given.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Iterator

from mert_jax.terminal.cli_help import ArgumentParser
from mert_jax.terminal.progress import log_level

WORKER_LOG_LEVEL = "ERROR"  # Beam workers' own log lines below this are dropped


def _beam_option_parser() -> argparse.ArgumentParser:
  """A parser of every pipeline option Beam defines (all runners')."""
  with log_level(logging.ERROR):  # Beam's import warns that optional BigQuery clients are missing
    from apache_beam.options.pipeline_options import (  # pylint: disable=g-import-not-at-top
      PipelineOptions,
      _BeamArgumentParser,  # Beam's parser for its options (value-provider arguments)
    )

  def subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
      yield sub
      yield from subclasses(sub)

  parser = _BeamArgumentParser(allow_abbrev=False)
  for cls in dict.fromkeys(subclasses(PipelineOptions)):
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser


def unknown_options(args: list[str]) -> list[str]:
  """The arguments in ``args`` that are no Beam pipeline option (which Beam would drop with a
  warning, so a typo would pass silently)."""
  return _beam_option_parser().parse_known_args(args)[1]


def option_names() -> list[str]:
  """Every Beam pipeline option's flag (for the closest-name hint)."""
  return [s for a in _beam_option_parser()._actions for s in a.option_strings]  # pylint: disable=protected-access


def pass_through(parser: ArgumentParser, rest: list[str], engine: str, command: str) -> list[str]:
  """The arguments ``command``'s ``parser`` did not know (``rest``): Beam's pipeline options,
  which only ``--engine=beam`` takes. Refused in one line (exit 2) without the ``beam`` extra,
  without --engine=beam, or when they are no Beam option either (with the closest name: Beam
  would drop them with a warning, so a typo would pass silently)."""
  if not rest:
    return []
  try:
    unknown = unknown_options(rest)
  except ImportError:
    parser.refuse(rest, note=" (Beam's options need --engine=beam and the beam extra)")
  if engine != "beam":
    parser.refuse(rest, note=" (Beam pipeline options need --engine=beam)", hint=bool(unknown))
  if unknown:
    parser.refuse(unknown, option_names(), f" (neither {command}'s nor Beam's)")
  return rest


def pipeline_options(workers: int | None, beam_args: list[str]) -> Any:
  """Beam's ``PipelineOptions`` from the pass-through arguments; on the DirectRunner, ``workers``
  processes (None: one per CPU) unless --direct_num_workers says otherwise."""
  with log_level(logging.ERROR):  # Beam's import warns that optional BigQuery clients are missing
    from apache_beam.options.pipeline_options import (  # pylint: disable=g-import-not-at-top
      DirectOptions,
      PipelineOptions,
      StandardOptions,
    )

  given = " ".join(beam_args)
  if "--default_sdk_harness_log_level" not in given:  # workers' lines: errors only
    beam_args = [*beam_args, f"--default_sdk_harness_log_level={WORKER_LOG_LEVEL}"]
  options = PipelineOptions(beam_args)
  runner = options.view_as(StandardOptions).runner
  if runner in (None, "DirectRunner", "direct"):
    direct = options.view_as(DirectOptions)
    if "--direct_num_workers" not in given:
      direct.direct_num_workers = workers or os.cpu_count() or 1
    if direct.direct_num_workers > 1 and "--direct_running_mode" not in given:
      direct.direct_running_mode = "multi_processing"
  return options
