"""Data and runs in a bucket, end to end, against a local GCS emulator (tests/gcs_emulator.py):
real music uploaded to gs://BUCKET/music is prepared into gs://BUCKET/data; the tiny recipe
trains with data.dir and the workdir in the bucket, the trainer is SIGKILLed right after a
checkpoint, and the same flags resume it (in this process): its losses and final parameters are
bit for bit an uninterrupted run's, and a half-written checkpoint (no commit_success.txt, what
orbax leaves in a bucket) is never chosen. The run is then plotted, exported to a Hugging Face
folder in the bucket, loaded back (also by transformers when installed) and used for feature
extraction.

This is the project's SIGKILL test (it was local: exact local resume stays covered in process by
tests/train/test_loop.py)."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import fsspec
import jax
import numpy as np
import pytest
from flax import nnx

from data_pipeline import prepare_local
from mert_jax import plot
from mert_jax.cli import convert as convert_cli
from mert_jax.cli import extract as extract_cli
from mert_jax.cli import train as train_cli
from mert_jax.files import storage
from mert_jax.hf.convert import import_hf
from mert_jax.train.loop import train
from tests.data_pipeline.fixtures import make_corpus, prepare_config
from tests.train.helpers import cli_args, final_params, losses, run_cli_killed_after_save

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)

STEPS, KILL_AFTER = 8, 4
FLAGS = (f"--config.total_steps={STEPS}", f"--config.checkpoint_every={KILL_AFTER}")


def _upload(local_root: str, remote_root: str) -> None:
  for rel in storage.files_under(local_root):
    storage.upload_file(os.path.join(local_root, rel), f"{remote_root}/{rel}")


def _train_as_the_command_line(workdir: str, data_dir: str) -> None:
  """train() in this process with the config the command line builds from the same flags."""
  overrides, rest = train_cli.split_overrides(cli_args(workdir, data_dir, *FLAGS))
  spec = next(a.split("=", 1)[1] for a in rest if a.startswith("--config="))
  train(train_cli.resolve(spec, overrides), workdir)


def _by_path(tree: Any) -> dict[str, np.ndarray]:
  """{"backbone/encoder/...": array} of a parameter tree (list indices and int keys as text)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  key = lambda k: str(getattr(k, "key", getattr(k, "idx", k)))
  return {"/".join(key(k) for k in path): np.asarray(x) for path, x in flat}


@pytest.mark.multiprocess
def test_prepare_train_kill_resume_export_in_a_bucket(gcs, tmp_path, capsys) -> None:
  music, data = gcs.path("music"), gcs.path("data")
  make_corpus(str(tmp_path / "music"))
  _upload(str(tmp_path / "music"), music)
  cfg = prepare_config(music, data, workers=1, kmeans_codebooks=8, kmeans_codebook_size=64)
  manifest = prepare_local.prepare(cfg, progress=False)
  assert manifest["num_used_files"] == 4 and storage.isfile(gcs.path("data", "manifest.json"))
  assert storage.isfile(gcs.path("data", "teacher", "teacher.json"))

  straight, killed = gcs.path("straight"), gcs.path("killed")
  _train_as_the_command_line(straight, data)
  run_cli_killed_after_save(killed, data, KILL_AFTER, tmp_path, *FLAGS)
  assert max(losses(killed)) == KILL_AFTER
  # What a crash during a later save leaves in a bucket must never be chosen for the resume.
  fsspec.filesystem("gs").pipe_file(f"{gcs.name}/killed/checkpoints/6/state/garbage", b"half")
  _train_as_the_command_line(killed, data)  # the same flags, in this process: resumes
  a, b = losses(straight), losses(killed)
  assert min(s for s in b if s > KILL_AFTER) == KILL_AFTER + 1
  assert [a[s] for s in range(KILL_AFTER + 1, STEPS + 1)] == [
    b[s] for s in range(KILL_AFTER + 1, STEPS + 1)
  ]  # bit for bit
  (sa, pa), (sb, pb) = final_params(straight), final_params(killed)
  assert sa == sb == STEPS
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  assert plot.main([killed]) == 0 and storage.isfile(gcs.path("killed", "curves.png"))
  hf = gcs.path("hf")
  assert convert_cli.main(["jax-to-hf", f"--checkpoint={killed}", f"--output={hf}"]) == 0
  with fsspec.open(f"{hf}/config.json") as f:
    assert json.load(f)["model_type"] == "hubert"
  model, heads = import_hf(hf)
  exported = _by_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  trained = _by_path(pb)
  assert heads and sorted(exported) == sorted(trained)
  for name, value in trained.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  if importlib.util.find_spec("transformers"):
    from transformers import AutoModel  # pylint: disable=g-import-not-at-top

    with storage.local_folder(hf) as local:
      assert AutoModel.from_pretrained(local).config.hidden_size == model.cfg.hidden_size
  feats = gcs.path("feats", "track3.npy")
  audio = f"--audio={music}/track3.wav"
  assert extract_cli.main([f"--hf={hf}", audio, f"--output={feats}"]) == 0
  with fsspec.open(feats, "rb") as f:
    assert np.load(f).shape[0] == model.cfg.num_layers + 1
  capsys.readouterr()
