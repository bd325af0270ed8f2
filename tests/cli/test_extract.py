"""python -m mert_jax.cli.extract, in process: a decoded real-music file against
transformers.HubertModel, --hf against --checkpoint, a folder of files from a training workdir in
windows, skipped files, and one clear error line per bad input (plus one subprocess run proving the
``python -m`` path prints the same single line). The windowing itself is in
tests/model/test_features.py.
"""

import json

import numpy as np
import pytest
import soundfile as sf

from data_pipeline.audio import load_audio
from mert_jax.cli import convert as convert_cli
from mert_jax.cli import extract as extract_cli
from mert_jax.config import model_config
from mert_jax.model.conv_extractor import num_frames
from tests.cli.helpers import python_m_error_line


@pytest.fixture(scope="module")
def short_music_file(tmp_path_factory, music: np.ndarray) -> str:
  """4 s of real music, written as FLAC at 44.1 kHz stereo (exercises decode, downmix, resample)."""
  import soxr

  path = tmp_path_factory.mktemp("audio") / "clip.flac"
  x = soxr.resample(music[: 4 * 24000], 24000, 44100)
  sf.write(path, np.stack([x, 0.5 * x], axis=1), 44100)
  return str(path)


@pytest.fixture(scope="module")
def features(tiny_checkpoint: str, short_music_file: str, tmp_path_factory) -> np.ndarray:
  """extract --checkpoint of the short music file."""
  out = tmp_path_factory.mktemp("features") / "f.npy"
  argv = [f"--checkpoint={tiny_checkpoint}", f"--audio={short_music_file}", f"--output={out}"]
  assert extract_cli.main(argv) == 0
  return np.load(out)


@pytest.fixture(scope="module")
def hf_dir(tiny_checkpoint: str, tmp_path_factory) -> str:
  """The tiny checkpoint converted to a Hugging Face folder."""
  out = tmp_path_factory.mktemp("hf") / "hf"
  assert convert_cli.main(["jax-to-hf", f"--checkpoint={tiny_checkpoint}", f"--output={out}"]) == 0
  return str(out)


@pytest.mark.torch
def test_checkpoint_features_equal_hubert_model(
  features: np.ndarray, hf_dir: str, short_music_file: str
) -> None:
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = model_config("tiny")
  audio = load_audio(short_music_file, 24000)
  hf = transformers.HubertModel.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    ref = hf(torch.from_numpy(audio[None]), output_hidden_states=True).hidden_states
  ref = np.stack([h[0].numpy() for h in ref])
  assert features.dtype == np.float32
  assert features.shape == ref.shape == (cfg.num_layers + 1, 299, cfg.hidden_size)
  err = float(np.abs(features - ref).max())
  print(f"extract vs HubertModel hidden_states: max-abs {err:.2e}")
  assert err < 1e-4


def test_hf_folder_features_equal_checkpoint_features(
  features: np.ndarray, hf_dir: str, short_music_file: str, tmp_path, capsys
) -> None:
  out = tmp_path / "f.npy"
  capsys.readouterr()
  assert extract_cli.main([f"--hf={hf_dir}", f"--audio={short_music_file}", f"--output={out}"]) == 0
  wrote = f"wrote {out}: {features.shape} (layers, frames, hidden) float32"
  assert wrote in capsys.readouterr().out
  np.testing.assert_allclose(np.load(out), features, atol=1e-6)


def test_folder_of_a_training_workdir_in_windows(
  trained_workdir, music: np.ndarray, tmp_path, capsys
) -> None:
  """Every file gets the whole file's frame count; outputs mirror the folder."""
  wd, _ = trained_workdir
  audio_dir = tmp_path / "audio"
  (audio_dir / "sub").mkdir(parents=True)
  sf.write(audio_dir / "a.wav", music[: 5 * 24000], 24000)
  sf.write(audio_dir / "sub" / "b.flac", music[24000 : 3 * 24000 + 777], 24000)
  (audio_dir / "notes.txt").write_text("not audio: not an audio extension, so not visited")
  out = tmp_path / "feats"
  argv = [f"--checkpoint={wd}", f"--audio={audio_dir}", f"--output={out}", "--window-seconds=1.5"]
  assert extract_cli.main(argv) == 0
  layers = model_config("tiny").conv_layers
  assert np.load(out / "a.wav.npy").shape == (3, num_frames(5 * 24000, layers), 32)
  assert np.load(out / "sub" / "b.flac.npy").shape == (3, num_frames(2 * 24000 + 777, layers), 32)
  written = sorted(p.name for p in out.rglob("*") if p.is_file())
  assert written == ["a.wav.npy", "b.flac.npy", "extract.json", "skipped.jsonl"]
  assert (out / "skipped.jsonl").read_text() == ""
  assert json.loads((out / "extract.json").read_text())["model"]["step"] is not None
  assert "skipped" not in capsys.readouterr().err


