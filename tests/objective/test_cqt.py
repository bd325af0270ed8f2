"""CQT target (mert_jax/objective/cqt.py): ``exact`` against nnAudio CQT1992v2 with MERT's
settings (torch), ``fast`` against ``exact``, the spec's sanity values, the documented relation to
librosa.cqt, jit / vmap / batch sharding, and clear errors on bad input.

Errors are max|a - b| / max|b| per clip (b the reference), printed with ``pytest -s``.
"""

import warnings

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from data_pipeline.audio_format import HOP as HOP_SAMPLES
from data_pipeline.audio_format import SAMPLE_RATE
from mert_jax.objective import cqt as cqt_lib
from mert_jax.objective.cqt import cqt

SR, HOP, BINS, BPO, FMIN = SAMPLE_RATE, HOP_SAMPLES, 336, 48, 32.7
FREQS = FMIN * 2.0 ** (np.arange(BINS) / BPO)
# Bins for pure tones: lowest and highest octave included (bin 0 is 32.7 Hz, bin 335 4125.6 Hz).
TONE_BINS = (0, 20, 47, 48, 100, 150, 180, 230, 287, 300, 335)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def tones(bins, length: int, offset: float = 0.2) -> np.ndarray:
  """Sines of amplitude 0.5 at f_k * 2^(offset / 48) (a fraction of a bin above centre), (n, L)."""
  t = np.arange(length) / SR
  f = FREQS[list(bins)] * 2.0 ** (offset / BPO)
  return (0.5 * np.sin(2 * np.pi * f[:, None] * t[None] + 0.3)).astype(np.float32)


