"""Exports that drop into the MERT ecosystem: the published preprocessor_config.json (loaded by
transformers' feature extractors), the README.md model card, an export that is never half-written,
Hub ids for ``--hf`` (offline: one clear line) and the upload of a finished folder (a fake HfApi:
no network here)."""

import json
import os
import re

import fsspec
import numpy as np
import pytest
import yaml

from data_pipeline import manifest as manifest_lib
from mert_jax.config import model_config
from mert_jax.files import storage
from mert_jax.hf import convert, hub, model_card
from mert_jax.model.mert import abstract_model, count_params, create_model

EXPORT_FILES = {
  "config.json",
  "model.safetensors",
  "preprocessor_config.json",
  "README.md",
  "mert_heads.safetensors",
  "mert_jax_config.json",
}


@pytest.fixture(scope="module")
def tiny_model():
  return create_model(model_config("tiny", dtype="float32"), seed=3)


def front_matter(card: str) -> dict:
  m = re.match(r"---\n(.*?)\n---\n", card, re.S)
  assert m, card[:200]
  return yaml.safe_load(m.group(1))


def listing(path) -> dict[str, bytes]:
  return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def no_siblings(path) -> list[str]:
  """Leftovers of an export beside ``path`` (``.tmp``, ``.new``, ``.old``)."""
  parent, name = os.path.split(os.fspath(path))
  return [n for n in os.listdir(parent) if n != name and n.startswith(name + ".")]


# --------------------------------------------------------------------------- preprocessor + load


@pytest.mark.torch
def test_export_loads_with_feature_extractors_and_the_cards_snippet(tiny_model, music, tmp_path):
  pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from tests.hf.published_format import PUBLISHED_PREPROCESSOR

  out = tmp_path / "hf"
  convert.export_hf(tiny_model, out)
  assert set(os.listdir(out)) == EXPORT_FILES and not no_siblings(out)
  assert json.loads((out / "preprocessor_config.json").read_text()) == PUBLISHED_PREPROCESSOR
  clip = music[:36000]
  for cls in (transformers.AutoFeatureExtractor, transformers.Wav2Vec2FeatureExtractor):
    fe = cls.from_pretrained(out)
    assert type(fe).__name__ == "Wav2Vec2FeatureExtractor" and fe.sampling_rate == 24000
    values = fe(clip, sampling_rate=24000, return_tensors="np")["input_values"]
    np.testing.assert_allclose(values[0], clip, atol=1e-6)  # do_normalize: false
  # The card's usage snippet, run as written (with this folder and a real clip).
  card = (out / "README.md").read_text()
  code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
  assert "output_hidden_states=True" in code and "AutoModel" in code
  scope = {"audio": clip}
  exec(code.replace("path/to/this/folder", str(out)), scope)  # noqa: S102
  assert type(scope["model"]).__name__ == "HubertModel"
  hidden = scope["hidden"]
  assert len(hidden) == tiny_model.cfg.num_layers + 1
  frames = (clip.shape[0] - 400) // 320 + 1  # receptive field 400, stride 320
  assert hidden[-1].shape == (1, frames, tiny_model.cfg.hidden_size)


def test_preprocessor_sampling_rate_follows_the_model_config():
  cfg = model_config("tiny", sample_rate=16000)
  assert convert.preprocessor_config_dict(cfg)["sampling_rate"] == 16000


# --------------------------------------------------------------------------- model card


def card_info(**kw) -> model_card.CardInfo:
  base = dict(
    title="me/mert-tiny",
    load_id="me/mert-tiny",
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    ffn_size=64,
    layer_norm_first=False,
    conv_layers=7,
    backbone_params=39216,
    head_params=146896,
    sample_rate=24000,
    frame_stride=320,
    num_codebooks=8,
    codebook_size=64,
  )
  return model_card.CardInfo(**{**base, **kw})


