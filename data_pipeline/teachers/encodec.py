"""The EnCodec teacher: the EnCodec 24 kHz codec at 6 kbps (8 codebooks x 1024 codes) through
``transformers.EncodecModel``, as MERT-v1 uses. Weights come from a folder or Hub id the user names
(safetensors only); ``random_init(seed)`` builds an untrained model for tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from typing import Any

import numpy as np

from data_pipeline.audio_format import HOP, SAMPLE_RATE
from data_pipeline.teachers.base import (
  FORMAT_VERSION,
  Teacher,
  as_audio,
  check_tokens,
  num_tokens,
  read_teacher_json,
  write_json,
)


@dataclasses.dataclass(frozen=True)
class EncodecTeacherConfig:
  """How the EnCodec codec is run (MERT-v1: 24 kHz model, 6 kbps -> 8 codebooks x 1024)."""

  bandwidth: float = 6.0  # kbps; 1.5/3/6/12/24 -> 2/4/8/16/32 codebooks
  # "windowed": windows of window_seconds, each with context_seconds of left context (bounded
  # memory; 1.2-1.3 % of codes differed from one pass on real music with the untrained model,
  # benchmarks/encodec_modes.py) | "whole": each file in one causal pass, as the
  # reference encodes it (memory grows with the file; files over whole_max_seconds are refused)
  mode: str = "windowed"
  whole_max_seconds: float = 1800.0  # "whole": the longest file encoded in one pass
  window_seconds: float = 30.0  # audio encoded per call, rounded to whole hops (bounds memory)
  # Hop-aligned left context re-encoded before each window (warms up the causal convs and the
  # LSTM); its codes are dropped. Without it ~15 frames after each window start differed from
  # whole-file codes (untrained model, tests); with 1 s, only isolated near-tie flips (~1 %).
  context_seconds: float = 1.0
  # "windowed": a file's windows of equal length encoded together, this many per call. Only a
  # file's own windows share a call: the codes depend on the batch at the level of float rounding
  # (a near tie flips), so batching several files would tie a file's codes to its neighbours;
  # on one CPU thread the batch gains 1 % (benchmarks/encodec_modes.py).
  batch_windows: int = 8
  device: str = "cpu"  # torch device: cpu, cuda, cuda:N, or auto (cuda when present)
  num_threads: int | None = (
    None  # torch intra-op threads while encoding (then restored); None: as set
  )
  # Random-init (test) models only: the untrained codebooks are all zeros, which maps every frame
  # to code 0; codebook k is instead filled with residual frames of a seeded calibration signal
  # plus jitter.
  calibration_seconds: float = 4.0  # seeded noise bursts encoded to draw the random codebooks
  calibration_jitter: float = 0.5  # Gaussian jitter, in units of the per-channel residual std

  @property
  def window_samples(self) -> int:
    return max(1, round(self.window_seconds * SAMPLE_RATE / HOP)) * HOP

  @property
  def context_samples(self) -> int:
    return max(0, round(self.context_seconds * SAMPLE_RATE / HOP)) * HOP


ENCODEC_MODES = ("windowed", "whole")


def resolve_device(device: str) -> str:
  """The torch device of ``device``: "auto" is cuda when torch sees a GPU, else cpu; a CUDA
  device that is not there is one line."""
  import torch  # pylint: disable=g-import-not-at-top

  if device == "auto":
    return "cuda" if torch.cuda.is_available() else "cpu"
  if device.startswith("cuda") and not torch.cuda.is_available():
    raise ValueError(f"EnCodec device {device!r}: torch sees no CUDA device here (use cpu or auto)")
  return device


@contextlib.contextmanager
def _torch_threads(num_threads: int | None):
  """Temporarily set torch's intra-op thread count (process-global) to ``num_threads``."""
  import torch  # pylint: disable=g-import-not-at-top

  before = torch.get_num_threads()
  if num_threads is not None:
    torch.set_num_threads(num_threads)
  try:
    yield
  finally:
    torch.set_num_threads(before)


def _fit_length(codes: np.ndarray, frames: int) -> np.ndarray:
  """Trim extra frames at the end, or repeat the last frame; (K, n) -> (K, frames).

  transformers 5.24's EnCodec already returns ceil(L / 320) frames (checked in tests), so this
  only guards against other versions.
  """
  if codes.shape[1] >= frames:
    return codes[:, :frames]
  if codes.shape[1] == 0:
    raise ValueError(f"EnCodec returned no frames where {frames} were expected")
  return np.concatenate([codes, np.repeat(codes[:, -1:], frames - codes.shape[1], axis=1)], axis=1)


