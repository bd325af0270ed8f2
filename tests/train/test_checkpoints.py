"""Checkpoints: what is read back is checked against fingerprints taken at save (the workdir
faults are in test_faults.py; a run killed with SIGKILL resuming bit for bit from its last complete
checkpoint, never a half-written one, is tests/test_bucket_end_to_end.py's, in a bucket)."""

import json
import shutil

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mert_jax import workdir_files
from mert_jax.checkpointing import errors, fingerprint, model_checkpoint, workdir_steps
from mert_jax.config import model_config
from mert_jax.files import storage
from mert_jax.model.mert import create_model
from mert_jax.train import checkpoints


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
  model_checkpoint.save_model(a, create_model(model_config("tiny"), seed=3))
  model_checkpoint.save_model(b, create_model(model_config("tiny"), seed=4))
  assert model_checkpoint.load_model(a).cfg == model_config("tiny")  # verifies
  shutil.rmtree(a / model_checkpoint.PARAMS_DIR)  # whole, readable files of other values
  shutil.copytree(b / model_checkpoint.PARAMS_DIR, a / model_checkpoint.PARAMS_DIR)
  with pytest.raises(errors.CorruptCheckpoint) as e:
    model_checkpoint.load_model(a)
  assert str(e.value).startswith(f"checkpoint {a} does not verify: params leaf ")
  assert "fingerprint 0x" in str(e.value) and "\n" not in str(e.value)
  # Older model checkpoints (no fingerprint file) still load.
  (b / model_checkpoint.PARAMS_FINGERPRINT).unlink()
  model_checkpoint.load_model(b)
  (a / model_checkpoint.PARAMS_FINGERPRINT).write_text(json.dumps({"fingerprints": {}}))
  with pytest.raises(errors.CorruptCheckpoint, match="has no saved fingerprint"):
    model_checkpoint.load_model(a)


def test_checkpoints_are_set_aside_in_a_bucket(gcs):
  """No rename in a bucket: a checkpoint set aside is copied to checkpoints_set_aside, then
  deleted (orbax there marks a complete step with commit_success.txt)."""
  fs = fsspec.filesystem("gs")
  for step in (4, 8):
    for name in ("commit_success.txt", "state/x"):
      fs.pipe_file(f"{gcs.name}/run/checkpoints/{step}/{name}", b"1")
  ckpts = checkpoints.RunCheckpoints(gcs.path("run"), keep_last=None)
  try:
    ckpts._set_aside([8])
  finally:
    ckpts.abandon()
  assert workdir_steps.complete_steps(gcs.path("run")) == [4]
  aside = storage.files_under(gcs.path("run", workdir_files.SET_ASIDE))
  assert aside == ["8/commit_success.txt", "8/state/x"]