def test_card_front_matter_and_unknowns() -> None:
  card = model_card.render(card_info())
  meta = front_matter(card)
  assert meta["library_name"] == "transformers"
  assert meta["tags"] == ["music", "audio", "mert", "hubert", "self-supervised"]
  assert "license" not in meta and "# license: TODO" in card  # left for the user
  for fact in ("39,216", "146,896", "24000 Hz", "75 Hz", "2 transformer layers (post-LN)"):
    assert fact in card, fact
  for row in ("teacher", "data", "steps trained", "last logged training metrics"):
    assert f"| {row} | unknown |" in card, row
  assert "Probe scores" not in card
  assert 'AutoModel.from_pretrained("me/mert-tiny")' in card
  assert "mert_heads.safetensors" in card and "mert_jax_config.json" in card


def test_card_gathers_a_workdirs_manifest_metrics_and_probe_scores(tmp_path) -> None:
  """A hand-made workdir: the card must hold its manifest's teacher and hours, the last training
  row at or before the exported step, and the probe table."""
  data = tmp_path / "data"
  data.mkdir()
  teacher = {"name": "kmeans", "num_codebooks": 8, "codebook_size": 64, "features": "mfcc20"}
  shard = {"path": "train-00000-of-00001.tfrecord", "num_records": 3, "num_samples": 24000 * 5400}
  shard |= {"min_record_samples": 1, "sha256": "0" * 64}
  m = manifest_lib.build_manifest(
    {"train": [shard]},
    {"train": 7},
    teacher,
    sample_rate=24000,
    hop=320,
    counts={"num_used_files": 7},
    options={},
  )
  manifest_lib.write_manifest(data, m)
  wd = tmp_path / "run"
  (wd / "checkpoints").mkdir(parents=True)
  (wd / "config.json").write_text(json.dumps({"data": {"dir": str(data)}}))
  rows = [
    {"step": 1, "loss": 9.0, "loss_codes": 8.0, "loss_cqt": 1.0, "accuracy": [0.1, 0.3]},
    {"step": 2, "loss": 7.25, "loss_codes": 6.5, "loss_cqt": 0.75, "accuracy": [0.2, 0.4]},
    {"step": 2, "eval_loss": 99.0},
    {"step": 3, "loss": 1.0, "loss_codes": 1.0, "loss_cqt": 0.0, "accuracy": [1.0, 1.0]},
  ]
  (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4')
  (wd / "probe").mkdir()
  probe = {"step": 2, "results": {"genre": {"accuracy": 0.625}, "key": 0.5}}
  (wd / "probe" / "results.json").write_text(json.dumps(probe))
  model = abstract_model(model_config("tiny", num_codebooks=8, codebook_size=64))
  info = model_card.gather(model, checkpoint=str(wd), step=2, load_id="me/run")
  assert info.steps == 2 and info.losses_step == 2
  assert info.losses == pytest.approx(
    {"loss": 7.25, "loss_codes": 6.5, "loss_cqt": 0.75, "accuracy": 0.3}
  )
  assert info.teacher.startswith("kmeans") and info.data_hours == pytest.approx(1.5)
  assert info.backbone_params == count_params(model.backbone)
  card = model_card.render(info)
  assert front_matter(card)["library_name"] == "transformers"
  for fact in ("kmeans, mfcc20", "| codebooks | 8 x 64 |", "1.50 hours, 7 files", "| 2 |"):
    assert fact in card, fact
  assert "loss 7.2500, loss_codes 6.5000, loss_cqt 0.7500, accuracy 0.3000" in card
  assert "| results / genre / accuracy | 0.6250 |" in card and "| results / key | 0.5000 |" in card
  # The data folder gone: teacher and data are "unknown", with the reason.
  os.remove(data / "manifest.json")
  card = model_card.render(model_card.gather(model, checkpoint=str(wd), step=2))
  assert "| teacher | unknown |" in card and "manifest could not be read" in card


# --------------------------------------------------------------------------- never half-written


def test_a_failed_export_leaves_nothing_that_looks_whole(tiny_model, tmp_path, monkeypatch):
  out = tmp_path / "hf"

  def broken(model):
    raise RuntimeError("disk full")

  monkeypatch.setattr(convert, "heads_to_state_dict", broken)  # after model.safetensors
  with pytest.raises(RuntimeError, match="disk full"):
    convert.export_hf(tiny_model, out)
  assert not out.exists() and not no_siblings(out)
  # An existing export being replaced stays whole and untouched when the new one fails.
  monkeypatch.undo()
  convert.export_hf(tiny_model, out)
  before = listing(out)
  monkeypatch.setattr(convert, "heads_to_state_dict", broken)
  with pytest.raises(RuntimeError, match="disk full"):
    convert.export_hf(tiny_model, out, overwrite=True)
  assert listing(out) == before and not no_siblings(out)


def test_output_folder_rules(tiny_model, tmp_path):
  out = tmp_path / "hf"
  out.mkdir()  # an existing empty folder is fine
  convert.export_hf(tiny_model, out, overwrite=False)
  assert set(os.listdir(out)) == EXPORT_FILES
  with pytest.raises(convert.OutputExistsError, match="not empty; pass --overwrite"):
    convert.export_hf(tiny_model, out, overwrite=False)
  (out / "stale.bin").write_bytes(b"old")
  convert.export_hf(tiny_model, out, overwrite=True)  # replaced whole: the stale file is gone
  assert set(os.listdir(out)) == EXPORT_FILES and not no_siblings(out)
  other = tmp_path / "notes"
  other.mkdir()
  (other / "todo.txt").write_text("mine")
  with pytest.raises(convert.OutputExistsError, match="not a model folder"):
    convert.export_hf(tiny_model, other, overwrite=True)
  assert os.listdir(other) == ["todo.txt"]


def test_an_export_into_a_bucket_is_built_locally_and_uploaded(tiny_model):
  """fsspec's memory:// stands in for gs:// (tests/test_bucket_end_to_end.py uses a GCS
  emulator): the same rules, config.json last, and a replaced folder loses its stale files."""
  out, fs = "memory://test_export/hf", fsspec.filesystem("memory")
  try:
    convert.export_hf(tiny_model, out, overwrite=False)
    assert set(storage.list_names(out)) == EXPORT_FILES
    with pytest.raises(convert.OutputExistsError, match="not empty; pass --overwrite"):
      convert.export_hf(tiny_model, out, overwrite=False)
    fs.pipe_file("/test_export/hf/stale.bin", b"old")
    convert.export_hf(tiny_model, out, overwrite=True)
    assert set(storage.list_names(out)) == EXPORT_FILES
    config = json.loads(fs.cat_file("/test_export/hf/config.json"))
    assert config == convert.hf_config_dict(tiny_model.cfg)
  finally:
    fs.rm("/test_export", recursive=True)


# --------------------------------------------------------------------------- Hub ids


def test_local_paths_are_returned_as_is(tmp_path):
  assert hub.resolve_hf_dir(str(tmp_path)) == str(tmp_path)
  assert hub.resolve_hf_dir(f"{tmp_path}/nope") == f"{tmp_path}/nope"  # not owner/name
  assert hub.resolve_hf_dir("gs://bucket/hf") == "gs://bucket/hf"
  with pytest.raises(ValueError, match="--revision=v1 applies to a Hub id"):
    hub.resolve_hf_dir(str(tmp_path), revision="v1")
  assert hub.looks_like_hub_id("m-a-p/MERT-v1-95M") and not hub.looks_like_hub_id("a/b/c")


def test_hub_ids_download_configs_and_weights_only(tmp_path, monkeypatch):
  huggingface_hub = pytest.importorskip("huggingface_hub")
  pytest.importorskip("huggingface_hub.constants")
  calls = []

  def fake_download(repo_id, **kw):
    calls.append((repo_id, kw))
    (tmp_path / "config.json").write_text("{}")
    return str(tmp_path)

  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
  assert hub.resolve_hf_dir("m-a-p/MERT-v1-95M", revision="abc") == str(tmp_path)
  ((repo_id, kw),) = calls
  assert repo_id == "m-a-p/MERT-v1-95M" and kw["revision"] == "abc"
  assert not kw["local_files_only"]
  patterns = kw["allow_patterns"]
  assert {"config.json", "preprocessor_config.json", "pytorch_model.bin"} <= set(patterns)
  assert {"model.safetensors", "mert_heads.safetensors", "mert_jax_config.json"} <= set(patterns)
  assert not any(p.endswith(".py") or p == "*" for p in patterns)  # never remote code

  def unreachable(repo_id, **kw):
    try:
      raise ConnectionError("Failed to resolve 'huggingface.co'")
    except ConnectionError as e:
      raise huggingface_hub.errors.LocalEntryNotFoundError("cannot find it\nmore") from e

  monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
  with pytest.raises(hub.HubError) as err:
    hub.resolve_hf_dir("m-a-p/MERT-v1-95M")
  msg = str(err.value)
  assert "\n" not in msg and "(offline: ConnectionError: Failed to resolve" in msg


def test_hub_id_offline_is_one_clear_error(offline_hub):
  with pytest.raises(hub.HubError) as err:
    hub.resolve_hf_dir("m-a-p/MERT-v1-95M")
  msg = str(err.value)
  assert msg.startswith(
    "m-a-p/MERT-v1-95M: not a local folder, and the Hugging Face Hub cannot be reached (offline: "
    "HF_HUB_OFFLINE is set"
  )
  assert "hf download m-a-p/MERT-v1-95M" in msg and "\n" not in msg
  assert isinstance(err.value, ValueError)  # callers' one-line reporting catches it


def test_missing_huggingface_hub_names_the_torch_extra(monkeypatch):
  import sys

  monkeypatch.setitem(sys.modules, "huggingface_hub", None)
  with pytest.raises(ImportError, match=r"torch extra \(pip install -e '\.\[torch\]'\)"):
    hub.resolve_hf_dir("m-a-p/MERT-v1-95M")
  with pytest.raises(ImportError, match="--push-to-hub needs huggingface_hub"):
    hub.make_api()


# --------------------------------------------------------------------------- push


class FakeHfApi:
  """Records the HfApi calls, and which files the folder held when it was uploaded."""

  def __init__(self, fail: Exception | None = None):
    self.calls, self.fail = [], fail

  def create_repo(self, repo_id, **kw):
    self.calls.append(("create_repo", repo_id, kw))

  def upload_folder(self, **kw):
    if self.fail:
      raise self.fail
    self.calls.append(("upload_folder", sorted(os.listdir(kw["folder_path"])), kw))
    return type("Commit", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/1"})


def test_push_folder_creates_the_repo_and_uploads(tiny_model, tmp_path):
  out = tmp_path / "hf"
  convert.export_hf(tiny_model, out)
  api = FakeHfApi()
  url = hub.push_folder(out, "me/mert-tiny", private=True, commit_message="first", api=api)
  assert url == "https://huggingface.co/me/mert-tiny/commit/1"
  (c1, repo, kw1), (c2, files, kw2) = api.calls
  assert (c1, repo, c2) == ("create_repo", "me/mert-tiny", "upload_folder")
  assert kw1 == {"repo_type": "model", "private": True, "exist_ok": True}
  assert files == sorted(EXPORT_FILES)
  assert kw2["repo_id"] == "me/mert-tiny" and kw2["folder_path"] == str(out)
  assert kw2["commit_message"] == "first" and kw2["repo_type"] == "model"
  with pytest.raises(hub.HubError, match="pushing .* failed .*401 Unauthorized.*export itself"):
    hub.push_folder(out, "me/mert-tiny", api=FakeHfApi(fail=OSError("401 Unauthorized\nbody")))
  with pytest.raises(ValueError, match="expected a Hub repository id"):
    hub.push_folder(out, "not a repo", api=FakeHfApi())
