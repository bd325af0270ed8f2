"""Checkpoints: a run killed with SIGKILL resumes bit for bit from its last complete checkpoint,
a half-written checkpoint is never chosen, and what is read back is checked against fingerprints
taken at save (the workdir faults are in test_faults.py)."""

import json
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mert_jax.config import model_config
from mert_jax.model.mert import create_model
from mert_jax.train import checkpoints, fingerprint
from tests.train.helpers import final_params, losses, run_cli

# Runs the trainer's command line with checkpoints.save wrapped: once the checkpoint of step
# KILL_AFTER is on disk the process SIGKILLs itself. Deterministic: the kill follows the save, not
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


def test_fingerprints_ignore_sharding_and_see_every_change():
  x = jax.random.normal(jax.random.key(0), (64, 48))
  tree = {"w": x, "b": (jnp.arange(7), x[:3].astype(jnp.bfloat16)), "n": jnp.float32(1.0)}
  ref, finite = fingerprint.digest(tree)
  assert finite and sorted(ref) == ["b/0", "b/1", "n", "w"]
  mesh = jax.make_mesh((4, 2), ("a", "b"))
  sharded = {**tree, "w": jax.device_put(x, NamedSharding(mesh, P("a", "b")))}
  assert fingerprint.digest(sharded)[0] == ref  # another mesh, the same fingerprints
  flipped = np.array(x)
  flipped.view(np.uint32)[5, 7] ^= 1 << 3  # one bit
  swapped = np.array(x)
  swapped[[0, 1]] = swapped[[1, 0]]  # the same values, moved
  for changed in (flipped, swapped):
    got = fingerprint.digest({**tree, "w": jnp.asarray(changed)})[0]
    assert got["w"] != ref["w"] and {k: got[k] for k in got if k != "w"} == {
      k: ref[k] for k in ref if k != "w"
    }
  assert not fingerprint.digest({"n": jnp.array([1.0, jnp.inf])})[1]


def test_a_model_checkpoint_whose_parameters_changed_is_refused(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  checkpoints.save_model(a, create_model(model_config("tiny"), seed=3))
  checkpoints.save_model(b, create_model(model_config("tiny"), seed=4))
  assert checkpoints.load_model(a).cfg == model_config("tiny")  # verifies
  shutil.rmtree(a / checkpoints.PARAMS_DIR)  # whole, readable files of other values
  shutil.copytree(b / checkpoints.PARAMS_DIR, a / checkpoints.PARAMS_DIR)
  with pytest.raises(checkpoints.CorruptCheckpoint) as e:
    checkpoints.load_model(a)
  assert str(e.value).startswith(f"checkpoint {a} does not verify: params leaf ")
  assert "fingerprint 0x" in str(e.value) and "\n" not in str(e.value)
  # Older model checkpoints (no fingerprint file) still load.
  (b / checkpoints.PARAMS_FINGERPRINT).unlink()
  checkpoints.load_model(b)
  (a / checkpoints.PARAMS_FINGERPRINT).write_text(json.dumps({"fingerprints": {}}))
  with pytest.raises(checkpoints.CorruptCheckpoint, match="has no saved fingerprint"):
    checkpoints.load_model(a)
