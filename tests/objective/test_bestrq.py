"""BEST-RQ targets (mert_jax/objective/bestrq.py): deterministic given the seed, equal under jit to
a NumPy restatement of the published recipe (corpus and per-clip standardisation), aligned with
the model's frames, and informative on real music (many codes used)."""

import dataclasses

import jax
import numpy as np
import pytest

from mert_jax.config import MODEL_SIZES, ObjectiveConfig
from mert_jax.model.conv_extractor import num_frames, receptive_field
from mert_jax.objective import bestrq, target_stats_file

MCFG = MODEL_SIZES["tiny"].replace(codebook_size=64)
OCFG = ObjectiveConfig(targets="bestrq", bestrq_norm="clip")


def numpy_codes(
  audio: np.ndarray, seed: int, ocfg: ObjectiveConfig = OCFG, stats: dict | None = None
) -> np.ndarray:
  """The recipe restated in float64 NumPy: periodic-Hann windows centred on each model frame's
  receptive field +- hop / 2, power spectrum, librosa's mel filters, log, each dimension
  standardised over the clip's frames, Xavier-normal projection, nearest unit codebook vector."""
  stride, field = MCFG.frame_stride, receptive_field(MCFG.conv_layers)
  n_fft, stack = ocfg.bestrq_n_fft, ocfg.bestrq_stack
  hop = stride // stack
  t = num_frames(audio.shape[1], MCFG.conv_layers)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  rng = np.random.default_rng(seed)
  d_in = ocfg.bestrq_mels * stack
  proj = rng.normal(0, np.sqrt(2 / (d_in + ocfg.bestrq_dim)), (MCFG.num_codebooks, d_in, 16))
  books = rng.normal(0, 1, (MCFG.num_codebooks, MCFG.codebook_size, 16))
  books /= np.linalg.norm(books, axis=-1, keepdims=True)
  mel = bestrq.mel_filters(MCFG.sample_rate, n_fft, ocfg.bestrq_mels).astype(np.float64)
  out = np.zeros((audio.shape[0], t, MCFG.num_codebooks), np.int64)
  for b, clip in enumerate(audio.astype(np.float64)):
    feats = np.zeros((t, d_in))
    for i in range(t):
      frames = []
      for j in range(stack):
        centre = i * stride + field / 2 + (j - (stack - 1) / 2) * hop
        start = int(round(centre - n_fft / 2))
        seg = np.zeros(n_fft)
        lo, hi = max(start, 0), min(start + n_fft, len(clip))
        seg[lo - start : hi - start] = clip[lo:hi]
        power = np.abs(np.fft.rfft(seg * window)) ** 2
        frames.append(np.log(np.maximum(power @ mel, 1e-6)))
      feats[i] = np.concatenate(frames)
    if stats is None:  # bestrq_norm="clip"
      x = (feats - feats.mean(axis=0)) / np.maximum(feats.std(axis=0), 1e-5)
    else:  # "corpus": the mel bands' statistics, the same for each stacked window
      x = (feats - np.tile(stats["mel_mean"], stack)) / np.tile(stats["mel_std"], stack)
    for i in range(t):
      for k in range(MCFG.num_codebooks):
        z = x[i] @ proj[k]
        z /= max(np.linalg.norm(z), 1e-12)
        out[b, i, k] = np.argmax(books[k] @ z)
  return out


@pytest.fixture(scope="module")
def clips(music: np.ndarray) -> np.ndarray:
  return np.stack([music[:36000], music[48000:84000]]).astype(np.float32)


def test_codes_under_jit_equal_a_numpy_restatement(clips) -> None:
  got = np.asarray(jax.jit(lambda a: bestrq.codes(a, None, MCFG, OCFG))(clips))
  want = numpy_codes(clips, OCFG.bestrq_seed)
  assert got.shape == want.shape == (2, num_frames(36000, MCFG.conv_layers), 8)
  # float32 against float64: a near tie may flip; nothing else may differ
  assert np.mean(got == want) > 0.995, np.mean(got == want)


