"""The documented commands, run as a user runs them: convert both ways and extract features,
compared with transformers.HubertModel on the same decoded real-music file."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import HubertModel

from mert_jax.train import checkpoints
from data_pipeline.audio import load_audio
from mert_jax.config import model_config
from mert_jax.model.mert import create_model


def run(*args, ok=True):
  proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)
  if ok:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.fixture(scope="module")
def short_music_file(tmp_path_factory, music):
  """4 s of real music, written as FLAC at 44.1 kHz stereo (exercises decode, downmix, resample)."""
  import soxr
  path = tmp_path_factory.mktemp("audio") / "clip.flac"
  x = soxr.resample(music[:4 * 24000], 24000, 44100)
  sf.write(path, np.stack([x, 0.5 * x], axis=1), 44100)
  return str(path)


def test_convert_and_extract_roundtrip(tmp_path, short_music_file):
  cfg = model_config("tiny")
  ckpt, hf_dir, ckpt2 = tmp_path / "ckpt", tmp_path / "hf", tmp_path / "ckpt2"
  checkpoints.save_model(ckpt, create_model(cfg, seed=11))
  run("mert_jax.cli.convert", "jax-to-hf", f"--checkpoint={ckpt}", f"--output={hf_dir}")
  run("mert_jax.cli.convert", "hf-to-jax", f"--hf={hf_dir}", f"--output={ckpt2}")
  out1, out2, out3 = (tmp_path / f"f{i}.npy" for i in range(3))
  run("mert_jax.cli.extract", f"--checkpoint={ckpt}", f"--audio={short_music_file}", f"--output={out1}")
  run("mert_jax.cli.extract", f"--checkpoint={ckpt2}", f"--audio={short_music_file}", f"--output={out2}")
  run("mert_jax.cli.extract", f"--hf={hf_dir}", f"--audio={short_music_file}", f"--output={out3}")
  feats = np.load(out1)
  audio = load_audio(short_music_file, 24000)
  hf = HubertModel.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    ref = hf(torch.from_numpy(audio[None]), output_hidden_states=True).hidden_states
  ref = np.stack([h[0].numpy() for h in ref])
  assert feats.dtype == np.float32 and feats.shape == ref.shape == (cfg.num_layers + 1, 299, cfg.hidden_size)
  err = float(np.abs(feats - ref).max())
  print(f"extract vs HubertModel hidden_states: max-abs {err:.2e}")
  assert err < 1e-4
  np.testing.assert_array_equal(np.load(out2), feats)
  np.testing.assert_allclose(np.load(out3), feats, atol=1e-6)


def test_extract_bad_audio_messages(tmp_path):
  ckpt = tmp_path / "ckpt"
  checkpoints.save_model(ckpt, create_model(model_config("tiny")))
  nan_wav = tmp_path / "nan.wav"
  x = np.zeros(24000, np.float32)
  x[100] = np.nan
  sf.write(nan_wav, x, 24000, subtype="FLOAT")
  short_wav = tmp_path / "short.wav"
  sf.write(short_wav, np.zeros(200, np.float32), 24000)
  not_audio = tmp_path / "notes.txt"
  not_audio.write_text("hello")
  for path, msg in [(nan_wav, "NaN/inf"), (short_wav, "has 200 samples; the model needs at least 400"),
                    (not_audio, "cannot decode audio"), (tmp_path / "missing.wav", "no such audio file")]:
    proc = run("mert_jax.cli.extract", f"--checkpoint={ckpt}", f"--audio={path}", f"--output={tmp_path / 'o.npy'}", ok=False)
    assert proc.returncode != 0
    assert msg in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(path) in proc.stderr
  assert not (tmp_path / "o.npy").exists()


def test_convert_missing_checkpoint_message(tmp_path):
  proc = run("mert_jax.cli.convert", "jax-to-hf", f"--checkpoint={tmp_path}/nope", f"--output={tmp_path}/hf", ok=False)
  assert proc.returncode != 0 and "is not a model checkpoint written by mert_jax" in proc.stderr
  assert "Traceback" not in proc.stderr
