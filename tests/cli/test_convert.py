"""python -m mert_jax.cli.convert, in process: both directions (bit-identical parameters back),
a training workdir's chosen step and its model card's real numbers, --push-to-hub (a fake HfApi),
--help, and one clear error line for each bad input (plus one subprocess run proving the
``python -m`` path prints the same single line)."""

import argparse
import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from data_pipeline.manifest import load_manifest
from mert_jax.checkpointing import model_checkpoint
from mert_jax.cli import convert as convert_cli
from mert_jax.config import model_config
from mert_jax.hf import hub
from mert_jax.hf.convert import hf_config_dict, import_hf
from mert_jax.model.mert import count_params
from tests.cli.helpers import python_m_error_line

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)


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
  original, back = model_checkpoint.load_model(tiny_checkpoint), model_checkpoint.load_model(ckpt2)
  assert back.cfg == original.cfg
  assert_same_params(params_of(back), params_of(original))  # heads included


def test_export_a_training_workdir_step(trained_workdir, tmp_path, capsys) -> None:
  wd, trained = trained_workdir
  latest, first = model_checkpoint.load_model(wd), model_checkpoint.load_model(wd, step=1)
  assert_same_params(params_of(latest), [np.asarray(x) for x in jax.tree.leaves(trained)])
  assert any(not np.array_equal(a, b) for a, b in zip(params_of(first), params_of(latest)))
  hf = tmp_path / "hf"
  assert convert_cli.main(["jax-to-hf", f"--checkpoint={wd}", "--step=1", f"--output={hf}"]) == 0
  capsys.readouterr()
  assert_same_params(params_of(import_hf(hf)[0]), params_of(first))  # step 1, not the latest
  card = (hf / "README.md").read_text()  # the card describes step 1 too
  assert "| steps trained | 1 |" in card
  assert f"(step 1) | loss {logged_rows(wd)[1]['loss']:.4f}," in card


def logged_rows(workdir: str) -> dict[int, dict]:
  """metrics.jsonl's training rows by step."""
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  return {r["step"]: r for r in map(json.loads, lines) if "loss" in r}


def test_workdir_card_holds_the_real_numbers(trained_workdir, tmp_path, capsys) -> None:
  wd, _ = trained_workdir
  hf = tmp_path / "hf"
  assert convert_cli.main(["jax-to-hf", f"--checkpoint={wd}", f"--output={hf}"]) == 0
  assert "README.md" in capsys.readouterr().out
  card = (hf / "README.md").read_text()
  model = model_checkpoint.load_model(wd)
  last = logged_rows(wd)[2]
  manifest = load_manifest(json.load(open(os.path.join(wd, "config.json")))["data"]["dir"])
  accuracy = sum(last["accuracy"]) / len(last["accuracy"])
  for fact in (
    "library_name: transformers",
    f"backbone {count_params(model.backbone):,} (`model.safetensors`)",
    f"pretraining heads {count_params(model.heads):,}",
    "| sample rate | 24000 Hz, mono |",
    "| frame rate | 75 Hz",
    f"| teacher | {manifest['teacher']['name']}, {manifest['teacher']['features']} |",
    f"| codebooks | {manifest['num_codebooks']} x {manifest['codebook_size']} |",
    f"| data | {manifest['total_hours']:.2f} hours, {manifest['num_used_files']} files",
    "| steps trained | 2 |",
    f"(step 2) | loss {last['loss']:.4f}, loss_codes {last['loss_codes']:.4f}, "
    f"loss_cqt {last['loss_cqt']:.4f}, accuracy {accuracy:.4f} |",
    f'AutoModel.from_pretrained("{hf}")',
  ):
    assert fact in card, fact
  assert "unknown" not in card and "Probe scores" not in card  # no probe/results.json here


