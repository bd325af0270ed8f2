"""Acoustic teachers (data_pipeline/teachers/): token layout, determinism, alignment, save/load.

K-means runs at test size (4 codebooks x 32 codes) on the ~8 s real-music fixture. EnCodec runs as
an untrained 24 kHz model (``random_init``): no weights can be downloaded here, so these tests
check shapes, frame counts, windowing and determinism, not the quality of the codes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from data_pipeline.audio_format import HOP, SAMPLE_RATE
from data_pipeline.teachers.base import num_tokens
from data_pipeline.teachers.encodec import (
  EncodecTeacher,
  EncodecTeacherConfig,
  _torch_threads,
  resolve_device,
)
from data_pipeline.teachers.factory import load_or_make_teacher, load_teacher, make_teacher
from data_pipeline.teachers.kmeans import KMeansTeacher
from data_pipeline.teachers.kmeans_features import KMeansConfig, frame_features

SMALL = KMeansConfig(num_codebooks=4, codebook_size=32)
ONE_THREAD = EncodecTeacherConfig(num_threads=1)  # other test runs share the 2 cores


def check_tokens(codes: np.ndarray, k: int, size: int, length: int) -> None:
  assert codes.shape == (k, math.ceil(length / HOP))
  assert codes.dtype == np.int16
  if codes.size:
    assert codes.min() >= 0 and codes.max() < size


@pytest.fixture(scope="module")
def kmeans(music) -> KMeansTeacher:
  return KMeansTeacher.fit([music], config=SMALL, seed=0)


@pytest.fixture(scope="module")
def encodec() -> EncodecTeacher:
  return EncodecTeacher.random_init(0, config=ONE_THREAD)


def test_num_tokens():
  assert [num_tokens(n) for n in (0, 1, 319, 320, 321, 7999, 24000)] == [0, 1, 1, 1, 2, 25, 75]
  assert SAMPLE_RATE / HOP == 75.0


# ----------------------------------------------------------------------------------------------
# k-means
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 320 * 50, 320 * 50 + 1, 7999, None])
def test_kmeans_token_layout(kmeans, music, length):
  x = music if length is None else music[:length]
  check_tokens(kmeans.tokens(x), 4, 32, len(x))
  assert kmeans.label_rate == 75.0


def test_kmeans_uses_all_codes_on_music(kmeans, music):
  codes = kmeans.tokens(music)
  assert all(len(np.unique(row)) >= 24 for row in codes)  # 32 centroids fitted on these 600 frames


def test_kmeans_deterministic_in_seed(kmeans, music):
  again = KMeansTeacher.fit([music], config=SMALL, seed=0)
  np.testing.assert_array_equal(again.centroids, kmeans.centroids)
  np.testing.assert_array_equal(again.tokens(music), kmeans.tokens(music))
  assert again.config() == kmeans.config()
  other = KMeansTeacher.fit([music], config=SMALL, seed=1)
  assert other.centroids_sha256 != kmeans.centroids_sha256
  assert not np.array_equal(other.tokens(music), kmeans.tokens(music))


def test_kmeans_save_load_round_trip(kmeans, music, tmp_path):
  kmeans.save(tmp_path)
  meta = json.loads((tmp_path / "teacher.json").read_text())
  assert meta["name"] == "kmeans" and meta["num_codebooks"] == 4 and meta["codebook_size"] == 32
  assert meta["label_rate"] == 75.0 and len(meta["centroids_sha256"]) == 64
  loaded = load_teacher(tmp_path)
  assert isinstance(loaded, KMeansTeacher) and loaded.config() == kmeans.config()
  np.testing.assert_array_equal(loaded.tokens(music), kmeans.tokens(music))
  np.savez(
    tmp_path / meta["arrays"], mean=kmeans.mean, std=kmeans.std, centroids=kmeans.centroids + 1
  )
  with pytest.raises(ValueError, match="sha256"):
    load_teacher(tmp_path)


def test_features_match_librosa(music):
  """Frame t = Hann(1024) centred on sample 320 t + 160, zeros outside the clip."""
  librosa = pytest.importorskip("librosa")
  x = music[: 320 * 100 + 77]
  n = num_tokens(len(x))
  left = SMALL.n_fft // 2 - HOP // 2
  padded = np.pad(x, (left, n * HOP + SMALL.n_fft - HOP - left - len(x)))
  power = np.abs(librosa.stft(padded, n_fft=SMALL.n_fft, hop_length=HOP, center=False)) ** 2
  mel_db = librosa.power_to_db(
    librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=64, fmax=12000.0), top_db=None
  )
  ref = np.concatenate(
    [
      librosa.feature.mfcc(S=mel_db, n_mfcc=20),
      librosa.feature.chroma_stft(S=power, sr=SAMPLE_RATE, tuning=0.0),
    ]
  ).T
  ours = frame_features(x, SMALL)
  assert ours.shape == ref.shape == (n, 32)
  np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=1e-4)
  chunked = frame_features(x, dataclasses.replace(SMALL, feature_chunk_frames=7))
  np.testing.assert_allclose(chunked, ours, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("deltas", [False, True])
def test_kmeans_alignment_at_hop_boundary(kmeans, music, deltas):
  """A clip cut at sample 320 m has the whole file's tokens from m on, except at its edges.

  The margin is ceil(n_fft / 2 / hop) = ceil(512 / 320) = 2 frames per edge (frame t's window
  spans samples [320 t - 352, 320 t + 672)), plus 1 with deltas.
  """
  teacher = (
    kmeans
    if not deltas
    else KMeansTeacher.fit([music], config=dataclasses.replace(SMALL, deltas=True), seed=0)
  )
  margin = teacher.cfg.edge_margin
  assert margin == (3 if deltas else 2)
  whole = teacher.tokens(music)
  for m, end in [(150, 320 * 450), (211, 320 * 500 + 123)]:
    part = teacher.tokens(music[320 * m : end])
    ref = whole[:, m : m + part.shape[1]]
    differs = np.nonzero((part != ref).any(axis=0))[0]
    inner = differs[(differs >= margin) & (differs < part.shape[1] - margin)]
    assert inner.size == 0, f"frames {inner} differ away from the edges"


def test_kmeans_residual_error_decreases(kmeans, music):
  errs = kmeans.quantization_errors(music)
  assert errs.shape == (5,)
  np.testing.assert_allclose(errs[0], 1.0, rtol=1e-4)  # standardised on these very frames
  assert np.all(np.diff(errs) < 0), errs
  assert errs[-1] < 0.5 * errs[1]


def test_kmeans_needs_enough_frames(music):
  with pytest.raises(ValueError, match=r"only 20 feature frames to fit 32 centroids"):
    KMeansTeacher.fit([music[: HOP * 20]], config=SMALL, seed=0)
  with pytest.raises(ValueError, match="max_fit_frames"):
    KMeansTeacher.fit([music], config=dataclasses.replace(SMALL, max_fit_frames=16), seed=0)
  with pytest.raises(ValueError, match="must be fitted"):
    make_teacher("kmeans")


def test_kmeans_fit_subsample_bound(music):
  """max_fit_frames caps the frames k-means sees, whatever the stream length; make_teacher
  dispatches."""
  clips = [music[i * SAMPLE_RATE : (i + 1) * SAMPLE_RATE] for i in range(8)]
  cfg = dataclasses.replace(SMALL, num_codebooks=2, max_fit_frames=200)
  teacher = make_teacher("kmeans", audios=iter(clips), config=cfg, seed=3)
  assert teacher.fit_info["fit_frames"] == 200 and teacher.fit_info["frames_seen"] == 600
  check_tokens(teacher.tokens(music), 2, 32, len(music))


# ----------------------------------------------------------------------------------------------
# EnCodec (untrained)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 319, 320, 321, 320 * 75, 320 * 75 + 1, 7999])
def test_encodec_frame_counts(encodec, music, length):
  """transformers' EncodecModel.encode itself returns ceil(L / 320) frames (no pad/trim needed)."""
  raw = encodec._encode(music[:length])  # pylint: disable=protected-access
  assert raw.shape == (8, math.ceil(length / HOP))
  check_tokens(encodec.tokens(music[:length]), 8, 1024, length)


