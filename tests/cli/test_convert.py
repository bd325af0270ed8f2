"""python -m mert_jax.cli.convert, in process: both directions (bit-identical parameters back),
a training workdir's chosen step, and one clear error line for a bad path (plus one subprocess
run proving the ``python -m`` path prints the same single line)."""

import jax
import numpy as np
import pytest
from flax import nnx

from mert_jax.cli import convert as convert_cli
from mert_jax.hf.convert import import_hf
from mert_jax.train import checkpoints
from tests.cli.helpers import python_m_error_line


def params_of(model) -> list[np.ndarray]:
  """A model's parameters as NumPy arrays, in tree order."""
  return [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))]


def assert_same_params(a: list[np.ndarray], b: list[np.ndarray]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_round_trip_is_bit_identical(tiny_checkpoint: str, tmp_path, capsys) -> None:
  hf_dir, ckpt2 = tmp_path / "hf", tmp_path / "ckpt2"
  argv = ["jax-to-hf", f"--checkpoint={tiny_checkpoint}", f"--output={hf_dir}"]
  assert convert_cli.main(argv) == 0
  assert f"wrote {hf_dir}: config.json, model.safetensors" in capsys.readouterr().out
  assert convert_cli.main(["hf-to-jax", f"--hf={hf_dir}", f"--output={ckpt2}"]) == 0
  assert f"wrote {ckpt2} (heads from mert_heads.safetensors)" in capsys.readouterr().out
  original, back = checkpoints.load_model(tiny_checkpoint), checkpoints.load_model(ckpt2)
  assert back.cfg == original.cfg
  assert_same_params(params_of(back), params_of(original))  # heads included


def test_export_a_training_workdir_step(trained_workdir, tmp_path, capsys) -> None:
  wd, trained = trained_workdir
  latest, first = checkpoints.load_model(wd), checkpoints.load_model(wd, step=1)
  assert_same_params(params_of(latest), [np.asarray(x) for x in jax.tree.leaves(trained)])
  assert any(not np.array_equal(a, b) for a, b in zip(params_of(first), params_of(latest)))
  hf = tmp_path / "hf"
  assert convert_cli.main(["jax-to-hf", f"--checkpoint={wd}", "--step=1", f"--output={hf}"]) == 0
  capsys.readouterr()
  assert_same_params(params_of(import_hf(hf)[0]), params_of(first))  # step 1, not the latest


def test_bad_paths_are_one_error_line(tiny_checkpoint: str, tmp_path, capsys) -> None:
  for argv, msg in [
    (
      ["jax-to-hf", f"--checkpoint={tmp_path}/nope", f"--output={tmp_path}/hf"],
      "is not a model checkpoint written by mert_jax",
    ),
    (
      ["jax-to-hf", f"--checkpoint={tiny_checkpoint}", "--step=3", f"--output={tmp_path}/hf"],
      "--step applies to training workdirs",
    ),
    (
      ["hf-to-jax", f"--hf={tmp_path}/nope", f"--output={tmp_path}/ckpt"],
      "config.json not found; is this a Hugging Face model folder?",
    ),
  ]:
    assert convert_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and msg in err, err
  assert not (tmp_path / "hf").exists() and not (tmp_path / "ckpt").exists()


@pytest.mark.multiprocess
def test_python_m_prints_one_line_and_no_traceback(tmp_path) -> None:
  line = python_m_error_line(
    "mert_jax.cli.convert",
    "jax-to-hf",
    f"--checkpoint={tmp_path}/nope",
    f"--output={tmp_path}/hf",
  )
  assert "is not a model checkpoint written by mert_jax" in line
