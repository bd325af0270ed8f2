"""The CQT target (spec §3): nnAudio ``CQT1992v2`` magnitudes as a pure JAX function.

  cqt(audio (B, L) float) -> (B, T, n_bins) float32,   T = floor(L / hop) + 1

with nnAudio's settings for MERT: ``center=True`` with zero padding (frame t is centred on sample
hop * t), periodic Hann windows, L1-normalised kernels (``norm=1``, ``filter_scale=1``) and the
"librosa" output scaling by sqrt(l_k). Bin k has frequency f_k = fmin * 2^(k / bins_per_octave),
Q = 1 / (2^(1/bins_per_octave) - 1) (68.75 for 48 bins per octave) and a kernel of
l_k = ceil(Q * sr / f_k) taps (50,460 for bin 0 and 400 for bin 335 at the defaults):

  C[t, k] = sqrt(l_k) * | sum_n x[hop t + n] w_k[n - n0_k] exp(i 2 pi f_k n / sr) | / sum_j w_k[j],
  n = n0_k .. n0_k + l_k - 1,  n0_k = floor(-l_k / 2),  x = 0 outside [0, L).

A full-scale sine at a bin's centre frequency gives about 0.5 * sqrt(l_k).

Two methods, both fp32 strided correlations (frames gathered from the signal, then a matmul at
``Precision.HIGHEST``) with kernels built once per parameter set on the host in float64 and closed
over as constants:

* ``method="exact"`` is nnAudio's transform. nnAudio correlates the signal, padded by 32,768 zeros
  each side, with 336 kernels of 65,536 taps that are mostly zero. Here the bins are grouped per
  octave, and each group uses only the centred crop of its kernels that covers its longest
  kernel, with the signal padded by the crop's half-width. Only zero taps are dropped, so the
  result equals nnAudio's up to float32 rounding and summation order (measured on real music:
  max|a-b| / max|b| = 5e-6 to 9e-6 per clip; pure tones <= 1.1e-5). Cost: 2 * sum_k l_k = 7.0 M
  nonzero multiply-adds per frame, 9.6 M as computed (octave groups share their longest width),
  7.2 GFLOP per 5 s clip (nnAudio: 33.1).
* ``method="fast"`` (default) is multirate, as in librosa and Schoerkhuber & Klapuri (2010): the
  top octave at full rate, octave o (counted from the top) from the signal decimated by 2^o, so
  the lowest, o = 6, runs at 375 Hz with hop 320 / 64 = 5. Each halving is a zero-phase 67-tap
  Kaiser-window FIR (``scipy.signal.firwin``; passband edge 0.11 of the rate it runs at, ripple
  < 3e-7; stopband from 0.25, the new Nyquist frequency, attenuation > 138 dB, so nothing
  aliases) followed by keeping every second sample, computed in block (polyphase) form as a
  matmul. The FIR is centred, so decimated sample j stays at full-rate sample 2^o j and frame t
  stays centred on sample hop * t. The kernels at rate sr / 2^o are the full-rate kernels sampled
  at every 2^o-th tap (n = 2^o j, keeping the phase centre n = 0) times 2^o: they keep the
  full-rate window length, L1 normalisation and sqrt(l_k) of the full-rate kernel, so the
  magnitudes are those of ``exact``. The lowest bin's 50,460-tap kernel becomes 789 taps.
  Margins at the defaults: octave o's top bin, 4125.6 / 2^o Hz = 2^(47/48) times the octave's
  lowest, is at 0.086 of the rate sr / 2^(o-1) its last halving runs at (0.172 of its own rate,
  0.34 of its Nyquist frequency) and its Hann main lobe ends at 0.088; the passband edge is 0.11,
  about 19 main-lobe bin widths further, and the stopband starts at 0.25. Decimating one octave
  further would put the top bin at 0.69 of the Nyquist frequency (and leave the lowest octave
  with a hop of 2.5). The filtered signals are kept over their full support (the zero padding
  included), so edge frames match ``exact`` too. Measured against ``exact``: max|a-b| / max|b|
  <= 9e-7 per clip on real music (3.1e-6 for the worst bin relative to that bin's maximum),
  <= 1.7e-5 on white noise, clicks, a chirp and tones above the top bin. Cost: 0.57 M
  multiply-adds per frame, 0.43 GFLOP per 5 s clip (0.40 in the octave convolutions, 28 % of it
  zero taps, 0.03 in the halvings), 17x less than ``exact``. bf16 inputs to the octave
  convolutions (fp32 accumulation) measured 9e-4 of the maximum overall but 5.6 % in the quietest
  bins on CPU, so everything stays fp32.

  The decimation of an octave is limited by the hop (hop / 2^o must be an integer) and by the
  filter's passband (the group's top bin plus its main lobe must stay below 0.11 of the rate its
  last halving runs at). Where a parameter set does not allow the full octave-wise decimation,
  the affected octaves fall back to the largest decimation that does (``fast`` is then slower, not
  less accurate): hop 300 decimates by at most 4; with an odd hop ``fast`` is ``exact``.

Differences from ``librosa.cqt`` (spec §3.6). librosa (0.11) is multirate too, but (1) its filters
are longer: its Q comes from the relative bandwidth alpha = (2^(2/B) - 1) / (2^(2/B) + 1),
Q = filter_scale / alpha = 69.25 for B = 48, against nnAudio's 1 / (2^(1/B) - 1) = 68.75 (0.7 %
longer windows, so narrower bins and a sqrt(l_k) scale 0.36 % larger); (2) its lengths
Q sr / f_k are not rounded up (a Hann window of floor(l_k) samples); (3) it filters in the
frequency domain with FFT kernels sparsified by dropping 1 % of each kernel's L1 mass
(``sparsity=0.01``), resamples between octaves with soxr (``res_type="soxr_hq"``) and downsamples
early when the top octave is far below Nyquist. Both scale L1-normalised filters by sqrt(length)
(librosa's ``scale=True``, nnAudio's "librosa" normalisation) and zero-pad, so magnitudes are close
but not equal. Measured (tests/objective/test_cqt.py): a pure tone peaks in the same bin,
0.25-0.35 % higher in librosa; on real music max|librosa - exact| / max|exact| = 0.6-1.3 % per 3 s
clip, with the median per-bin energy ratio within 0.05 % of 1. Use nnAudio, not librosa, as the
reference.

Input checks raise ValueError: audio not 2-D (B, L), not floating point, shorter than the kernel
support, or holding NaN/inf; parameters whose top bin reaches the Nyquist frequency; an unknown
method. "Shorter than the kernel support" means L < ceil(l_0 / 2) = 25,230 samples (1.05 s) at the
defaults, l_0 being the longest (bin 0) kernel: below that no frame has even half of its lowest-bin
window on audio (frame 0's is half zero padding by design), and the low bins would be padding
artefacts. Shape, dtype, length and parameter checks are static and always run. The NaN/inf check
needs values: it runs when ``audio`` is a NumPy or concrete (fully addressable) JAX array, not
when ``cqt`` is traced inside ``jax.jit`` / ``vmap`` (check the host batch there, e.g. with
``mert_jax.model.mert.check_finite``; a NaN then propagates to the output).

``cqt`` runs under ``jax.jit``, ``jax.vmap`` (over extra leading axes; each call sees (B, L)) and
with the batch sharded over devices (per-row ops only); it applies ``stop_gradient`` (it is a fixed
target, gradients are zero).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

from data_pipeline.audio_format import HOP, SAMPLE_RATE

__all__ = ["cqt"]

METHODS = ("exact", "fast")

# Halving filter, as fractions of the rate it runs at (before taking every second sample).
DECIMATION_PASSBAND = 0.11  # kernels of decimated octaves must lie below this
DECIMATION_STOPBAND = 0.25  # = the new Nyquist frequency: nothing aliases
DECIMATION_ATTENUATION_DB = 140.0
HALVING_BLOCK = 16  # outputs per block of the polyphase (block) form of a halving


@dataclasses.dataclass(frozen=True, eq=False)
class _Group:
  """Bins [lo, hi) computed from the signal decimated by 2^stage with one strided correlation.

  ``kernels`` (2 * half, 2 * (hi - lo)) float32: row m is tap
  n = 2^stage (m - half) of the full-rate kernels; output channels are the real parts then the
  negated imaginary parts, scaled by sqrt(l_k) (and 2^stage)."""

  lo: int
  hi: int
  stage: int
  half: int
  kernels: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
  """Everything ``cqt`` needs for one parameter set; hashed by identity (one per lru_cache
  entry)."""

  hop_length: int
  n_bins: int
  groups: tuple[_Group, ...]
  decimation_filter: np.ndarray  # (taps,) float64, symmetric, DC gain 1
  halving: np.ndarray  # its block form, (K, 2 p, p) float32, see ``halving_blocks``
  longest_kernel: int  # l_0, taps of bin 0's full-rate kernel
  min_samples: int


def cqt_frequencies(fmin: float, n_bins: int, bins_per_octave: int) -> np.ndarray:
  """Centre frequencies f_k = fmin * 2^(k / bins_per_octave) in Hz, (n_bins,) float64."""
  return fmin * 2.0 ** (np.arange(n_bins) / float(bins_per_octave))


def cqt_lengths(sample_rate: int, fmin: float, n_bins: int, bins_per_octave: int) -> np.ndarray:
  """Kernel lengths l_k = ceil(Q sr / f_k) in samples, Q = 1 / (2^(1/B) - 1); (n_bins,) int64."""
  q = 1.0 / (2.0 ** (1.0 / bins_per_octave) - 1.0)
  return np.ceil(q * sample_rate / cqt_frequencies(fmin, n_bins, bins_per_octave)).astype(np.int64)


def bin_kernel(freq: float, length: int, sample_rate: int) -> tuple[int, np.ndarray]:
  """One full-rate kernel as nnAudio builds it: (n0, taps (length,) complex128) for n = n0 + j.

  taps = hann_periodic(l) * exp(i 2 pi f n / sr) / l, then divided by its L1 norm; n0 = floor(-l/2),
  so the phase centre n = 0 is tap -n0."""
  n0 = -((length + 1) // 2)  # floor(-l / 2)
  n = np.arange(n0, n0 + length, dtype=np.float64)
  window = scipy.signal.get_window("hann", length, fftbins=True)
  sig = window * np.exp(n * 1j * 2 * np.pi * freq / sample_rate) / length
  return n0, sig / np.sum(np.abs(sig))


def decimation_filter() -> np.ndarray:
  """Zero-phase lowpass for one halving: odd-length symmetric Kaiser FIR, (67,) float64,
  DC gain 1."""
  width = 2.0 * (DECIMATION_STOPBAND - DECIMATION_PASSBAND)  # in units of the Nyquist rate
  taps, beta = scipy.signal.kaiserord(DECIMATION_ATTENUATION_DB, width)
  taps |= 1  # odd: integer group delay
  cutoff = DECIMATION_PASSBAND + DECIMATION_STOPBAND  # midpoint, in units of Nyquist
  return scipy.signal.firwin(taps, cutoff, window=("kaiser", beta), scale=True)


def halving_blocks(fir: np.ndarray, p: int = HALVING_BLOCK) -> np.ndarray:
  """Block (polyphase) form of "filter with ``fir``, keep every second sample": (K, 2p, p) float32.

  With the input cut into blocks of 2p samples, output block j (p samples) is
  sum_b blocks_in[j + b] @ kb[b]: output 2pj/2 + o is sum_m x[2pj + 2o + m] fir[m]. A
  single-channel stride-2 conv runs at a few % of a CPU's matmul speed; this form is a (2pK x p)
  matmul per block."""
  n = len(fir)
  k = -(-(2 * (p - 1) + n) // (2 * p))
  kb = np.zeros((k * 2 * p, p), np.float64)
  for o in range(p):
    kb[2 * o : 2 * o + n, o] = fir
  return kb.reshape(k, 2 * p, p).astype(np.float32)


def octave_groups(n_bins: int, bins_per_octave: int) -> list[tuple[int, int]]:
  """Bin ranges [lo, hi) of one octave each, counted down from the top bin, ascending order."""
  groups = []
  hi = n_bins
  while hi > 0:
    groups.append((max(0, hi - bins_per_octave), hi))
    hi -= bins_per_octave
  return groups[::-1]


def max_stage(top_freq: float, top_length: int, sample_rate: int, hop_length: int) -> int:
  """Largest s with hop / 2^s integer and the top bin's main lobe, f + 2 sr / l, below the
  halving filter's passband edge at the rate sr / 2^(s-1) the last halving runs at."""
  s = 0
  while (
    hop_length % 2 ** (s + 1) == 0
    and top_freq + 2.0 * sample_rate / top_length <= DECIMATION_PASSBAND * sample_rate / 2**s
  ):
    s += 1
  return s