@pytest.fixture(scope="module")
def nnaudio_cqt():
  torch = pytest.importorskip("torch")
  features = pytest.importorskip("nnAudio.features")
  torch.set_num_threads(2)
  layer = features.CQT1992v2(**cqt_lib.nnaudio_cqt_kwargs(SR, HOP, FMIN, BINS, BPO))

  def run(audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
      return layer(torch.from_numpy(np.ascontiguousarray(audio))).numpy().transpose(0, 2, 1)

  return run


@pytest.fixture(scope="module")
def clips(music) -> np.ndarray:
  """Two 3 s excerpts of the real-music fixture, (2, 72000)."""
  assert len(music) >= 2 * 72000
  return np.stack([music[:72000], music[-72000:]])


@pytest.fixture(scope="module")
def exact_clips(clips) -> np.ndarray:
  return np.asarray(cqt(clips, method="exact"))


@pytest.mark.torch
@pytest.mark.parametrize("length", [72000, 60123])  # a multiple of the hop (225 hops) and not
def test_exact_matches_nnaudio_on_music(clips, nnaudio_cqt, length):
  audio = clips[:, :length]
  ref = nnaudio_cqt(audio)
  frames = length // HOP + 1
  for method in ("exact", "fast"):
    out = np.asarray(cqt(audio, method=method))
    assert out.shape == ref.shape == (2, frames, BINS), (method, out.shape, ref.shape)
    assert out.dtype == np.float32
    errs = [rel_err(out[i], ref[i]) for i in range(2)]
    print(f"\n{method} vs nnAudio CQT1992v2, music, L={length}: max|a-b|/max|b| = {errs}")
    assert max(errs) <= 1e-3, (method, errs)


@pytest.mark.torch
def test_exact_matches_nnaudio_on_tones(nnaudio_cqt):
  audio = tones(TONE_BINS, 60000)
  ref = nnaudio_cqt(audio)
  out = np.asarray(cqt(audio, method="exact"))
  assert out.shape == ref.shape
  errs = [rel_err(out[i], ref[i]) for i in range(len(TONE_BINS))]
  print(f"\nexact vs nnAudio, tones at bins {TONE_BINS}: max err {max(errs):.2e}")
  assert max(errs) <= 1e-3, errs
  mid = out.shape[1] // 2
  assert list(out[:, mid].argmax(-1)) == list(ref[:, mid].argmax(-1)) == list(TONE_BINS)


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_spec_sanity_values(method):
  """Spec §3.4: 440 Hz unit sine, L = 48,000."""
  x = np.sin(2 * np.pi * 440.0 * np.arange(48000) / SR).astype(np.float32)[None]
  c = np.asarray(cqt(x, method=method))[0]
  assert c.shape == (151, BINS)
  interior = c[60:90]
  np.testing.assert_allclose(interior[:, 180], 30.622, atol=2e-3)
  np.testing.assert_allclose(c[0, 180], 15.30, atol=0.01)
  np.testing.assert_allclose(interior[:, [179, 181]].mean(0), [15.26, 15.68], atol=0.01)
  np.testing.assert_allclose(interior[:, [176, 184]].mean(0), [0.05, 0.08], atol=0.01)
  assert np.all(interior.argmax(-1) == 180)


@pytest.mark.parametrize("length", [25230, 25600, 47999, 48000, 48001, 48319, 48320])
def test_frame_count_and_centring(length):
  """T = floor(L / hop) + 1 for lengths that are and are not multiples of the hop; an impulse at
  sample hop * t peaks at frame t in the top (shortest-kernel) bin."""
  t0 = (length // HOP) // 2
  x = np.zeros((1, length), np.float32)
  x[0, HOP * t0] = 1.0
  for method in ("exact", "fast"):
    c = np.asarray(cqt(x, method=method))
    assert c.shape == (1, length // HOP + 1, BINS)
    assert int(c[0, :, -1].argmax()) == t0


def test_fast_matches_exact_on_music(music, exact_clips, clips):
  full = music[None, :]  # the whole 8 s clip too
  e_full = np.asarray(cqt(full, method="exact"))
  f_full = np.asarray(cqt(full, method="fast"))
  f_clips = np.asarray(cqt(clips, method="fast"))
  errs = [rel_err(f_full[0], e_full[0])] + [rel_err(f_clips[i], exact_clips[i]) for i in range(2)]
  per_bin = max(
    float(np.max(np.abs(f - e).max(0) / e.max(0)))
    for f, e in [(f_full[0], e_full[0]), (f_clips[0], exact_clips[0]), (f_clips[1], exact_clips[1])]
  )
  print(
    f"\nfast vs exact on real music: max|a-b|/max|b| = {errs}; "
    f"worst bin (relative to that bin's max) {per_bin:.2e}"
  )
  assert max(errs) <= 1e-4, errs  # the issue asks for <= 1e-2; measured ~1e-6
  assert per_bin <= 1e-3, per_bin


def test_fast_tone_peak_bin_matches_exact():
  for offset in (0.0, 0.45):
    audio = tones(TONE_BINS, 50000, offset)
    e = np.asarray(cqt(audio, method="exact"))
    f = np.asarray(cqt(audio, method="fast"))
    for i, k in enumerate(TONE_BINS):
      assert np.array_equal(f[i, 3:-3].argmax(-1), e[i, 3:-3].argmax(-1)), (k, offset)
      assert int(e[i, e.shape[1] // 2].argmax()) == k
      assert rel_err(f[i], e[i]) <= 1e-4, (k, offset, rel_err(f[i], e[i]))


def test_relation_to_librosa(clips, exact_clips):
  """librosa.cqt is not equal (Q = 69.25 vs 68.75, multirate FFT filters with soxr resampling and
  sparsified kernels), but close: the same peak bin for tones, tone peaks sqrt(69.25/68.75) = 0.36 %
  higher (longer windows, larger sqrt(l_k)), and music within a few % of the exact CQT's maximum."""
  librosa = pytest.importorskip("librosa")
  audio = np.concatenate([clips, tones(TONE_BINS, clips.shape[1])])
  with warnings.catch_warnings():  # librosa: n_fft too large for the lowest octave
    warnings.simplefilter("ignore")
    lib = np.abs(
      librosa.cqt(
        audio,
        sr=SR,
        hop_length=HOP,
        fmin=FMIN,
        n_bins=BINS,
        bins_per_octave=BPO,
        scale=True,
        pad_mode="constant",
      )
    )
  lib = lib.transpose(0, 2, 1)
  ours = np.concatenate([exact_clips, np.asarray(cqt(audio[2:], method="exact"))])
  assert lib.shape == ours.shape
  music_errs = [rel_err(lib[i], ours[i]) for i in range(2)]
  band = [float(np.median(lib[i, 10:-10].sum(0) / ours[i, 10:-10].sum(0))) for i in range(2)]
  mid = ours.shape[1] // 2
  peak_ratio = lib[2:, mid].max(-1) / ours[2:, mid].max(-1)
  print(
    f"\nlibrosa vs exact: music max|a-b|/max|b| = {music_errs}, "
    f"median per-bin energy ratio {band}; "
    f"tone peak ratio {peak_ratio.min():.4f}..{peak_ratio.max():.4f}"
  )
  assert list(lib[2:, mid].argmax(-1)) == list(ours[2:, mid].argmax(-1)) == list(TONE_BINS)
  assert np.all((peak_ratio > 1.0) & (peak_ratio < 1.006)), peak_ratio
  assert max(music_errs) <= 3e-2, music_errs
  assert min(music_errs) >= 1e-4, music_errs  # they are not the same transform
  np.testing.assert_allclose(band, 1.0, atol=0.01)


def test_jit_and_vmap(clips):
  x = clips[:, :48000]
  eager = np.asarray(cqt(x))
  jitted = np.asarray(jax.jit(lambda a: cqt(a, method="fast"))(x))
  np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
  stacked = np.stack([x, x[::-1] * 0.5])  # (2, B, L): vmap over a leading axis
  mapped = np.asarray(jax.vmap(cqt)(stacked))
  np.testing.assert_allclose(mapped[0], eager, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mapped[1], np.asarray(cqt(x[::-1] * 0.5)), rtol=1e-5, atol=1e-5)
  ex = np.asarray(jax.jit(lambda a: cqt(a, method="exact"))(x[:1]))
  np.testing.assert_allclose(ex, np.asarray(cqt(x[:1], method="exact")), rtol=1e-6, atol=1e-6)


def test_no_gradient_flows(clips):
  g = jax.grad(lambda a: cqt(a).sum())(clips[:1, :30000])
  assert np.all(np.asarray(g) == 0)


def test_batch_sharding(music):
  assert jax.device_count() == 8, "tests/conftest.py sets 8 host devices"
  x = np.stack([music[i * 6000 : i * 6000 + 40000] * (1 + 0.1 * i) for i in range(8)])
  mesh = jax.make_mesh((8,), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  xs = jax.device_put(x, sharding)
  out = jax.jit(cqt)(xs)
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, P("data", None, None)), 3)
  ref = np.asarray(cqt(x))  # per-device batch 1 vs 8: summation order may differ
  assert max(rel_err(np.asarray(out)[i], ref[i]) for i in range(8)) <= 1e-5


def test_fast_falls_back_when_the_hop_does_not_allow_full_decimation(clips):
  """hop 300 = 4 * 75: octaves below the second are computed at rate sr / 4, still matching exact;
  an odd hop leaves no decimation at all (``fast`` is then ``exact``)."""
  x = clips[:1, :40000]
  plan = cqt_lib._plan(SR, 300, FMIN, BINS, BPO, "fast")
  assert [g.stage for g in plan.groups] == [2, 2, 2, 2, 2, 1, 0]
  e = np.asarray(cqt(x, hop_length=300, method="exact"))
  f = np.asarray(cqt(x, hop_length=300, method="fast"))
  assert f.shape == (1, 40000 // 300 + 1, BINS)
  assert rel_err(f[0], e[0]) <= 1e-4
  assert {g.stage for g in cqt_lib._plan(SR, 321, FMIN, BINS, BPO, "fast").groups} == {0}


def test_decimation_filter_and_margins():
  """Passband ripple, stopband attenuation from the new Nyquist, and the top bin's margin."""
  import scipy.signal

  fir = cqt_lib.decimation_filter()
  assert len(fir) % 2 == 1 and np.allclose(fir, fir[::-1])
  w, h = scipy.signal.freqz(fir, worN=1 << 15, fs=1.0)
  assert np.max(np.abs(np.abs(h[w <= cqt_lib.DECIMATION_PASSBAND]) - 1)) < 1e-6
  assert 20 * np.log10(np.max(np.abs(h[w >= 0.25]))) < -130
  lengths = cqt_lib.cqt_lengths(SR, FMIN, BINS, BPO)
  plan = cqt_lib._plan(SR, HOP, FMIN, BINS, BPO, "fast")
  assert [g.stage for g in plan.groups] == [6, 5, 4, 3, 2, 1, 0]
  for g in plan.groups[:-1]:  # edge of the top bin's main lobe, at the last halving's rate
    edge = (FREQS[g.hi - 1] + 2 * SR / lengths[g.hi - 1]) / (SR / 2 ** (g.stage - 1))
    assert edge < 0.089 < cqt_lib.DECIMATION_PASSBAND
  assert plan.groups[0].kernels.shape[0] == 790  # bin 0: 50,460 taps -> 789 at 1/64 rate


@pytest.mark.parametrize("n, width, stride", [(1000, 790, 5), (1000, 128, 32), (999, 7, 320)])
def test_strided_correlation_matches_numpy(n, width, stride):
  """The framing + matmul that every CQT filter runs through, against numpy's correlate."""
  rng = np.random.default_rng(n + width)
  x = rng.standard_normal((2, n)).astype(np.float32)
  k = rng.standard_normal((width, 3)).astype(np.float32)
  y = np.asarray(jax.jit(lambda a: cqt_lib._correlate(a, k, stride))(x))
  t = (n - width) // stride + 1
  want = np.stack(
    [[np.correlate(row, k[:, c], "valid")[::stride] for c in range(3)] for row in x]
  ).transpose(0, 2, 1)
  assert y.shape == want.shape == (2, t, 3)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-4)


def test_min_samples_boundary():
  assert cqt_lib.cqt_lengths(SR, FMIN, BINS, BPO)[0] == 50460
  assert cqt_lib._plan(SR, HOP, FMIN, BINS, BPO, "fast").min_samples == 25230
  assert cqt(np.zeros((1, 25230), np.float32)).shape == (1, 79, BINS)
  with pytest.raises(
    ValueError, match=r"25229 samples, shorter than the CQT kernel support.*25230"
  ):
    cqt(np.zeros((1, 25229), np.float32))


@pytest.mark.parametrize(
  "audio, kwargs, match",
  [
    (np.full((2, 30000), np.nan, np.float32), {}, "non-finite"),
    (
      np.pad(np.zeros((2, 29999), np.float32), ((0, 0), (0, 1)), constant_values=np.inf),
      {},
      r"non-finite.*row\(s\) \[0, 1\]",
    ),
    (np.zeros(30000, np.float32), {}, "2-D"),
    (np.zeros((1, 2, 30000), np.float32), {}, "2-D"),
    (np.zeros((2, 30000), np.int16), {}, "floating point"),
    (np.zeros((2, 30000), np.complex64), {}, "floating point"),
    (np.zeros((2, 1000), np.float32), {}, "shorter than the CQT kernel support"),
    (np.zeros((2, 30000), np.float32), {"n_bins": 420}, "Nyquist"),
    (np.zeros((2, 30000), np.float32), {"fmin": 12000.0, "n_bins": 1}, "Nyquist"),
    (np.zeros((2, 30000), np.float32), {"method": "fft"}, "unknown CQT method"),
    (np.zeros((2, 30000), np.float32), {"fmin": -1.0}, "fmin"),
    (np.zeros((2, 30000), np.float32), {"hop_length": 0}, "hop_length"),
  ],
)
def test_bad_input_raises(audio, kwargs, match):
  with pytest.raises(ValueError, match=match):
    cqt(audio, **kwargs)


def test_non_finite_check_on_device_arrays_and_its_limit_under_jit():
  x = np.zeros((1, 30000), np.float32)
  x[0, 100] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    cqt(jax.numpy.asarray(x))
  # Inside jit the values are not known: documented, the NaN propagates instead of raising.
  assert np.isnan(np.asarray(jax.jit(cqt)(x))).any()
