"""Checkpoints: a run killed with SIGKILL resumes bit for bit from its last complete checkpoint,
and a half-written checkpoint is never chosen."""

import signal

import jax
import numpy as np
import pytest

from tests.train.helpers import final_params, losses, run_cli

# Runs the trainer's command line with checkpoints.save wrapped: once the checkpoint of step
# KILL_AFTER is on disk the process SIGKILLs itself. Deterministic: the kill follows the save, not
# a timer. The loop calls checkpoints.save through the module, so the patch takes effect.
KILL_AFTER_SAVE = """
import os, signal, sys
from absl import app
from mert_jax.cli import train as cli
from mert_jax.train import checkpoints

kill_after, real_save = int(sys.argv[1]), checkpoints.save

def save_then_die(mngr, step, *args, **kwargs):
  real_save(mngr, step, *args, **kwargs)
  if step == kill_after:
    mngr.wait_until_finished()
    os.kill(os.getpid(), signal.SIGKILL)

checkpoints.save = save_then_die
app.run(cli.main, argv=[sys.argv[0], *sys.argv[2:]])
"""


@pytest.mark.multiprocess
def test_exact_resume_after_sigkill(data_dir, tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  flags = ("--config.total_steps=8", "--config.checkpoint_every=4")
  run_cli(straight, data_dir, *flags)
  script = tmp_path / "kill_after_save.py"
  script.write_text(KILL_AFTER_SAVE)
  proc = run_cli(killed, data_dir, *flags, check=False, prefix=(str(script), "4"))
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert max(losses(killed)) == 4
  # What a crash during a later save leaves behind must never be chosen for the resume.
  partial = killed / "checkpoints" / "6.orbax-checkpoint-tmp-1234"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_text("half written")
  run_cli(killed, data_dir, *flags)  # same command: resumes
  assert min(s for s in losses(killed) if s > 4) == 5
  a, b = losses(straight), losses(killed)
  assert [a[s] for s in range(5, 9)] == [b[s] for s in range(5, 9)]  # bit for bit
  sa, pa = final_params(straight)
  sb, pb = final_params(killed)
  assert sa == sb == 8
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