def test_encodec_teacher_layout(encodec, music):
  assert (encodec.num_codebooks, encodec.codebook_size, encodec.label_rate) == (8, 1024, 75.0)
  codes = encodec.tokens(music)
  check_tokens(codes, 8, 1024, len(music))
  assert all(len(np.unique(row)) > 50 for row in codes)  # random codebooks are not degenerate
  cfg = encodec.config()
  assert cfg["source"] == "random_init(0)" and cfg["bandwidth"] == 6.0
  check_tokens(encodec.tokens(music[:0]), 8, 1024, 0)


def test_encodec_deterministic(encodec, music):
  x = music[: 3 * SAMPLE_RATE]
  np.testing.assert_array_equal(encodec.tokens(x), encodec.tokens(x))
  np.testing.assert_array_equal(
    EncodecTeacher.random_init(0, config=ONE_THREAD).tokens(x), encodec.tokens(x)
  )
  assert (
    make_teacher("encodec", seed=1, config=ONE_THREAD).tokens(x) != encodec.tokens(x)
  ).mean() > 0.5


def test_encodec_windows_match_whole_file(encodec, music):
  """2 s windows with 1 s of left context reproduce whole-file codes (up to near-tie flips)."""
  windowed = EncodecTeacher(
    encodec.model,
    source=encodec.source,
    seed=0,
    config=dataclasses.replace(ONE_THREAD, window_seconds=2.0, context_seconds=1.0),
  )
  whole = encodec.tokens(music)
  parts = windowed.tokens(music)
  assert parts.shape == whole.shape
  assert (parts == whole).mean() > 0.97


