r"""Run a sweep of training runs and collect a summary table.

  python -m mert_jax.cli.sweep --sweep=configs/sweeps/model_size.py:tiny --workdir=runs/sweep \
      [--set=FIELD=VALUE ...]
  python -m mert_jax.cli.sweep --sweep=configs/sweeps/model_size.py:full --workdir=gs://B/sweep \
      --tpu --project=P --zone=Z --accelerator-type=v4-64 [--dry-run]

Locally the runs go one after another in this process, each in ``WORKDIR/<run>``; with ``--tpu``
each run is started on its own slice through ``launch_tpu.sh`` (named ``<prefix>-<run>``). At the
end (local runs) ``WORKDIR/summary.json`` and ``WORKDIR/summary.md`` list, per run: parameters,
final loss terms, clips/s, MFU (when known) and the final step; with ``--set=probe_every=N`` also
each run's last in-training probe scores per task and their mean, by which the runs are ranked.
A sweep is named FILE.py:NAME, or STEM:NAME for a file in configs/sweeps/ (model_size:tiny), found
from any directory. Every run's config is built and checked before the first run starts: a
misspelt --set field is one error line naming the closest field. The workdir may be in a bucket
(gs://BUCKET/PATH, the gcs extra); locally run, one that cannot be written is refused in one line
before the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

import ml_collections

from mert_jax import recipe
from mert_jax.config import ModelConfig
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_write_text
from mert_jax.model.mert import abstract_model, count_params
from mert_jax.terminal.cli_help import ArgumentParser, prog

RECIPE = recipe.DEFAULT_RECIPE  # each run's variant is a variant of this recipe file
LAUNCHER = os.path.join(recipe.REPO_ROOT, "launch_tpu.sh")


def load_sweep(spec: str) -> list[tuple[str, str, dict]]:
  """``FILE.py:NAME`` (or ``STEM:NAME`` of configs/sweeps/) -> [(run name, recipe variant,
  {field: value})]; without a name, the file's default sweep."""
  path, name = recipe.split_spec(spec, recipe.SWEEPS_DIR, default_file=None)
  module = recipe.load_module(path, "sweep_def")
  return module.get_sweep(name) if name else module.get_sweep()


def run_config(
  variant: str, overrides: dict[str, Any]
) -> tuple[ml_collections.ConfigDict, ModelConfig]:
  """The recipe variant's config with ``overrides`` applied (strings parsed by the field's type),
  and its validated ModelConfig."""
  config = recipe.load_config(f"{RECIPE}:{variant}")
  recipe.apply_overrides(config, overrides)
  return config, recipe.model_config_from(config)


def rank_by_probe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """With probe scores, the runs ranked by their mean (best first; ``probe_mean``), so a sweep is
  ordered by what the models learned; without, as they ran."""
  for r in rows:
    scores = [v for k, v in r.items() if k.startswith("probe_") and v is not None]
    if scores:
      r["probe_mean"] = float(sum(scores) / len(scores))
  if not any("probe_mean" in r for r in rows):
    return rows
  return sorted(rows, key=lambda r: -r.get("probe_mean", float("-inf")))


def summarise(rows: list[dict[str, Any]]) -> str:
  probes = sorted({k for r in rows for k in r if k.startswith("probe_") and k != "probe_mean"})
  probes += ["probe_mean"] if probes else []
  cols = ["run", "params", "step", "loss", "loss_codes", "loss_cqt", *probes, "clips_per_s", "mfu"]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    cells = []
    for c in cols:
      v = r.get(c)
      cells.append(
        ""
        if v is None
        else f"{v:,}"
        if isinstance(v, int)
        else f"{v:.4g}"
        if isinstance(v, float)
        else str(v)
      )
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
  """The command line."""
  p = ArgumentParser(prog=prog("mert_jax.cli.sweep"), description=__doc__)
  p.add_argument(
    "--sweep",
    required=True,
    metavar="FILE.py:NAME",
    help="the sweep: FILE.py:NAME, or STEM:NAME of configs/sweeps/ (model_size:tiny)",
  )
  p.add_argument(
    "--workdir", required=True, metavar="DIR", help="each run trains in DIR/RUN; summaries in DIR"
  )
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="a config field for every run, over the sweep's own (typed as --config.FIELD); repeatable",
  )
  p.add_argument("--tpu", action="store_true", help="one TPU slice per run through launch_tpu.sh")
  p.add_argument("--project", metavar="P", help="with --tpu: the Google Cloud project")
  p.add_argument("--zone", metavar="Z", help="with --tpu: the zone of the slices")
  p.add_argument(
    "--accelerator-type", default="v4-32", metavar="TYPE", help="with --tpu: each run's slice"
  )
  p.add_argument(
    "--prefix", default="mert", help="with --tpu: slices are named PREFIX-RUN (launch_tpu.sh)"
  )
  p.add_argument(
    "--dry-run", action="store_true", help="with --tpu: print the launch commands, run nothing"
  )
  return p


def main(argv: list[str] | None = None) -> int:
  """Runs the sweep; a bad sweep, --set or option is one ``error:`` line (exit status 1) before
  any run starts."""
  args = build_parser().parse_args(argv)
  try:  # every run's overrides are checked before the first run starts
    if args.tpu and not (args.project and args.zone):
      raise ValueError("--tpu needs --project and --zone")
    common = recipe.parse_assignments(args.set)
    runs = load_sweep(args.sweep)
    configs = [run_config(variant, {**overrides, **common}) for _, variant, overrides in runs]
    if not args.tpu:  # the slices write there themselves
      storage.check_writable_folder(args.workdir, "--workdir")
  except (ValueError, FileNotFoundError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  if args.tpu:
    for run, variant, overrides in runs:
      cmd = [
        LAUNCHER,
        f"--project={args.project}",
        f"--zone={args.zone}",
        f"--accelerator-type={args.accelerator_type}",
        f"--name={args.prefix}-{run}",
        f"--config={RECIPE}:{variant}",
        f"--workdir={args.workdir.rstrip('/')}/{run}",
        *[f"--config.{k}={v}" for k, v in {**overrides, **common}.items()],
      ]
      if args.dry_run:
        cmd.append("--dry-run")
      subprocess.run(cmd, check=True)
    return 0
  from mert_jax.train.loop import train  # pylint: disable=g-import-not-at-top

  rows = []
  for (run, variant, overrides), (config, mcfg) in zip(runs, configs):
    print(f"=== {run} ({variant}, {overrides})", flush=True)
    result = train(config, os.path.join(args.workdir, run))
    last = result["metrics"]
    params = count_params(abstract_model(mcfg))
    rows.append(
      {
        "run": run,
        "variant": variant,
        "params": params,
        **{
          k: last.get(k) for k in ("step", "loss", "loss_codes", "loss_cqt", "clips_per_s", "mfu")
        },
        # the in-training probe's last scores (config.probe_every): what each model learned
        **{f"probe_{k}": v for k, v in result.get("probe", {}).items() if "_" not in k},
      }
    )
  rows = rank_by_probe(rows)
  storage.makedirs(args.workdir)
  atomic_write_text(os.path.join(args.workdir, "summary.json"), json.dumps(rows, indent=2))
  table = summarise(rows)
  atomic_write_text(os.path.join(args.workdir, "summary.md"), table)
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