def test_layers_pool_and_dtype(
  features: np.ndarray, tiny_checkpoint: str, short_music_file: str, tmp_path, capsys
) -> None:
  """--layers/--pool/--dtype select, average and store; windows batched through one program give
  the whole-file frame count; a bad --layers is one line."""
  base = [f"--checkpoint={tiny_checkpoint}", f"--audio={short_music_file}"]
  out = tmp_path / "pooled.npy"
  argv = [*base, f"--output={out}", "--layers=0,2", "--pool=mean", "--dtype=float16"]
  assert extract_cli.main(argv) == 0
  pooled = np.load(out)
  assert pooled.dtype == np.float16 and pooled.shape == (2, 32)
  np.testing.assert_allclose(pooled, features[[0, 2]].mean(axis=1), atol=2e-3)
  windowed = tmp_path / "windowed.npy"
  argv = [*base, f"--output={windowed}", "--window-seconds=1", "--batch=2", "--layers=2"]
  assert extract_cli.main(argv) == 0
  got = np.load(windowed)
  assert got.shape == (1, 299, 32)
  every = tmp_path / "every.npy"
  assert extract_cli.main([*base, f"--output={every}", "--window-seconds=1"]) == 0
  np.testing.assert_allclose(got[0], np.load(every)[2], atol=1e-6)  # the layer chosen in windows
  capsys.readouterr()
  assert extract_cli.main([*base, f"--output={out}", "--layers=1,7"]) == 1
  assert capsys.readouterr().err == (
    "error: --layers=1,7: comma-separated indices among 0..2 (0: the CNN projection, i: "
    "transformer layer i)\n"
  )


def test_folder_skips_bad_files_and_exits_3(
  tiny_checkpoint: str, music: np.ndarray, tmp_path, capsys
) -> None:
  audio_dir = tmp_path / "audio"
  audio_dir.mkdir()
  sf.write(audio_dir / "good.wav", music[:24000], 24000)
  sf.write(audio_dir / "short.wav", np.zeros(200, np.float32), 24000)
  out = tmp_path / "feats"
  argv = [f"--checkpoint={tiny_checkpoint}", f"--audio={audio_dir}", f"--output={out}"]
  assert extract_cli.main(argv) == 3
  err = capsys.readouterr().err
  assert f"skipped {audio_dir / 'short.wav'}" in err and "1 files could not be processed" in err
  assert (out / "good.wav.npy").exists() and not (out / "short.wav.npy").exists()


def test_bad_audio_is_one_error_line_naming_the_file(
  tiny_checkpoint: str, tmp_path, capsys
) -> None:
  nan_wav = tmp_path / "nan.wav"
  x = np.zeros(24000, np.float32)
  x[100] = np.nan
  sf.write(nan_wav, x, 24000, subtype="FLOAT")
  short_wav = tmp_path / "short.wav"
  sf.write(short_wav, np.zeros(200, np.float32), 24000)
  not_audio = tmp_path / "notes.txt"
  not_audio.write_text("hello")
  for path, msg in [
    (nan_wav, "NaN/inf"),
    (short_wav, "has 200 samples; the model needs at least 400"),
    (not_audio, "cannot decode audio"),
    (tmp_path / "missing.wav", "no such audio file"),
  ]:
    argv = [f"--checkpoint={tiny_checkpoint}", f"--audio={path}", f"--output={tmp_path / 'o.npy'}"]
    assert extract_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert msg in err and str(path) in err, err
  long_wav = tmp_path / "long.wav"  # 2 s against a limit of 1.2 s, extracted whole
  sf.write(long_wav, np.zeros(48000, np.float32), 24000)
  argv = [
    f"--checkpoint={tiny_checkpoint}",
    f"--audio={long_wav}",
    f"--output={tmp_path / 'o.npy'}",
  ]
  assert extract_cli.main([*argv, "--max-minutes=0.02"]) == 1
  err = capsys.readouterr().err
  assert err == (
    f"error: {long_wav}: 0.03 min of audio is more than --max-minutes=0.02; raise it (memory "
    "grows linearly with the length) or extract in windows (--window-seconds=30)\n"
  )
  assert extract_cli.main([*argv, "--max-minutes=0.02", "--window-seconds=1"]) == 0  # windows
  capsys.readouterr()
  assert extract_cli.main([*argv, "--max-minutes=0"]) == 1
  assert capsys.readouterr().err == "error: --max-minutes=0: must be > 0\n"
  (tmp_path / "o.npy").unlink()
  argv = [f"--checkpoint={tmp_path}/nope", f"--audio={nan_wav}", f"--output={tmp_path / 'o.npy'}"]
  assert extract_cli.main(argv) == 1
  assert "is not a model checkpoint written by mert_jax" in capsys.readouterr().err
  assert not (tmp_path / "o.npy").exists()


@pytest.mark.multiprocess
def test_python_m_prints_one_line_and_no_traceback(tiny_checkpoint: str, tmp_path) -> None:
  missing = tmp_path / "missing.wav"
  line = python_m_error_line(
    "mert_jax.cli.extract",
    f"--checkpoint={tiny_checkpoint}",
    f"--audio={missing}",
    f"--output={tmp_path / 'o.npy'}",
  )
  assert "no such audio file" in line and str(missing) in line