def test_encodec_whole_mode_is_one_pass_of_the_model(encodec, music):
  """mode="whole" is transformers' EncodecModel.encode of the whole file, code for code (the
  reference's preprocessing); the windowed default (30 s windows here cover it all) too, up to
  the window size."""
  import torch

  whole = EncodecTeacher(
    encodec.model,
    source=encodec.source,
    seed=0,
    config=dataclasses.replace(ONE_THREAD, mode="whole"),
  )
  x = music[: 5 * SAMPLE_RATE + 123]
  with torch.inference_mode(), _torch_threads(1):  # the thread count moves near ties too
    ref = encodec.model.encode(torch.from_numpy(x)[None, None], bandwidth=6.0).audio_codes[0, 0]
  np.testing.assert_array_equal(whole.tokens(x), ref.numpy())
  np.testing.assert_array_equal(encodec.tokens(x), ref.numpy())  # one window: one pass
  check_tokens(whole.tokens(x[:0]), 8, 1024, 0)


def test_encodec_batched_windows_differ_from_single_ones_only_in_near_ties(encodec, music):
  """A file's equal-length windows are encoded batch_windows per call; the codes depend on the
  batch only through float rounding (near-tie flips), and are a function of the file alone."""
  cfg = dataclasses.replace(ONE_THREAD, window_seconds=1.0, context_seconds=0.5)
  batched = EncodecTeacher(encodec.model, source=encodec.source, seed=0, config=cfg)
  single = EncodecTeacher(
    encodec.model, source=encodec.source, seed=0, config=dataclasses.replace(cfg, batch_windows=1)
  )
  x = music[: 6 * SAMPLE_RATE]
  a, b = batched.tokens(x), single.tokens(x)
  np.testing.assert_array_equal(a, batched.tokens(x.copy()))
  assert a.shape == b.shape and (a == b).mean() > 0.95


