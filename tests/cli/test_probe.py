"""python -m mert_jax.probe: a tiny model on the tiny note set, end to end, in process."""

from __future__ import annotations

import json
import os

import pytest

from mert_jax.cli import probe as probe_cli

QUICK = ["--set=tiny", "--max-epochs=3", "--learning-rates=0.01", "--task=pitch,instrument"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("probe_cache"))


def test_checkpoint_probed_against_random_weights_and_mfcc(trained_workdir, cache, tmp_path):
  out = tmp_path / "probe"
  argv = [f"--checkpoint={trained_workdir[0]}", f"--output={out}", f"--cache-dir={cache}", *QUICK]
  assert probe_cli.main(argv) == 0
  report = json.loads((out / "results.json").read_text())
  assert set(report["results"]) == {"model", "random init", "MFCC"}
  for task in ("pitch", "instrument"):
    model = report["results"]["model"][task]
    assert set(model["layers"]) == {"0", "1", "2"} and model["weighted"] is not None
    assert 0.0 <= model["best_layer_test"] <= 1.0 and model["best_layer"] in (0, 1, 2)
    assert len(model["runs"]["weighted"]["layer_weights"]) == 2
    assert list(report["results"]["MFCC"][task]["layers"]) == ["0"]
  assert report["results"]["model"]["instrument"]["chance"] == pytest.approx(1 / 3)
  assert report["sets"]["pitch"]["num_notes"] == 27
  assert len(report["sets"]["instrument"]["data_sha256"]) == 64
  table = (out / "results.md").read_text()
  assert "### pitch (accuracy, 13 classes" in table and "| random init |" in table
  assert os.path.getsize(out / "layers.png") > 1000


def test_same_seed_same_report(cache, tmp_path):
  reports = []
  for name in ("a", "b"):
    argv = ["--random-init=tiny", f"--output={tmp_path / name}", f"--cache-dir={cache}"]
    argv += ["--set=tiny", "--max-epochs=2", "--learning-rates=0.01", "--task=instrument"]
    assert probe_cli.main([*argv, "--baselines=random"]) == 0
    reports.append(json.loads((tmp_path / name / "results.json").read_text()))
  assert reports[0] == reports[1]
  assert set(reports[0]["results"]) == {"model", "random init"}


def test_an_unknown_baseline_is_one_line(cache, tmp_path, capsys):
  argv = ["--random-init=tiny", f"--output={tmp_path}", "--task=pitch", "--baselines=none,cqt"]
  assert probe_cli.main(argv) == 1
  assert capsys.readouterr().err == (
    "error: --baselines=none,cqt: unknown baseline 'cqt'; choose from random, mfcc, none\n"
  )


def test_an_unknown_task_is_one_line(cache, tmp_path, capsys):
  argv = [
    "--random-init=tiny",
    f"--output={tmp_path}",
    "--task=pitch,tempo",
    f"--cache-dir={cache}",
  ]
  assert probe_cli.main(argv) == 1
  err = capsys.readouterr().err
  assert err == (
    "error: --task=pitch,tempo: unknown task 'tempo'; choose from pitch, instrument, key, beat, "
    "custom\n"
  )


def test_key_task_on_the_chorales(cache, tmp_path):
  out = tmp_path / "key"
  argv = ["--random-init=tiny", f"--output={out}", f"--cache-dir={cache}", "--task=key"]
  assert probe_cli.main([*argv, "--set=tiny", "--max-epochs=2", "--learning-rates=0.01"]) == 0
  report = json.loads((out / "results.json").read_text())
  key = report["results"]["model"]["key"]
  assert key["metric"] == "MIREX weighted key score" and key["classes"] == 24
  assert report["sets"]["key"]["num_clips"] == 12 and 0.0 <= key["chance"] <= 1.0


def test_custom_task_on_a_folder_built_here(cache, tmp_path, capsys):
  from tests.probe.test_custom_set import ROWS, _folder

  rows = [*ROWS, ("e.wav", "calm", "train"), ("f.wav", "busy", "valid")]
  folder = _folder(tmp_path / "mine", rows)
  out = tmp_path / "custom"
  base = ["--random-init=tiny", f"--output={out}", f"--cache-dir={cache}", "--task=custom"]
  quick = ["--max-epochs=2", "--learning-rates=0.01", "--clip-seconds=0.5"]
  assert probe_cli.main([*base, *quick]) == 1
  assert (
    capsys.readouterr().err == "error: --task=custom needs --data=DIR (audio and labels.jsonl)\n"
  )
  assert probe_cli.main([*base, *quick, f"--data={folder}"]) == 0
  report = json.loads((out / "results.json").read_text())
  assert report["sets"]["custom"]["classes"] == ["busy", "calm"]
  assert set(report["results"]["model"]["custom"]["layers"]) == {"0", "1", "2"}


def test_beat_task_frame_level_end_to_end(cache, tmp_path):
  out = tmp_path / "beat"
  argv = ["--random-init=tiny", f"--output={out}", f"--cache-dir={cache}", "--task=beat"]
  argv += ["--set=tiny", "--max-epochs=2", "--learning-rates=0.01", "--dtype=float16"]
  assert probe_cli.main(argv) == 0
  report = json.loads((out / "results.json").read_text())
  beat = report["results"]["model"]["beat"]
  assert beat["metric"] == "beat F-measure (70 ms)" and beat["classes"] == 2
  assert beat["chance"] == 0.0  # the majority frame class is "no beat"
  assert set(beat["layers"]) == {"0", "1", "2"} and 0.0 <= beat["weighted"] <= 1.0
  assert list(report["results"]["MFCC"]["beat"]["layers"]) == ["0"]
  assert beat["seed"] == 0 and beat["data_sha256"] == report["sets"]["beat"]["data_sha256"]


def test_normalize_follows_the_hf_preprocessor_config(tmp_path):
  """--normalize=auto reads do_normalize from the --hf folder's preprocessor_config.json."""
  hf = tmp_path / "hf"
  hf.mkdir()
  args = probe_cli.build_parser().parse_args([f"--hf={hf}", "--task=pitch", f"--output={tmp_path}"])
  assert probe_cli._normalize(args) is False  # no preprocessor config
  (hf / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
  assert probe_cli._normalize(args) is True
  args.normalize = "off"
  assert probe_cli._normalize(args) is False


def test_normalized_clips_are_zero_mean_unit_variance(music):
  import numpy as np

  from mert_jax.probe import features

  clips = np.stack([0.1 * music[:24000], 3.0 * music[24000:48000] + 0.2])
  out = features.normalize_clips(clips)
  np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-3)
