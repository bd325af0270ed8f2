r"""Train (or resume) MERT.

  python -m mert_jax.cli.train --config=configs/mert.py:tiny --workdir=runs/tiny
  python -m mert_jax.cli.train --config=95m --workdir=gs://BUCKET/run \
      --config.data.dir=gs://BUCKET/data --config.mesh=[-1,1,1] --config.batch_size=1024
  python -m mert_jax.cli.train --config=mert:330m --config.optimizer.lr=1e-3 --list-config

--config names a recipe: FILE.py:VARIANT, NAME:VARIANT for a recipe shipped in configs/
(mert:95m = configs/mert.py:95m, found from any directory), or VARIANT alone (configs/mert.py).
Any field is set with --config.FIELD=VALUE (or --config.FIELD VALUE), typed by the field: a list
[2,1,1], a boolean true/false (alone, --config.model.remat is true; --noconfig.model.remat is
false), a number 1e-4. A misspelt file, variant or field, or a value of the wrong type, is one
`error:` line naming the closest valid name, before anything starts (exit status 1).
Re-running the same command resumes from the workdir's newest checkpoint that verifies, or from
--config.restore_step=N (mert_jax/train/loop.py, checkpoints.py). --workdir and --config.data.dir
may be in a bucket (gs://BUCKET/PATH, the gcs extra); a workdir that cannot be written (a bucket
that does not exist or refuses writes) or a data bucket that does not exist is refused first.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys

import ml_collections
from absl import app, flags, logging

from data_pipeline.tfrecord import CorruptRecordError
from mert_jax import recipe
from mert_jax.checkpointing import orbax_logs
from mert_jax.checkpointing.errors import CheckpointError
from mert_jax.cli import config_help
from mert_jax.files import storage
from mert_jax.terminal.cli_help import ArgumentParser, option_value, prog
from mert_jax.train import (
  distributed,
  fail_fast,
  recorded_config,
  run_config,
  workdir_lock,
)
from mert_jax.train import input as input_lib
from mert_jax.train.init_from import InitFromError
from mert_jax.train.loop import train
from mert_jax.train.loop_config import ConfigError
from mert_jax.train.run_config import RunConfig

# Errors whose message says everything: printed as one ``error: ...`` line, exit status 1 (any
# other error is one line too, with its type, and its traceback in a file the line names). A bad
# loop field or init_from source is refused before anything compiles; a checkpoint that cannot be
# read or written names itself and the cause (mert_jax/train/checkpoints.py); a damaged shard
# names the shard and the record.
ONE_LINE_ERRORS = (
  ConfigError,
  input_lib.DataError,
  CorruptRecordError,
  InitFromError,
  CheckpointError,
  recorded_config.ConfigChangeRefused,
  workdir_lock.WorkdirLocked,
  workdir_lock.WorkdirLockLost,
)

CONFIG_HELP = (
  "the recipe: FILE.py:VARIANT, NAME:VARIANT of configs/ (mert:95m), or VARIANT of configs/mert.py"
)

# The flags absl owns (with its logging flags: --verbosity, --log_dir, ...); run() parses the
# recipe and its --config.FIELD overrides itself and hands absl the rest.
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events and metrics.jsonl")
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "multi-process: host:port of process 0"
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-process: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-process: this process's index")
_ABSL_OPTIONS = {
  "--workdir": "DIR",
  "--coordinator_address": "HOST:PORT",
  "--num_processes": "N",
  "--process_id": "N",
}

# --config.FIELD=VALUE, --config.FIELD VALUE, --config.FIELD (a boolean), --noconfig.FIELD.
_OVERRIDE = re.compile(r"--(no)?config\.([^=]*)(?:=(.*))?", re.S)
_HELP = ("-h", "--help")


def build_parser(spec: str | None = None, *, fields: bool = True) -> argparse.ArgumentParser:
  """The command line; with ``fields``, its help ends with every field of recipe ``spec`` (default:
  configs/mert.py's default variant), its value and meaning."""
  epilog = None
  if fields:
    path, _ = recipe.split_spec(spec or recipe.DEFAULT_RECIPE)
    variants = config_help.variants_line(path)
    config = recipe.load_config(spec or path)
    epilog = (
      f"config fields of {spec or path} ({config.get('variant', 'default')}), set with "
      f"--config.FIELD=VALUE.\n{f'{variants}; ' if variants else ''}--config=RECIPE --help "
      "lists another recipe's values.\n\n"
      + config_help.listing(config, config_help.field_docs(path))
    )
  p = ArgumentParser(
    prog=prog("mert_jax.cli.train"),
    usage="%(prog)s --config=RECIPE --workdir=DIR [--config.FIELD=VALUE ...] [options]",
    description=__doc__,
    epilog=epilog,
  )
  p.add_argument("--config", metavar="RECIPE", help=CONFIG_HELP)
  p.add_argument(
    "--config.FIELD",
    metavar="VALUE",
    dest="_field",
    help="set a field of the recipe (listed below), typed by the field; repeatable",
  )
  p.add_argument(
    "--list-config",
    action="store_true",
    help="print every field of the recipe, with --config.FIELD overrides applied, and exit",
  )
  for option, metavar in _ABSL_OPTIONS.items():
    p.add_argument(option, metavar=metavar, help=flags.FLAGS[option[2:]].help)
  p.add_argument(
    "--verbosity",
    "-v",
    metavar="N",
    help="absl logging level: 0 info, 1 debug (unset: warnings only, as orbax is chatty); other "
    "absl flags (--log_dir, --logtostderr, ...) pass through too",
  )
  return p


# Why the --config overrides are parsed here and not by ml_collections.config_flags (which the
# anchors use), measured with ml_collections' DEFINE_config_file on configs/mert.py (2026-12-08):
# it cannot override a list field at all (mesh, rules, probe_lrs, model.conv_layers,
# objective.codebook_weights: "UnsupportedOperationError: Type <class 'list'> ... is not supported
# for overriding"), and a misspelt field ends in a Python traceback (an AttributeError whose
# message holds the "Did you mean"). Users need both to work: lists typed by the field, every
# mistake one `error:` line naming the closest field. The recipe itself is still a
# ml_collections ConfigDict loaded from its file (recipe.py), as config_flags would load it.
def split_overrides(argv: list[str]) -> tuple[list[tuple[str, str | None, bool]], list[str]]:
  """(the ``--config.FIELD`` overrides as (field, text or None when bare, negated), the other
  arguments). ``--config.FIELD VALUE`` takes the next argument unless it is an option."""
  overrides, rest = [], []
  i = 0
  while i < len(argv):
    m = _OVERRIDE.fullmatch(argv[i])
    i += 1
    if not m:
      rest.append(argv[i - 1])
      continue
    negated, field, text = bool(m.group(1)), m.group(2), m.group(3)
    if text is None and not negated and i < len(argv) and not _is_option(argv[i]):
      text, i = argv[i], i + 1
    overrides.append((field, text, negated))
  return overrides, rest


def _is_option(arg: str) -> bool:
  return arg.startswith("-") and not re.fullmatch(r"-[\d.]+(e-?\d+)?", arg)


def resolve(spec: str, overrides: list[tuple[str, str | None, bool]]) -> RunConfig:
  """The recipe ``spec`` with ``overrides`` applied, as the typed ``RunConfig`` the trainer runs,
  checked once, as far as possible without devices (run_config.py). Raises ValueError (one
  line)."""
  config = recipe.load_config(spec)
  for field, text, negated in overrides:
    node, leaf = recipe.lookup(config, field)
    if text is None:
      if not isinstance(node[leaf], bool):
        raise recipe.RecipeError(f"--{'no' * negated}config.{field} needs a value (FIELD=VALUE)")
      text = "false" if negated else "true"
    elif negated:
      raise recipe.RecipeError(f"--noconfig.{field} takes no value")
    recipe.apply_overrides(config, {field: text})
  return run_config.from_config_dict(config)


def run(argv: list[str] | None = None) -> int:
  """The ``mert-train`` command: parses the recipe and its overrides here (one ``error:`` line, exit
  status 1, before any device is touched or anything is written), then hands the remaining flags
  to absl and trains."""
  argv = sys.argv[1:] if argv is None else list(argv)
  overrides, rest = split_overrides(argv)
  try:
    if any(a in _HELP for a in rest):  # the help lists the fields of the --config given
      build_parser(option_value(rest, "--config")).parse_args(rest)  # prints the help, exits 0
    args, absl_args = build_parser(fields=False).parse_known_args(rest)
    if args.config is None and not args.list_config:
      raise recipe.RecipeError(f"--config is required ({CONFIG_HELP})")
    config = resolve(args.config or recipe.DEFAULT_RECIPE, overrides)
    if args.list_config:
      path, _ = recipe.split_spec(args.config or recipe.DEFAULT_RECIPE)
      listed = ml_collections.ConfigDict(config.recorded)
      print(config_help.listing(listed, config_help.field_docs(path)), end="")
      return 0
    if not args.workdir:
      raise recipe.RecipeError("--workdir is required (where checkpoints and metrics go)")
    storage.check_writable_folder(args.workdir, "--workdir")
    if config.data.dir:
      storage.check_bucket(config.data.dir, "--config.data.dir")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for option in (*_ABSL_OPTIONS, "--verbosity"):
    value = getattr(args, option[2:])
    if value is not None:
      absl_args.append(f"{option}={value}")
  app.run(functools.partial(_main, config), argv=[sys.argv[0], *absl_args], flags_parser=_absl)
  return 0


def _absl(argv: list[str]) -> list[str]:
  """absl's flag parsing, its errors as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def _main(config: RunConfig, argv: list[str]) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO; progress lines are printed
    orbax_logs.quiet_orbax_save_failures()  # a failed save is reported in one line instead
  timeouts = config.distributed
  try:
    distributed.initialize_distributed(
      _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, timeouts
    )
    fail_fast.start(timeouts.peer_timeout_s)
    train(config, _WORKDIR.value)
  except BaseException as e:  # pylint: disable=broad-except
    # Any error ends the process with one line and its own exit status, and every other process
    # of the job learns it within seconds (fail_fast.py). train() has closed the checkpoint
    # manager and released the workdir; after a failed read, orbax and tensorstore leave reads in
    # flight whose callbacks would print tracebacks while the interpreter shuts down, so the
    # process ends at once.
    if isinstance(e, SystemExit) and not e.code:
      raise
    fail_fast.fail(e, ONE_LINE_ERRORS)
  fail_fast.close()


if __name__ == "__main__":
  sys.exit(run())
