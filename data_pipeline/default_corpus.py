"""The embedded default corpus: a few minutes of real music (Debian soundtrack packages, see
data_pipeline/example_audio.py) or, without them, synthesised music, prepared with a k-means teacher
whose codebooks match the model config. Used when ``config.data.dir`` is unset. In a bucket
(a ``gs://`` workdir) only the prepared data goes there; the music stays in a local folder."""

from __future__ import annotations

import hashlib
import os
import tempfile

import soundfile as sf

from data_pipeline import example_audio, prepare_jobs, prepare_local
from data_pipeline import manifest as manifest_lib
from data_pipeline.audio_format import SAMPLE_RATE
from mert_jax.files import storage


def corpus_dir(directory: str, num_codebooks: int, codebook_size: int) -> str:
  """Where ``ensure_default_corpus`` puts the prepared data for this teacher shape."""
  return os.path.join(directory, f"default_{num_codebooks}x{codebook_size}")


def _music_dir(directory: str) -> str:
  """The folder of the music to prepare: DIRECTORY/default_music, or for a remote ``directory`` a
  local folder named after it (the input is read locally)."""
  if not storage.is_remote(directory):
    return os.path.join(directory, "default_music")
  key = hashlib.sha1(directory.rstrip("/").encode()).hexdigest()[:16]
  return os.path.join(tempfile.gettempdir(), f"mert-default-music-{key}")


def _is_prepared(out: str, num_codebooks: int, codebook_size: int) -> bool:
  """Whether ``out`` holds a finished corpus for this teacher shape; refuses one for another."""
  try:
    m = manifest_lib.load_manifest(out)
  except FileNotFoundError:
    return False
  if (m["num_codebooks"], m["codebook_size"]) != (num_codebooks, codebook_size):
    raise ValueError(
      f"{out} holds a corpus prepared for a {m['num_codebooks']} x "
      f"{m['codebook_size']} teacher, not {num_codebooks} x {codebook_size}; "
      f"delete it to prepare it again"
    )
  return True


def ensure_default_corpus(
  directory: str, *, num_codebooks: int, codebook_size: int, minutes: float, seed: int = 0
) -> str:
  """Prepare (once) and return the data folder; reused when its manifest matches."""
  out = corpus_dir(directory, num_codebooks, codebook_size)
  if _is_prepared(out, num_codebooks, codebook_size):
    return out
  music = _music_dir(directory)
  os.makedirs(music, exist_ok=True)
  files = example_audio.real_music_files()
  if files:
    total = 0.0
    for i, path in enumerate(files):
      if total >= minutes * 60:
        break
      dest = os.path.join(music, f"{i:03d}_{os.path.basename(path)}")
      if not os.path.exists(dest):
        os.symlink(path, dest)
      total += sf.info(path).duration
  else:
    for i in range(max(1, int(minutes))):
      sf.write(
        os.path.join(music, f"synth_{i:03d}.wav"),
        example_audio.synth_music(60.0, seed=i),
        SAMPLE_RATE,
      )
  cfg = prepare_jobs.PrepareConfig(
    input=music,
    output=out,
    teacher="kmeans",
    seed=seed,
    segment_seconds=10.0,
    shard_seconds=60.0,
    valid_fraction=0.1,
    kmeans_codebooks=num_codebooks,
    kmeans_codebook_size=codebook_size,
    kmeans_max_fit_frames=max(20 * codebook_size, 5000),
  )
  prepare_local.prepare(cfg)
  return out