def test_encodec_whole_mode_refuses_a_file_over_its_limit(encodec, music):
  cfg = dataclasses.replace(ONE_THREAD, mode="whole", whole_max_seconds=2.0)
  teacher = EncodecTeacher(encodec.model, source=encodec.source, seed=0, config=cfg)
  with pytest.raises(ValueError, match=r"^3 s of audio is over the EnCodec teacher's whole_max_"):
    teacher.tokens(music[: 3 * SAMPLE_RATE])


def test_encodec_device_choice(encodec):
  import torch

  assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
  assert resolve_device("cpu") == "cpu"
  if not torch.cuda.is_available():
    with pytest.raises(ValueError, match="torch sees no CUDA device here"):
      resolve_device("cuda:0")
  with pytest.raises(ValueError, match="EnCodec mode must be one of"):
    EncodecTeacher(
      encodec.model,
      source=encodec.source,
      config=dataclasses.replace(ONE_THREAD, mode="chunked"),
    )


def test_encodec_alignment_at_hop_boundary(encodec, music):
  """Cut at 320 m, the codes match the whole file's from m on once the encoder has warmed up."""
  whole = encodec.tokens(music)
  m = 150
  part = encodec.tokens(music[HOP * m :])
  assert part.shape == (8, whole.shape[1] - m)
  assert (part[:, 25:] == whole[:, m + 25 :]).mean() > 0.97


def test_encodec_save_load_round_trip(encodec, music, tmp_path):
  encodec.save(tmp_path)
  assert os.listdir(tmp_path) == ["teacher.json"]  # a reference, never weights
  loaded = load_teacher(tmp_path)
  assert isinstance(loaded, EncodecTeacher) and loaded.config() == encodec.config()
  x = music[: 2 * SAMPLE_RATE]
  np.testing.assert_array_equal(loaded.tokens(x), encodec.tokens(x))


def test_encodec_from_local_safetensors(encodec, music, tmp_path):
  weights = tmp_path / "encodec"
  encodec.model.save_pretrained(weights)  # safetensors, codebooks included
  teacher = make_teacher("encodec", source=str(weights), config=ONE_THREAD)
  assert (
    teacher.config()["source"] == str(weights) and len(teacher.config()["weights_sha256"]) == 64
  )
  x = music[: 2 * SAMPLE_RATE]
  np.testing.assert_array_equal(teacher.tokens(x), encodec.tokens(x))
  teacher.save(tmp_path / "teacher")
  np.testing.assert_array_equal(load_teacher(tmp_path / "teacher").tokens(x), encodec.tokens(x))
  assert (
    EncodecTeacher(weights, config=ONE_THREAD).config() == teacher.config()
  )  # a path also constructs


