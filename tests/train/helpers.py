"""Shared by the trainer tests: the tiny recipe with overrides, logged losses, the command line
run as a subprocess (or SIGKILLed after a checkpoint), the parameters of a workdir's latest
checkpoint, and a tiny run on a fake clock (what the console, TensorBoard and plot tests read)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
import pytest
from etils import epath

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
  """Every line of WORKDIR/metrics.jsonl (local or in a bucket)."""
  text = (epath.Path(workdir) / "metrics.jsonl").read_text()
  return [json.loads(line) for line in text.splitlines()]


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


# Runs the trainer's command line with checkpoints.save wrapped: once the checkpoint of step
# KILL_AFTER is complete the process SIGKILLs itself. Deterministic: the kill follows the save, not
# a timer. The loop calls checkpoints.save through the module, so the patch takes effect.
KILL_AFTER_SAVE = """
import os, signal, sys
from mert_jax.cli import train as cli
from mert_jax.train import checkpoints

kill_after, real_save = int(sys.argv[1]), checkpoints.save

def save_then_die(mngr, step, *args, **kwargs):
  real_save(mngr, step, *args, **kwargs)
  if step == kill_after:
    mngr.wait_until_finished()
    os.kill(os.getpid(), signal.SIGKILL)

checkpoints.save = save_then_die
cli.run(sys.argv[2:])
"""


def run_cli_killed_after_save(
  workdir: str | os.PathLike, data_dir: str, step: int, script_dir: str | os.PathLike, *flags: str
) -> subprocess.CompletedProcess:
  """``run_cli`` that SIGKILLs the trainer once its checkpoint of ``step`` is complete (the
  wrapper script is written into ``script_dir``); asserts that it died that way."""
  script = os.path.join(script_dir, "kill_after_save.py")
  with open(script, "w") as f:
    f.write(KILL_AFTER_SAVE)
  proc = run_cli(workdir, data_dir, *flags, check=False, prefix=(script, str(step)))
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  return proc


def final_params(workdir: str | os.PathLike) -> tuple[int, Any]:
  """(step, params) of the latest complete checkpoint of a training workdir (local or in a
  bucket)."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = ocp.CheckpointManager(ckpt_dir).latest_step()
  restored = ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, str(step), "state"))
  return step, restored["params"]


COMPILE_S, EVAL_S, SAVE_S = 1000.0, 500.0, 300.0  # what the fake clock charges for each
TICK_S = 1e-3  # each reading of the fake clock advances it this much


class FakeClock:
  """Seconds that advance by TICK_S per reading, plus whatever ``advance`` adds."""

  def __init__(self, start: float = 0.0):
    self.t = start

  def __call__(self) -> float:
    self.t += TICK_S
    return self.t

  def advance(self, seconds: float) -> None:
    self.t += seconds


def fake_clock_run(data_dir: str, workdir: str) -> tuple[str, dict[str, Any]]:
  """A 4-step tiny run in process (a row, an evaluation with its pictures and a checkpoint save
  every 2 steps) on a fake clock that the compile, each evaluation and each save advance by
  COMPILE_S, EVAL_S and SAVE_S (the saves write nothing): (printed text, train's result)."""
  import jax  # pylint: disable=g-import-not-at-top

  from mert_jax.train import checkpoints, evaluate  # pylint: disable=g-import-not-at-top
  from mert_jax.train.loop import train  # pylint: disable=g-import-not-at-top

  clock = FakeClock()
  mp = pytest.MonkeyPatch()
  real_compile, real_eval = jax.stages.Lowered.compile, evaluate.evaluate

  def charged(real, seconds):
    def call(*args, **kwargs):
      clock.advance(seconds)
      return real(*args, **kwargs)

    return call

  mp.setattr(jax.stages.Lowered, "compile", charged(real_compile, COMPILE_S))
  mp.setattr(evaluate, "evaluate", charged(real_eval, EVAL_S))
  # Charged, not written: orbax's save of the 8-device state takes seconds these tests need not pay.
  mp.setattr(checkpoints, "save", lambda *args, **kwargs: clock.advance(SAVE_S))
  out = io.StringIO()
  try:
    with contextlib.redirect_stdout(out):
      config = tiny(data_dir, total_steps=4, log_every=2, eval_every=2, checkpoint_every=2)
      result = train(config, workdir, clock=clock)
  finally:
    mp.undo()
  return out.getvalue(), result
