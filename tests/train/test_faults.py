"""Nothing silently wrong: damaged checkpoints are refused by name and the run falls back to the
newest one that verifies; a failed save stops the run at the next step in one line; bad loop
fields, a finished run, a SIGTERM while compiling and a non-finite run each end in one plain line.

One tiny run (checkpoints 2 and 4) is shared by the module; each test damages its own copy."""

import errno
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from mert_jax import workdir_files
from mert_jax.checkpointing import errors, model_checkpoint, workdir_steps
from mert_jax.train import checkpoints, loop_config
from mert_jax.train import input as input_lib
from mert_jax.train import state as state_lib
from mert_jax.train.loop import train
from tests.train.helpers import REPO_ROOT, cli_args, losses, rows, tiny

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)

STATE_DATA = os.path.join("checkpoints", "4", "state", "ocdbt.process_0", "d")


@pytest.fixture(scope="module")
def base(data_dir, tmp_path_factory) -> str:
  """A clean 4-step run with checkpoints 2 and 4."""
  wd = str(tmp_path_factory.mktemp("faults") / "base")
  train(tiny(data_dir, total_steps=4, checkpoint_every=2), wd)
  assert workdir_steps.complete_steps(wd) == [2, 4]
  return wd


@pytest.fixture
def run(base, tmp_path) -> str:
  """This test's copy of the base run."""
  wd = str(tmp_path / "run")
  shutil.copytree(base, wd)
  return wd


@pytest.fixture(scope="module")
def setup(data_dir):
  return state_lib.build(tiny(data_dir))