def test_encodec_refuses_pickled_weights(tmp_path):
  (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
  with pytest.raises(ValueError, match="will not unpickle"):
    EncodecTeacher.from_pretrained(str(tmp_path))
  with pytest.raises(ValueError, match="source="):
    make_teacher("encodec")
  with pytest.raises(ValueError, match="unknown teacher"):
    make_teacher("hubert")


# ----------------------------------------------------------------------------------------------
# load_or_make_teacher: the one construction path of prepare and tfds_builder
# ----------------------------------------------------------------------------------------------


def test_load_or_make_teacher_builds_once_then_loads(kmeans, music, tmp_path):
  directory = tmp_path / "teacher"
  made = load_or_make_teacher(directory, "kmeans", audios=iter([music]), config=SMALL, seed=0)
  assert sorted(os.listdir(tmp_path)) == ["teacher"]  # no temporary folder left
  assert made.config() == kmeans.config()

  def never():
    raise AssertionError("a saved teacher must not be fitted again")
    yield

  again = load_or_make_teacher(directory, "kmeans", audios=never(), config=SMALL, seed=0)
  assert isinstance(again, KMeansTeacher) and again.config() == kmeans.config()


def test_load_or_make_teacher_refuses_another_saved_teacher(kmeans, tmp_path):
  kmeans.save(tmp_path)
  with pytest.raises(
    ValueError, match="holds a saved 'kmeans' teacher, not the requested 'encodec'"
  ):
    load_or_make_teacher(tmp_path, "encodec", seed=0)
  with pytest.raises(ValueError, match=r"fitted with other settings \(4 x 32, asked for 4 x 64\)"):
    load_or_make_teacher(
      tmp_path, "kmeans", audios=(), config=dataclasses.replace(SMALL, codebook_size=64)
    )


def test_load_or_make_teacher_keeps_make_teachers_errors(tmp_path):
  with pytest.raises(ValueError, match="must be fitted"):
    load_or_make_teacher(tmp_path / "t", "kmeans")
  with pytest.raises(ValueError, match="unknown teacher"):
    load_or_make_teacher(tmp_path / "t", "hubert")
  assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# k-means with independent codebooks on separate features (KMeansConfig.codebook_features)
# ----------------------------------------------------------------------------------------------

MULTI = KMeansConfig(
  num_codebooks=4, codebook_size=32, codebook_features="mfcc,chroma,logmel,pitch"
)


@pytest.fixture(scope="module")
def multi(music) -> KMeansTeacher:
  return KMeansTeacher.fit([music], config=MULTI, seed=0)


def test_independent_codebooks_each_cluster_their_own_group(multi, music):
  """Codebook k's centroids live on its group's dimensions only, and its tokens are the nearest
  centroid there (restated in NumPy), whatever the other groups hold."""
  slices = MULTI.group_slices()
  assert [s.stop - s.start for s in slices.values()] == [20, 12, 64, 72]
  z = multi.standardized_features(music)
  codes = multi.tokens(music)
  for k, group in enumerate(MULTI.groups):
    dims = np.arange(slices[group].start, slices[group].stop)
    other = np.setdiff1d(np.arange(MULTI.feature_dim), dims)
    assert np.all(multi.centroids[k][:, other] == 0)
    c = multi.centroids[k][:, dims]
    dist = ((z[:, dims, None] - c.T[None]) ** 2).sum(axis=1)
    np.testing.assert_array_equal(codes[k], np.argmin(dist, axis=1))
    assert len(np.unique(codes[k])) >= 20


def test_independent_codebooks_deterministic_in_seed_and_saved(multi, music, tmp_path):
  again = KMeansTeacher.fit([music], config=MULTI, seed=0)
  np.testing.assert_array_equal(again.tokens(music), multi.tokens(music))
  other = KMeansTeacher.fit([music], config=MULTI, seed=1)
  assert other.centroids_sha256 != multi.centroids_sha256
  multi.save(tmp_path)
  loaded = load_teacher(tmp_path)
  np.testing.assert_array_equal(loaded.tokens(music), multi.tokens(music))
  assert "independent codebooks on mfcc, chroma, logmel, pitch" in loaded.config()["features"]


def test_pitch_group_peaks_at_the_sounding_semitone():
  """A 440 Hz tone (A4, 33 semitones above C2) is loudest in the pitch group's band 33; an octave
  higher, in band 45: the group tells octaves apart (chroma does not). (Below about 400 Hz the
  bands are coarser than a semitone: pitch_filterbank.)"""
  t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
  pitch = MULTI.group_slices()["pitch"]
  for f0, band in ((440.0, 33), (880.0, 45)):
    feats = frame_features(0.5 * np.sin(2 * np.pi * f0 * t).astype(np.float32), MULTI)
    assert int(np.argmax(feats[40, pitch])) == band


def test_a_bad_feature_list_is_one_line():
  with pytest.raises(ValueError, match=r"codebook_features='mfcc,tempo': give one of mfcc, chroma"):
    dataclasses.replace(SMALL, num_codebooks=2, codebook_features="mfcc,tempo").validate()
  with pytest.raises(ValueError, match=r"per codebook \(4\)"):
    dataclasses.replace(SMALL, codebook_features="mfcc,chroma").validate()
