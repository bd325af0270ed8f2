"""Shared by the trainer tests: the tiny recipe with overrides, logged losses, the command line
run as a subprocess, and the parameters of a workdir's latest checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from configs import mert as mert_configs
from mert_jax import recipe

REPO_ROOT = recipe.REPO_ROOT


def tiny(data_dir: str, **over: Any) -> ml_collections.ConfigDict:
  """The tiny recipe on ``data_dir``: 3 steps, a log line every step, no evaluation, no periodic
  checkpoint; ``over`` sets dotted fields (``**{"model.dtype": "float32"}``)."""
  c = mert_configs.get_config("tiny")
  c.data.dir = data_dir
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 3, 1, 0, 1000
  c.data.shuffle_window = 16
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


def rows(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """Every line of WORKDIR/metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def losses(workdir: str | os.PathLike) -> dict[int, float]:
  """{step: training loss} of the logged rows."""
  return {r["step"]: r["loss"] for r in rows(workdir) if "loss" in r}


# What every command-line run of these tests shares (the tiny recipe, a log line per step).
CLI_FLAGS = (
  "--config=configs/mert.py:tiny",
  "--config.log_every=1",
  "--config.eval_every=0",
  "--config.data.shuffle_window=16",
)


def cli_args(workdir: str | os.PathLike, data_dir: str, *flags: str) -> list[str]:
  """The arguments of ``python -m mert_jax.cli.train`` for a tiny run in ``workdir``."""
  return [*CLI_FLAGS, f"--workdir={workdir}", f"--config.data.dir={data_dir}", *flags]


def run_cli(
  workdir: str | os.PathLike,
  data_dir: str,
  *flags: str,
  check: bool = True,
  prefix: tuple[str, ...] = ("-m", "mert_jax.cli.train"),
) -> subprocess.CompletedProcess:
  """Runs the trainer's command line in a subprocess (``prefix`` replaces ``-m mert_jax.cli.train``,
  e.g. with a wrapper script); ``check``: assert it exited 0."""
  cmd = [sys.executable, *prefix, *cli_args(workdir, data_dir, *flags)]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def final_params(workdir: str | os.PathLike) -> tuple[int, Any]:
  """(step, params) of the latest complete checkpoint of a training workdir."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = ocp.CheckpointManager(ckpt_dir).latest_step()
  restored = ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, str(step), "state"))
  return step, restored["params"]