def min_samples(longest_kernel: int) -> int:
  """Shortest audio for which some frame's longest window lies at least half on audio: ceil(l / 2).

  Every window spans hop t + [floor(-l/2), floor(l/2)), so shorter audio leaves more than half of
  every lowest-bin window on zero padding; with center=True, frame 0 is half padding by design."""
  return (longest_kernel + 1) // 2


def group_kernels(
  freqs: np.ndarray, lengths: np.ndarray, sample_rate: int, stage: int
) -> tuple[int, np.ndarray]:
  """Kernels of one group at rate sr / 2^stage: (half, (2 half, 2 G) float32), see ``_Group``."""
  d = 2**stage
  taps = [bin_kernel(f, int(l), sample_rate) for f, l in zip(freqs, lengths)]
  spans = [(-(-n0 // d), (n0 + len(h) - 1) // d) for n0, h in taps]  # j range with n = d j
  half = max(max(-lo, hi + 1) for lo, hi in spans)
  g = len(taps)
  out = np.zeros((2 * half, 2 * g), np.float64)
  for k, ((n0, h), (lo, hi)) in enumerate(zip(taps, spans)):
    sub = h[d * np.arange(lo, hi + 1) - n0] * (d * math.sqrt(lengths[k]))
    out[half + lo : half + hi + 1, k] = sub.real
    out[half + lo : half + hi + 1, g + k] = -sub.imag
  return half, out.astype(np.float32)


def _check_params(
  sample_rate: Any, hop_length: Any, fmin: Any, n_bins: Any, bins_per_octave: Any, method: Any
) -> None:
  if method not in METHODS:
    raise ValueError(f"unknown CQT method {method!r}; expected one of {METHODS}")
  for name, v in (
    ("sample_rate", sample_rate),
    ("hop_length", hop_length),
    ("n_bins", n_bins),
    ("bins_per_octave", bins_per_octave),
  ):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
      raise ValueError(f"{name} must be a positive integer; got {v!r}")
  if not (isinstance(fmin, (int, float, np.number)) and math.isfinite(fmin) and fmin > 0):
    raise ValueError(f"fmin must be a positive frequency in Hz; got {fmin!r}")
  f_top = float(cqt_frequencies(fmin, n_bins, bins_per_octave)[-1])
  if f_top >= sample_rate / 2:
    raise ValueError(
      f"the top CQT bin, fmin * 2^((n_bins - 1) / bins_per_octave) = {f_top:.1f} Hz "
      f"(fmin={fmin}, n_bins={n_bins}, bins_per_octave={bins_per_octave}), reaches the "
      f"Nyquist frequency {sample_rate / 2:g} Hz; lower fmin or n_bins"
    )


@functools.lru_cache(maxsize=16)
def _plan(
  sample_rate: int, hop_length: int, fmin: float, n_bins: int, bins_per_octave: int, method: str
) -> _Plan:
  """Host-side (float64) construction of all kernels for one parameter set."""
  freqs = cqt_frequencies(fmin, n_bins, bins_per_octave)
  lengths = cqt_lengths(sample_rate, fmin, n_bins, bins_per_octave)
  groups = []
  for lo, hi in octave_groups(n_bins, bins_per_octave):
    stage = 0
    if method == "fast":
      stage = max_stage(freqs[hi - 1], int(lengths[hi - 1]), sample_rate, hop_length)
    half, kernels = group_kernels(freqs[lo:hi], lengths[lo:hi], sample_rate, stage)
    groups.append(_Group(lo, hi, stage, half, kernels))
  fir = decimation_filter()
  return _Plan(
    hop_length,
    n_bins,
    tuple(groups),
    fir,
    halving_blocks(fir),
    int(lengths.max()),
    min_samples(int(lengths.max())),
  )


def _frames(x: jax.Array, width: int, stride: int) -> jax.Array:
  """x (B, n) -> (B, T, width) with row t = x[:, stride t : stride t + width], T = (n - width) //
  stride + 1: one gather, its indices from iotas (not a constant array)."""
  t = (x.shape[1] - width) // stride + 1
  index = stride * jax.lax.broadcasted_iota(jnp.int32, (t, width), 0) + jax.lax.broadcasted_iota(
    jnp.int32, (t, width), 1
  )
  return x[:, index]


def _correlate(x: jax.Array, kernels: np.ndarray, stride: int) -> jax.Array:
  """Valid strided cross-correlation of x (B, n) with (W, C) kernels -> (B, T, C) float32,
  T = (n - W) // stride + 1: framing, then one fp32 matmul.

  Written as gather + matmul rather than ``lax.conv_general_dilated`` with one input channel:
  XLA:TPU (libtpu 0.0.42.1, deviceless v4 chip) compiled the fast CQT of 16 five-second clips
  in 444 s (14 CPU-minutes, most of the 95M train step's compile) with convolutions and in 17 s
  this way. Measured on the project CPU (XLA:CPU, 8 five-second clips): fast 61 ms here against
  40 ms with convolutions, a negligible part of a train step; framing by slicing and concatenating
  instead of one gather compiled 2.4 s longer on the CPU for the lowest octave (hop 5)."""
  frames = _frames(x, kernels.shape[0], stride)
  return jnp.einsum(
    "btw,wc->btc", frames, jnp.asarray(kernels), precision=jax.lax.Precision.HIGHEST
  )


def _halve(x: jax.Array, start: int, fir: np.ndarray, blocks: np.ndarray) -> tuple[jax.Array, int]:
  """Lowpass and keep every second sample over the full support of the filtered signal.

  x (B, n) holds times start .. start + n - 1 (zero outside); ``blocks`` = halving_blocks(fir).
  Returns (y, start') with y (B, n') the filtered signal at the even times 2 start',
  2 start' + 2, .. i.e. times start', start' + 1, .. at half the rate."""
  k, two_p, p = blocks.shape
  c = (len(fir) - 1) // 2  # the centre tap: output time u is input time 2u
  n = x.shape[1]
  u0 = -(-(start - c) // 2)  # first and last output touching the signal
  u1 = (start + n - 1 + c) // 2
  n_out = u1 - u0 + 1
  n_blocks = -(-n_out // p)
  left = start - (2 * u0 - c)
  x = jnp.pad(x, ((0, 0), (left, two_p * (n_blocks + k - 1) - n - left)))
  y = _correlate(x, blocks.reshape(k * two_p, p), two_p)  # (B, n_blocks, p)
  return y.reshape(x.shape[0], -1)[:, :n_out], u0


def _window(x: jax.Array, start: int, lo: int, size: int) -> jax.Array:
  """The samples at times lo .. lo + size - 1 of x (holding times start ..), zero outside."""
  a, b = lo - start, lo - start + size
  n = x.shape[1]
  x = jnp.pad(x, ((0, 0), (max(0, -a), max(0, b - n))))
  a += max(0, -a)
  return x[:, a : a + size]


def _transform(audio: jax.Array, plan: _Plan) -> jax.Array:
  """(B, L) float32 -> (B, T, n_bins) float32 magnitudes; pure jnp, traced once per plan/shape."""
  frames = audio.shape[1] // plan.hop_length + 1
  signals = {0: (audio, 0)}  # stage -> (signal at sr / 2^stage, time of its index 0)
  for s in range(1, max(g.stage for g in plan.groups) + 1):
    signals[s] = _halve(*signals[s - 1], plan.decimation_filter, plan.halving)
  out = []
  for g in plan.groups:
    x, start = signals[g.stage]
    hop = plan.hop_length // 2**g.stage
    x = _window(x, start, -g.half, hop * (frames - 1) + 2 * g.half)
    y = _correlate(x, g.kernels, hop)  # (B, T, 2G): real, -imaginary
    re, im = jnp.split(y, 2, axis=-1)
    out.append(jnp.sqrt(re * re + im * im))
  return jnp.concatenate(out, axis=-1)


_transform_jit = jax.jit(_transform, static_argnums=1)


def _check_audio(audio: Any, plan: _Plan) -> Any:
  """Static checks (rank, dtype, length) and, for concrete arrays, the NaN/inf check."""
  if not isinstance(audio, (jax.Array, np.ndarray)):
    audio = np.asarray(audio)
  shape, dtype = audio.shape, audio.dtype
  if len(shape) != 2:
    raise ValueError(
      f"audio must be a 2-D (batch, samples) array; got shape {tuple(shape)}. "
      f"Add a batch axis with audio[None] for a single clip."
    )
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"audio must be floating point (e.g. float32 in [-1, 1]); got dtype {dtype}")
  if shape[1] < plan.min_samples:
    raise ValueError(
      f"audio has {shape[1]} samples, shorter than the CQT kernel support: the "
      f"longest kernel (bin 0, {plan.longest_kernel} taps) "
      f"needs at least {plan.min_samples} samples of audio, half its length, or every "
      f"frame of the lowest bins is mostly zero padding"
    )
  if isinstance(audio, jax.core.Tracer):
    return audio  # inside jit/vmap: values unknown, cannot be checked
  if isinstance(audio, jax.Array) and not audio.is_fully_addressable:
    return audio
  # NumPy on the values (not jnp): a concrete array closed over inside a jit trace must not
  # stage ops.
  finite = bool(np.all(np.isfinite(np.asarray(audio))))
  if not finite:
    bad = ~np.isfinite(np.asarray(audio))
    rows = sorted(set(np.nonzero(bad)[0].tolist()))
    raise ValueError(
      f"audio contains {int(bad.sum())} non-finite samples (NaN or inf) in row(s) "
      f"{rows[:10]}; the CQT of such a clip is meaningless, fix or drop it"
    )
  return audio


def cqt(
  audio: Any,
  *,
  sample_rate: int = SAMPLE_RATE,
  hop_length: int = HOP,
  fmin: float = 32.7,
  n_bins: int = 336,
  bins_per_octave: int = 48,
  method: str = "fast",
) -> jax.Array:
  """CQT magnitudes of a batch: audio (B, L) float -> (B, floor(L / hop_length) + 1, n_bins)
  float32.

  nnAudio CQT1992v2 semantics (see the module docstring); ``method`` is "fast" (multirate) or
  "exact". Raises ValueError on bad parameters or input."""
  _check_params(sample_rate, hop_length, fmin, n_bins, bins_per_octave, method)
  plan = _plan(
    int(sample_rate), int(hop_length), float(fmin), int(n_bins), int(bins_per_octave), method
  )
  audio = _check_audio(audio, plan)
  if isinstance(audio, np.ndarray):
    audio = audio.astype(np.float32, copy=False)
  audio = jax.lax.stop_gradient(jnp.asarray(audio, jnp.float32))
  return _transform_jit(audio, plan)


def nnaudio_cqt_kwargs(
  sample_rate: int, hop_length: int, fmin: float, n_bins: int, bins_per_octave: int
) -> dict[str, Any]:
  """The ``nnAudio.features.CQT1992v2`` arguments whose output ``method="exact"`` reproduces
  (MERT's reference CQT): the one statement of that reference, for tests and benchmarks."""
  return dict(
    sr=sample_rate,
    hop_length=hop_length,
    fmin=fmin,
    n_bins=n_bins,
    bins_per_octave=bins_per_octave,
    filter_scale=1,
    norm=1,
    window="hann",
    center=True,
    pad_mode="constant",
    trainable=False,
    output_format="Magnitude",
    verbose=False,
  )