def largest_state_file(wd: str) -> str:
  d = os.path.join(wd, STATE_DATA)
  return max((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize)


def flip_bytes(path: str, n: int = 16) -> None:
  """Flips ``n`` bytes near the start of a data file. (Probes found the latter part of orbax's
  ocdbt data files holding bytes that a restore never reads: flips there change nothing.)"""
  data = bytearray(open(path, "rb").read())
  for i in range(n):
    data[len(data) // 100 + 31 * i] ^= 0xFF
  open(path, "wb").write(bytes(data))


def restore(wd: str, setup, step: int | None = None):
  ckpts = checkpoints.RunCheckpoints(wd, keep_last=3)
  try:
    return ckpts.restore(setup.abstract_state, setup.state_shardings, step=step)
  finally:
    ckpts.abandon()


def test_flipped_bytes_are_refused_and_the_run_falls_back(base, run, data_dir, capsys):
  flip_bytes(largest_state_file(run))
  out = train(tiny(data_dir, total_steps=4, checkpoint_every=2), run)
  said = capsys.readouterr().out
  line = next(x for x in said.splitlines() if "does not verify" in x)
  assert line.startswith("checkpoint 4 does not verify (state leaf ")
  assert "resuming from checkpoint 2, the newest that verifies; set aside 4" in line
  assert os.path.isdir(os.path.join(run, workdir_files.SET_ASIDE, "4"))
  # Steps 3 and 4 again from checkpoint 2: bit for bit the clean run's, each logged once.
  a, b = losses(base), losses(run)
  assert [a[s] for s in (3, 4)] == [b[s] for s in (3, 4)]
  assert [r["step"] for r in rows(run)] == [1, 2, 3, 4]
  assert out["train_step_compiles"] == 1
  assert workdir_steps.complete_steps(run) == [2, 4]  # a new, verified checkpoint 4


@pytest.mark.parametrize(
  "damage,expect",
  [
    ("truncate_array", r"state leaf \S+ is unreadable \(ValueError: OUT_OF_RANGE"),
    ("delete_array", r"state leaf \S+ is unreadable \("),
    ("delete_metadata", r"state/ metadata is unreadable \(FileNotFoundError: .*_METADATA"),
    ("truncate_data_iter", r"data_iter/process_0-of-1.json is unreadable \(JSONDecodeError"),
    ("edit_data_iter", r"data_iter/process_0-of-1.json differs from what was saved"),
    # Whole, readable files holding other values (step 2's): only the fingerprints can tell.
    ("other_values", r"state leaf \S+: fingerprint 0x[0-9a-f]{8}, saved 0x[0-9a-f]{8} \(and "),
  ],
)
def test_damaged_checkpoint_is_named_in_one_line(run, setup, damage, expect):
  step4 = os.path.join(run, "checkpoints", "4")
  data_iter = os.path.join(step4, "data_iter", "process_0-of-1.json")
  if damage == "truncate_array":
    os.truncate(largest_state_file(run), 1000)
  elif damage == "delete_array":
    os.remove(largest_state_file(run))
  elif damage == "delete_metadata":
    os.remove(os.path.join(step4, "state", "_METADATA"))
  elif damage == "truncate_data_iter":
    os.truncate(data_iter, 100)
  elif damage == "other_values":
    shutil.rmtree(os.path.join(step4, "state"))
    shutil.copytree(os.path.join(run, "checkpoints", "2", "state"), os.path.join(step4, "state"))
  else:
    text = open(data_iter).read()
    open(data_iter, "w").write(text.replace('"window_index": 2', '"window_index": 3', 1))
  with pytest.raises(errors.CorruptCheckpoint) as e:
    restore(run, setup, step=4)  # asked for explicitly: refused, no fallback
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"checkpoint 4 ({step4}) does not verify: ")
  assert re.search(expect, msg), msg
  got = restore(run, setup)  # the newest that verifies
  assert got.step == 2 and got.verified
  assert got.note.startswith("checkpoint 4 does not verify (")


def test_a_checkpoint_from_before_fingerprints_restores_unverified(run, setup):
  meta = os.path.join(run, "checkpoints", "4", "meta", "metadata")
  open(meta, "w").write(json.dumps({"step": 4, "process_count": 1, "data_groups": 1}))
  got = restore(run, setup)
  assert got.step == 4 and not got.verified
  assert got.note == "checkpoint 4 predates checkpoint fingerprints: restored unverified"


def test_load_model_verifies_and_builds_the_checkpoints_own_model(run):
  """convert / extract / init_from read a workdir through load_model."""
  config = json.load(open(os.path.join(run, workdir_files.CONFIG)))
  hidden = config["model"]["hidden_size"]
  config["model"]["hidden_size"] = 2 * hidden  # config.json describes another model now
  open(os.path.join(run, workdir_files.CONFIG), "w").write(json.dumps(config))
  assert model_checkpoint.load_model(run).cfg.hidden_size == hidden  # checkpoint 4's own config
  step4 = os.path.join(run, "checkpoints", "4")
  shutil.rmtree(os.path.join(step4, "state"))
  shutil.copytree(os.path.join(run, "checkpoints", "2", "state"), os.path.join(step4, "state"))
  with pytest.raises(errors.CorruptCheckpoint) as e:
    model_checkpoint.load_model(run)
  assert str(e.value).startswith(f"checkpoint 4 ({step4}) does not verify: params leaf ")
  assert model_checkpoint.load_model(run, step=2).cfg.hidden_size == hidden


def test_restore_step_sets_newer_checkpoints_aside(run, setup, data_dir, capsys):
  with pytest.raises(errors.CheckpointError, match=r"restore_step=3: .* available: 2, 4$"):
    train(tiny(data_dir, total_steps=4, restore_step=3), run)
  out = train(tiny(data_dir, total_steps=2, restore_step=2), run)
  said = capsys.readouterr().out.splitlines()
  aside = os.path.join(run, workdir_files.SET_ASIDE)
  assert f"restore_step=2; resuming from checkpoint 2; set aside 4 in {aside}" in said
  assert "the run is already at step 2 (total_steps=2)" in said
  assert out["train_step_compiles"] == 0  # nothing compiled
  assert workdir_steps.complete_steps(run) == [2]
  assert os.listdir(aside) == ["4"]


def test_total_steps_at_the_restored_step_exits_at_once(run, data_dir, capsys):
  out = train(tiny(data_dir, total_steps=3), run)
  assert "the run is already at step 4 (total_steps=3)" in capsys.readouterr().out.splitlines()
  assert out["train_step_compiles"] == 0 and out["metrics"] == {}
  assert [r["step"] for r in rows(run)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
  "field,value",
  [
    ("checkpoint_every", 0),
    ("log_every", 0),
    ("eval_every", -1),
    ("preemption_check_every", 0),
    ("keep_last", 0),
    ("total_steps", -1),
  ],
)
def test_bad_loop_fields_are_refused_before_anything_runs(data_dir, tmp_path, field, value):
  with pytest.raises(loop_config.ConfigError, match=rf"^{field}={value}: must be an integer >="):
    train(tiny(data_dir, **{field: value}), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_sigterm_while_compiling_stops_before_the_first_step(run, data_dir, monkeypatch, capsys):
  """The bound: a SIGTERM during the compile is honoured as soon as the compile returns, before
  any step (nothing new to save)."""
  real_compile = jax.stages.Lowered.compile

  def compile_during_sigterm(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_compile(self, *args, **kwargs)

  monkeypatch.setattr(jax.stages.Lowered, "compile", compile_during_sigterm)
  previous = signal.getsignal(signal.SIGTERM)
  try:
    train(tiny(data_dir, total_steps=6, checkpoint_every=2), run)
  finally:
    signal.signal(signal.SIGTERM, previous)
  said = capsys.readouterr().out.splitlines()
  assert "SIGTERM before the first step: exiting at step 4, nothing to save" in said
  assert max(losses(run)) == 4 and workdir_steps.complete_steps(run) == [2, 4]


def test_nonfinite_guard_names_only_a_known_good_checkpoint(run, data_dir, monkeypatch):
  real = input_lib.global_batch

  def nan_audio(local, *layout):
    return real({**local, "audio": np.full_like(local["audio"], np.nan)}, *layout)

  monkeypatch.setattr(input_lib, "global_batch", nan_audio)
  with pytest.raises(RuntimeError) as e:
    train(tiny(data_dir, total_steps=6, max_nonfinite_steps=1), run)
  good = os.path.join(run, "checkpoints", "4")
  assert str(e.value) == (
    "1 consecutive non-finite steps at step 5: stopping; "
    f"checkpoint 4 ({good}) holds the last good parameters (verified)"
  )
  fresh = checkpoints.RunCheckpoints(os.path.join(run, "fresh"), keep_last=1)
  assert fresh.last_good_note().startswith("no checkpoint is known good")
  fresh.close()


# The command line with orbax's state writes failing (ENOSPC) in the save of step argv[1].
ENOSPC_AT_SAVE = """
import errno, sys
import orbax.checkpoint as ocp
from mert_jax.cli import train as cli

fail_step, real = sys.argv[1], ocp.handlers.StandardCheckpointHandler.async_save

class Full:
  def result(self, timeout=None):
    raise OSError(errno.ENOSPC, "No space left on device")

async def async_save(self, directory, *args, **kwargs):
  futures = await real(self, directory, *args, **kwargs)
  step = str(directory).split("/")[-2].split(".")[0]  # .../STEP.orbax-checkpoint-tmp/state
  return [Full(), *futures] if step == fail_step else futures

ocp.handlers.StandardCheckpointHandler.async_save = async_save
cli.run(sys.argv[2:])
"""


@pytest.mark.multiprocess
def test_failed_async_save_stops_at_the_next_step_in_one_line(run, data_dir, tmp_path):
  """keep_last=1: the failed save of 5 must not rotate away 4, the newest verified checkpoint."""
  script = tmp_path / "enospc.py"
  script.write_text(ENOSPC_AT_SAVE)
  flags = ("--config.total_steps=8", "--config.checkpoint_every=1", "--config.keep_last=1")
  proc = subprocess.run(
    [sys.executable, str(script), "5", *cli_args(run, data_dir, *flags)],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=REPO_ROOT,
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]  # no tracebacks, from any thread
  path = os.path.join(run, "checkpoints", "5")
  assert lines[0] == (
    f"error: checkpoint 5 ({path}) could not be written: OSError: [Errno {errno.ENOSPC}] "
    "No space left on device; stopping (the newest complete checkpoint is 4)"
  )
  assert max(losses(run)) in (5, 6)  # noticed at the first step after the failure, or its save
  assert 4 in workdir_steps.complete_steps(run)


@pytest.mark.parametrize("value", ["3", "2,x", "0,2", "4,2"])
def test_bad_profile_steps_are_refused_before_anything_runs(data_dir, tmp_path, value):
  with pytest.raises(loop_config.ConfigError, match=rf"^profile_steps='{value}': "):
    train(tiny(data_dir, profile_steps=value), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_profile_steps_trace_those_steps_into_the_workdir(data_dir, tmp_path, capsys):
  """--config.profile_steps=2,3: a jax.profiler trace (TensorBoard's profile tab) of steps 2-3 in
  WORKDIR/profile/process_0, announced in one line."""
  run = str(tmp_path / "run")
  train(tiny(data_dir, total_steps=4, profile_steps="2,3"), run)
  traces = glob.glob(os.path.join(run, "profile", "process_0", "**", "*.xplane.pb"), recursive=True)
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  assert f"profile of steps 2-3: {run}/profile" in capsys.readouterr().out


def test_profile_steps_on_a_resume_past_their_start_trace_the_rest(data_dir, tmp_path, capsys):
  """A run resumed at step 2 with profile_steps=2,3 (step 2 was traced, or not, by the run
  before): the trace covers the steps of the range still to run, from 3."""
  run = str(tmp_path / "run")
  train(tiny(data_dir, total_steps=2, checkpoint_every=2), run)
  train(tiny(data_dir, total_steps=4, checkpoint_every=2, profile_steps="2,3"), run)
  traces = glob.glob(os.path.join(run, "profile", "process_0", "**", "*.xplane.pb"), recursive=True)
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  assert f"profile of steps 3-3: {run}/profile" in capsys.readouterr().out