class FakeHfApi:
  def __init__(self):
    self.calls = []

  def create_repo(self, repo_id, **kw):
    self.calls.append(("create_repo", repo_id, kw))

  def upload_folder(self, **kw):
    card = open(os.path.join(kw["folder_path"], "README.md")).read()
    self.calls.append(("upload_folder", sorted(os.listdir(kw["folder_path"])), kw, card))
    return type("Commit", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/c0"})


def test_push_to_hub(tiny_checkpoint: str, tmp_path, monkeypatch, capsys) -> None:
  api = FakeHfApi()
  monkeypatch.setattr(hub, "make_api", lambda: api)
  hf = tmp_path / "hf"
  argv = ["jax-to-hf", f"--checkpoint={tiny_checkpoint}", f"--output={hf}"]
  argv += ["--push-to-hub=me/mert-tiny", "--private", "--commit-message=tiny run"]
  assert convert_cli.main(argv) == 0
  out = capsys.readouterr().out
  assert f"pushed {hf} to https://huggingface.co/me/mert-tiny/commit/c0" in out
  (_, repo, create_kw), (_, files, upload_kw, card) = api.calls
  assert repo == "me/mert-tiny" and create_kw["private"] and create_kw["exist_ok"]
  assert files == sorted(os.listdir(hf)) and "README.md" in files and len(files) == 6
  assert upload_kw["folder_path"] == str(hf) and upload_kw["commit_message"] == "tiny run"
  assert "# me/mert-tiny" in card and 'AutoModel.from_pretrained("me/mert-tiny")' in card


def test_missing_huggingface_hub_is_one_error_line(tiny_checkpoint, tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)
  argv = ["jax-to-hf", f"--checkpoint={tiny_checkpoint}", f"--output={tmp_path}/hf"]
  assert convert_cli.main([*argv, "--push-to-hub=me/mert-tiny"]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "needs huggingface_hub, installed with the torch extra" in err
  assert not (tmp_path / "hf").exists()  # refused before exporting


def test_hub_id_offline_is_one_error_line(offline_hub, tmp_path, capsys) -> None:
  argv = ["hf-to-jax", "--hf=m-a-p/MERT-v1-95M", f"--output={tmp_path}/ckpt"]
  assert convert_cli.main(argv) == 1
  err = capsys.readouterr().err
  assert err.startswith(
    "error: m-a-p/MERT-v1-95M: not a local folder, and the Hugging Face Hub cannot be reached "
    "(offline: HF_HUB_OFFLINE is set"
  )
  assert err.count("\n") == 1 and "or pass a local folder" in err
  assert not (tmp_path / "ckpt").exists()


def test_help_describes_every_option(capsys) -> None:
  parser = convert_cli.build_parser()
  (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
  texts = {}
  for name, sub in subparsers.choices.items():
    with pytest.raises(SystemExit) as exit_:
      convert_cli.main([name, "--help"])
    assert exit_.value.code == 0
    texts[name] = " ".join(capsys.readouterr().out.split())  # unwrapped
    for action in sub._actions:
      assert action.help, (name, action.option_strings)
      assert action.option_strings[-1] in texts[name]
  assert "init seed for heads absent from the folder (default: 0)" in texts["hf-to-jax"]
  assert "(default: 'Upload MERT model exported by mert_jax')" in texts["jax-to-hf"]
  with pytest.raises(SystemExit):
    convert_cli.main(["--help"])
  assert "--push-to-hub" in capsys.readouterr().out


def test_bad_paths_are_one_error_line(tiny_checkpoint: str, tmp_path, capsys) -> None:
  no_weights, taken = tmp_path / "no_weights", tmp_path / "taken"
  no_weights.mkdir()
  (no_weights / "config.json").write_text(json.dumps(hf_config_dict(model_config("tiny"))))
  taken.mkdir()
  (taken / "notes.txt").write_text("mine")
  ckpt, hf = f"--checkpoint={tiny_checkpoint}", f"--output={tmp_path}/hf"
  for argv, msg in [
    (
      ["jax-to-hf", f"--checkpoint={tmp_path}/nope", hf],
      "is not a model checkpoint written by mert_jax",
    ),
    (
      ["jax-to-hf", ckpt, "--step=3", hf],
      "--step applies to training workdirs",
    ),
    (
      ["hf-to-jax", f"--hf={tmp_path}/nope", f"--output={tmp_path}/ckpt"],
      "config.json not found; is this a Hugging Face model folder?",
    ),
    (
      ["hf-to-jax", f"--hf={no_weights}", f"--output={tmp_path}/ckpt"],
      f"{no_weights}: no model.safetensors, sharded safetensors index or pytorch_model.bin found",
    ),
    (
      ["jax-to-hf", ckpt, f"--output={taken}"],
      f"{taken} exists and is not empty; pass --overwrite to replace it",
    ),
    (
      ["jax-to-hf", ckpt, f"--output={taken}", "--overwrite"],
      "holds no config.json (not a model folder): refusing to replace it even with --overwrite",
    ),
    (
      ["hf-to-jax", f"--hf={no_weights}", f"--output={taken}"],
      f"{taken} exists and is not empty; pass --overwrite to replace it",
    ),
    (
      ["jax-to-hf", ckpt, hf, "--private"],
      "--private and --commit-message apply only with --push-to-hub",
    ),
    (
      ["jax-to-hf", ckpt, hf, "--push-to-hub=x"],
      "--push-to-hub=x: expected a Hub repository id such as owner/name",
    ),
  ]:
    assert convert_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and msg in err, err
  assert not (tmp_path / "hf").exists() and not (tmp_path / "ckpt").exists()
  assert os.listdir(taken) == ["notes.txt"]


@pytest.mark.multiprocess
def test_python_m_prints_one_line_and_no_traceback(tmp_path) -> None:
  line = python_m_error_line(
    "mert_jax.cli.convert",
    "jax-to-hf",
    f"--checkpoint={tmp_path}/nope",
    f"--output={tmp_path}/hf",
  )
  assert "is not a model checkpoint written by mert_jax" in line


def test_fairseq_checkpoint_imports_with_its_heads(tmp_path, capsys) -> None:
  """hf-to-jax --fairseq: every parameter of the file's model, heads included, and the label
  count stated; a file that would run code is one error line and writes nothing."""
  torch = pytest.importorskip("torch")
  from mert_jax.model.mert import create_model
  from tests.hf.fairseq_format import write_fairseq_checkpoint

  source = create_model(model_config("tiny", dtype="float32", hidden_size=48), seed=9)
  path = write_fairseq_checkpoint(tmp_path / "MERT-v1-tiny_fairseq.pt", source)
  out = tmp_path / "ckpt"
  assert convert_cli.main(["hf-to-jax", f"--fairseq={path}", f"--output={out}"]) == 0
  assert "8 codebooks x 1028 labels (1024 codes + 4 fairseq specials)" in capsys.readouterr().out
  for a, b in zip(params_of(model_checkpoint.load_model(out)), params_of(source)):
    np.testing.assert_array_equal(a, b)

  class RunsCode:
    def __reduce__(self):
      return (os.system, (f"touch {tmp_path / 'pwned'}",))

  evil = tmp_path / "evil_fairseq.pt"
  torch.save({"cfg": {"model": {}}, "model": {}, "extra_state": {"x": RunsCode()}}, evil)
  out2 = tmp_path / "ckpt2"
  assert convert_cli.main(["hf-to-jax", f"--fairseq={evil}", f"--output={out2}"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "system" in err[0]
  assert not (tmp_path / "pwned").exists() and not out2.exists()


@pytest.mark.multiprocess
def test_a_workdir_saved_on_8_devices_exports_on_1(trained_workdir, tmp_path) -> None:
  """A pod-trained workdir exports on a one-device host (here: saved with 8 fake CPU devices,
  exported by a process with one)."""
  import subprocess

  wd, params = trained_workdir
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  out = tmp_path / "hf"
  cmd = [sys.executable, "-m", "mert_jax.cli.convert", "jax-to-hf", f"--checkpoint={wd}"]
  proc = subprocess.run([*cmd, f"--output={out}"], capture_output=True, text=True, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  model, _ = import_hf(out)
  for a, b in zip(params_of(model), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_workdir_card_names_bestrq_targets(trained_workdir, tmp_path) -> None:
  """A run whose codes came from the step (objective.targets=bestrq) says so in the card's teacher
  line, with its CQT target, instead of the data's offline teacher."""
  wd = tmp_path / "wd"
  shutil.copytree(trained_workdir[0], wd)
  config = json.load(open(wd / "config.json"))
  config["objective"].update(
    targets="bestrq",
    bestrq_input="mel",
    bestrq_norm="corpus",
    bestrq_seed=3,
    cqt_target="log_standardised",
  )
  (wd / "config.json").write_text(json.dumps(config))
  hf = tmp_path / "hf"
  assert convert_cli.main(["jax-to-hf", f"--checkpoint={wd}", f"--output={hf}"]) == 0
  card = (hf / "README.md").read_text()
  want = (
    "| teacher | BEST-RQ (random-projection quantizer on mel, corpus statistics, seed 3); "
    "CQT target log_standardised |"
  )
  assert want in card, card