def test_corpus_standardised_codes_equal_the_numpy_restatement(clips, tmp_path) -> None:
  rng = np.random.RandomState(0)
  mel = np.asarray(bestrq.log_mel_frames(clips, MCFG, OCFG)).reshape(-1, 128)
  stats = {
    "cqt_mean": rng.randn(336),
    "cqt_std": rng.rand(336) + 0.5,
    "mel_mean": mel.mean(axis=0) + 0.1 * rng.randn(128),
    "mel_std": mel.std(axis=0) + 0.1,
  }
  path = str(tmp_path / "stats.npz")
  target_stats_file.save(path, stats)
  ocfg = dataclasses.replace(OCFG, bestrq_norm="corpus", target_stats=path)
  got = np.asarray(jax.jit(lambda a: bestrq.codes(a, None, MCFG, ocfg))(clips))
  want = numpy_codes(clips, OCFG.bestrq_seed, ocfg, target_stats_file.load(path))
  assert np.mean(got == want) > 0.995, np.mean(got == want)


def test_codes_are_deterministic_given_the_seed_and_change_with_it(clips) -> None:
  a = np.asarray(bestrq.codes(clips, None, MCFG, OCFG))
  b = np.asarray(bestrq.codes(clips, None, MCFG, OCFG))
  other = np.asarray(bestrq.codes(clips, None, MCFG, dataclasses.replace(OCFG, bestrq_seed=1)))
  np.testing.assert_array_equal(a, b)
  assert np.mean(a == other) < 0.2


def test_codes_on_real_music_use_many_codes(clips) -> None:
  codes = np.asarray(bestrq.codes(clips, None, MCFG, OCFG))
  for k in range(MCFG.num_codebooks):
    used, counts = np.unique(codes[..., k], return_counts=True)
    # 2 clips x 112 frames: a random quantizer spreads them over many of the 64 codes
    assert len(used) >= 30 and counts.max() / counts.sum() < 0.2, (k, len(used), counts.max())


def test_mel_windows_are_centred_on_the_model_frames() -> None:
  starts = bestrq.mel_frame_starts(10, MCFG, OCFG).reshape(10, OCFG.bestrq_stack)
  centres = (starts + OCFG.bestrq_n_fft / 2).mean(axis=1)
  want = np.arange(10) * MCFG.frame_stride + receptive_field(MCFG.conv_layers) / 2
  np.testing.assert_allclose(centres, want)


def test_cqt_input_reads_the_log_cqt(clips) -> None:
  from mert_jax.objective.targets import cqt_fn

  ocfg = dataclasses.replace(OCFG, bestrq_input="cqt")
  cqt = np.asarray(cqt_fn(MCFG, ocfg)(clips))
  got = np.asarray(bestrq.codes(clips, cqt, MCFG, ocfg))
  q = bestrq.quantizers(MCFG, ocfg)
  t = got.shape[1]
  x = np.log(np.maximum(cqt[:, :t].astype(np.float64), 1e-6))
  x = (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-5)
  z = np.einsum("btd,kde->btke", x, q.projections)
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  want = np.argmax(np.einsum("btke,kce->btkc", z, q.codebooks), axis=-1)
  assert np.mean(got == want) > 0.995


def test_quantizers_are_saved_with_the_run(tmp_path) -> None:
  q = bestrq.quantizers(MCFG, OCFG)
  bestrq.save(str(tmp_path / "bestrq.npz"), q)
  z = np.load(tmp_path / "bestrq.npz")
  np.testing.assert_array_equal(z["projections"], q.projections)
  np.testing.assert_array_equal(z["codebooks"], q.codebooks)
  assert q.projections.shape == (8, OCFG.bestrq_mels * OCFG.bestrq_stack, OCFG.bestrq_dim)
  np.testing.assert_allclose(np.linalg.norm(q.codebooks, axis=-1), 1.0, rtol=1e-6)