def _calibration_signal(seconds: float, seed: int) -> np.ndarray:
  """Seeded noise bursts with a random level per 0.25 s (float32, SAMPLE_RATE) for random
  codebooks."""
  rng = np.random.default_rng(seed)
  n = int(seconds * SAMPLE_RATE)
  block = SAMPLE_RATE // 4
  levels = np.repeat(10.0 ** rng.uniform(-3, -0.5, -(-n // block)), block)[:n]
  return (levels * rng.standard_normal(n)).astype(np.float32)


def _randomize_codebooks(model: Any, cfg: EncodecTeacherConfig, seed: int) -> None:
  """Fill the zero codebooks of an untrained EncodecModel from a seeded calibration signal (in
  place)."""
  import torch  # pylint: disable=g-import-not-at-top

  gen = torch.Generator().manual_seed(seed)
  x = torch.from_numpy(_calibration_signal(cfg.calibration_seconds, seed))[None, None]
  with torch.inference_mode():
    r = model.encoder(x)[0].T.float()  # (frames, codebook_dim)
  for layer in model.quantizer.layers:
    book = layer.codebook
    pick = torch.randint(0, len(r), (book.codebook_size,), generator=gen)
    std = r.std(dim=0, keepdim=True)
    embed = r[pick] + cfg.calibration_jitter * std * torch.randn(book.embed.shape, generator=gen)
    with torch.no_grad():
      book.embed.copy_(embed)
      book.embed_avg.copy_(embed)
    with torch.inference_mode():
      r = r - book.embed[book.quantize(r)]


def _file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _load_pretrained(source: str, revision: str | None) -> tuple[Any, str, str | None, str | None]:
  """(EncodecModel, source, resolved revision, sha256 of a local model.safetensors); never
  unpickles."""
  from transformers import EncodecModel  # pylint: disable=g-import-not-at-top

  weights_sha256 = None
  if os.path.isdir(source):
    source = os.path.abspath(source)
    st = os.path.join(source, "model.safetensors")
    if not os.path.exists(st):
      has_bin = os.path.exists(os.path.join(source, "pytorch_model.bin"))
      raise ValueError(
        f"{source}: no model.safetensors"
        + (
          " (only pytorch_model.bin, which this code will not unpickle; convert it with "
          "safetensors.torch.save_file(torch.load(path, weights_only=True), "
          "'model.safetensors'))"
          if has_bin
          else ""
        )
      )
    weights_sha256 = _file_sha256(st)
  try:
    model = EncodecModel.from_pretrained(source, revision=revision, use_safetensors=True)
  except OSError as e:
    raise ValueError(f"cannot load EnCodec from {source!r} with safetensors weights: {e}") from e
  return model, source, revision or getattr(model.config, "_commit_hash", None), weights_sha256


class EncodecTeacher(Teacher):
  """EnCodec 24 kHz RVQ codes (MERT-v1's teacher) via transformers.EncodecModel, CPU by default."""

  name = "encodec"

  def __init__(
    self,
    model: Any,
    *,
    source: str | None = None,
    seed: int | None = None,
    revision: str | None = None,
    weights_sha256: str | None = None,
    config: EncodecTeacherConfig = EncodecTeacherConfig(),
  ):
    """``model``: a transformers EncodecModel (give ``source`` to record where it came from), or a
    folder / hub id to load with safetensors (same as ``from_pretrained``). See also
    ``random_init``."""
    if isinstance(model, (str, os.PathLike)):
      model, source, revision, weights_sha256 = _load_pretrained(os.fspath(model), revision)
    if source is None:
      raise ValueError(
        "EncodecTeacher(model, source=...): name where the weights came from (saved in "
        "teacher.json)"
      )
    mc = model.config
    if mc.sampling_rate != SAMPLE_RATE or int(np.prod(mc.upsampling_ratios)) != HOP:
      raise ValueError(
        f"EnCodec model {source}: {mc.sampling_rate} Hz / hop "
        f"{int(np.prod(mc.upsampling_ratios))}; "
        f"MERT needs the 24 kHz model (hop {HOP}, 75 Hz)"
      )
    if mc.audio_channels != 1 or mc.chunk_length_s is not None or mc.normalize:
      raise ValueError(
        f"EnCodec model {source}: expected the mono, unchunked, unnormalised 24 kHz model"
      )
    if config.bandwidth not in mc.target_bandwidths:
      raise ValueError(
        f"bandwidth {config.bandwidth} not supported by {source}; choose from "
        f"{mc.target_bandwidths}"
      )
    if config.mode not in ENCODEC_MODES:
      raise ValueError(f"EnCodec mode must be one of {ENCODEC_MODES}, got {config.mode!r}")
    self.device = resolve_device(config.device)
    self.model = model.eval().to(self.device)
    self.cfg = config
    self.source = source
    self.seed = seed
    self.revision = revision
    self.weights_sha256 = weights_sha256
    self.num_codebooks = int(model.quantizer.get_num_quantizers_for_bandwidth(config.bandwidth))
    self.codebook_size = int(mc.codebook_size)
    self.sample_rate = int(mc.sampling_rate)
    self.hop = HOP

  @classmethod
  def from_pretrained(
    cls,
    source: str,
    *,
    revision: str | None = None,
    config: EncodecTeacherConfig = EncodecTeacherConfig(),
  ) -> "EncodecTeacher":
    """From a local folder (model.safetensors + config.json) or a hub id, e.g.
    "facebook/encodec_24khz"."""
    return cls(source, revision=revision, config=config)

  @classmethod
  def random_init(
    cls, seed: int = 0, *, config: EncodecTeacherConfig = EncodecTeacherConfig()
  ) -> "EncodecTeacher":
    """Untrained 24 kHz EnCodec (default EncodecConfig), deterministic in ``seed``; tests only."""
    import torch  # pylint: disable=g-import-not-at-top
    from transformers import EncodecConfig, EncodecModel  # pylint: disable=g-import-not-at-top

    with torch.random.fork_rng(devices=[]), _torch_threads(config.num_threads):
      torch.manual_seed(seed)
      model = EncodecModel(EncodecConfig()).eval()
      _randomize_codebooks(model, config, seed)
    return cls(model, source=f"random_init({seed})", seed=seed, config=config)

  def _encode(self, x: np.ndarray) -> np.ndarray:
    """(n,) float32 -> (K, frames) int64 codes of one window."""
    return self._encode_batch(x[None])[0]

  def _encode_batch(self, x: np.ndarray) -> np.ndarray:
    """(B, n) float32 -> (B, K, frames) int64 codes of B windows of equal length."""
    import torch  # pylint: disable=g-import-not-at-top

    with torch.inference_mode():
      inp = torch.from_numpy(np.ascontiguousarray(x))[:, None].to(self.device)
      codes = self.model.encode(inp, bandwidth=self.cfg.bandwidth, return_dict=True).audio_codes
    return codes[0].cpu().numpy()

  def tokens(self, audio: np.ndarray) -> np.ndarray:
    """ "windowed": windows of ``window_samples`` (hop-aligned), each encoded with
    ``context_samples`` of left context, those of equal length ``batch_windows`` per call;
    "whole": the file in one pass."""
    x = as_audio(audio)
    n = num_tokens(len(x), self.hop)
    if self.cfg.mode == "whole":
      seconds = len(x) / self.sample_rate
      if seconds > self.cfg.whole_max_seconds:
        raise ValueError(
          f"{seconds:.0f} s of audio is over the EnCodec teacher's whole_max_seconds="
          f"{self.cfg.whole_max_seconds:g} for one pass; raise it (memory grows with the file) or "
          "encode in windows (mode=windowed)"
        )
      with _torch_threads(self.cfg.num_threads):
        codes = _fit_length(self._encode(x), n) if len(x) else np.empty((self.num_codebooks, 0))
      return check_tokens(codes.astype(np.int16), self.num_codebooks, self.codebook_size, n)
    codes = np.empty((self.num_codebooks, n), np.int16)
    win, ctx = self.cfg.window_samples, self.cfg.context_samples
    by_length: dict[int, list[tuple[int, int, int]]] = {}  # length -> (first, start, stop)
    for start in range(0, len(x), win):
      stop, first = min(start + win, len(x)), max(0, start - ctx)
      by_length.setdefault(stop - first, []).append((first, start, stop))
    with _torch_threads(self.cfg.num_threads):
      for length, windows in sorted(by_length.items()):
        for b in range(0, len(windows), self.cfg.batch_windows):
          batch = windows[b : b + self.cfg.batch_windows]
          encoded = self._encode_batch(np.stack([x[f : f + length] for f, _, _ in batch]))
          for c, (first, start, stop) in zip(encoded, batch):
            t0, t1 = start // self.hop, num_tokens(stop, self.hop)
            codes[:, t0:t1] = _fit_length(c[:, (start - first) // self.hop :], t1 - t0)
    return check_tokens(codes, self.num_codebooks, self.codebook_size, n)

  def config(self) -> dict[str, Any]:
    import transformers  # pylint: disable=g-import-not-at-top

    return {
      **self._layout(),
      "source": self.source,
      "seed": self.seed,
      "revision": self.revision,
      "weights_sha256": self.weights_sha256,
      "bandwidth": self.cfg.bandwidth,
      "settings": dataclasses.asdict(self.cfg),
      "transformers_version": transformers.__version__,
    }

  def save(self, directory: str | os.PathLike) -> None:
    write_json(directory, {"format_version": FORMAT_VERSION, **self.config()})

  @classmethod
  def load(cls, directory: str | os.PathLike, *, device: str | None = None) -> "EncodecTeacher":
    """Rebuild from teacher.json (weights are re-read from ``source``; ``device`` overrides the
    saved one)."""
    d = read_teacher_json(directory)
    if d.get("name") != cls.name:
      raise ValueError(f"{directory}: saved teacher is {d.get('name')!r}, not {cls.name!r}")
    cfg = EncodecTeacherConfig(**d["settings"])
    if device is not None:
      cfg = dataclasses.replace(cfg, device=device)
    if d["seed"] is not None and d["source"] == f"random_init({d['seed']})":
      return cls.random_init(d["seed"], config=cfg)
    teacher = cls.from_pretrained(d["source"], revision=d.get("revision"), config=cfg)
    if d.get("weights_sha256") and teacher.weights_sha256 != d["weights_sha256"]:
      raise ValueError(
        f"{d['source']}: model.safetensors changed since the teacher was saved (sha256 mismatch)"
      )
    return teacher
