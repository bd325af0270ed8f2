"""The k-means teacher (the default, nothing to download): frame features (``kmeans_features``)
standardised with fit-time statistics, then quantised by a *residual* k-means so the tokens have
the RVQ structure of EnCodec's: codebook 1 clusters the features, codebook k+1 clusters what is
left after subtracting codebook k's centroid. Fitted once (``kmeans_fit``), assigned with NumPy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from typing import Any, Iterable

import fsspec
import numpy as np

from data_pipeline import frame_sample
from data_pipeline.teachers.base import (
  FORMAT_VERSION,
  TEACHER_JSON,
  Teacher,
  as_audio,
  check_tokens,
  num_tokens,
  read_teacher_json,
  write_json,
)
from data_pipeline.teachers.kmeans_features import (
  KMeansConfig,
  frame_features,
  named_audios,
  sample_frames,
  thread_limit,
)
from data_pipeline.teachers.kmeans_fit import (
  check_fit_frames,
  fit_codebooks,
  nearest_centroid,
  residual_quantize,
)
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_open

KMEANS_ARRAYS = "kmeans_arrays.npz"


def _sha256(*arrays: np.ndarray) -> str:
  h = hashlib.sha256()
  for a in arrays:
    h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
  return h.hexdigest()


class KMeansTeacher(Teacher):
  """MFCC + chroma features at 75 Hz, standardised, quantised by residual k-means (K codebooks)."""

  name = "kmeans"

  def __init__(
    self,
    cfg: KMeansConfig,
    mean: np.ndarray,
    std: np.ndarray,
    centroids: np.ndarray,
    fit_info: dict[str, Any] | None = None,
  ):
    """mean, std: (d,) fit-time feature statistics; centroids: (K, codebook_size, d)."""
    cfg.validate()
    d = cfg.feature_dim
    if (
      mean.shape != (d,)
      or std.shape != (d,)
      or centroids.shape != (cfg.num_codebooks, cfg.codebook_size, d)
    ):
      raise ValueError(
        f"k-means arrays do not match the config: mean {mean.shape}, std {std.shape}, centroids "
        f"{centroids.shape}; expected ({d},), ({d},), {(cfg.num_codebooks, cfg.codebook_size, d)}"
      )
    self.cfg = cfg
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.centroids = np.ascontiguousarray(centroids, np.float32)
    self.fit_info = dict(fit_info or {})
    self.num_codebooks = cfg.num_codebooks
    self.codebook_size = cfg.codebook_size
    self.sample_rate = cfg.sample_rate
    self.hop = cfg.hop

  @classmethod
  def fit(
    cls,
    audios: Iterable[np.ndarray] | Iterable[tuple[str, np.ndarray]],
    *,
    config: KMeansConfig = KMeansConfig(),
    seed: int = 0,
    progress: bool = False,
  ) -> "KMeansTeacher":
    """Fit on a seeded sample of the frames of ``audios``: (file id, (samples,) float32) pairs at
    24 kHz, or bare arrays (named by position). The sample depends on the files' ids and content,
    not on their order (``sample_frames``).

    ``progress``: report the clustering on stderr (the plan, then each codebook's mini-batch steps
    with an ETA); the result is the same either way. To see the feature pass over ``audios`` too,
    wrap them in ``mert_jax.terminal.progress.progress`` (as prepare does)."""
    config.validate()
    if isinstance(audios, np.ndarray) and audios.ndim == 1:
      audios = [audios]  # one clip, not a stream of samples
    sample = sample_frames(named_audios(audios), config, seed)
    return cls.fit_sample(sample, config=config, seed=seed, progress=progress)

  @classmethod
  def fit_sample(
    cls,
    sample: frame_sample.FrameSample,
    *,
    config: KMeansConfig = KMeansConfig(),
    seed: int = 0,
    progress: bool = False,
  ) -> "KMeansTeacher":
    """Fit on a frame sample (``sample_frames``, or merged ``file_candidates`` of many workers)."""
    # Imported here so that its OpenMP runtime is loaded before the thread limit is taken.
    import sklearn.cluster  # pylint: disable=g-import-not-at-top

    config.validate()
    feats = sample.compact().features
    _, *km_seqs = np.random.SeedSequence(seed).spawn(1 + config.num_codebooks)
    with thread_limit(config.num_threads, fresh=True):
      check_fit_frames(len(feats), config)
      mean = feats.mean(axis=0, dtype=np.float64).astype(np.float32)
      std = np.maximum(feats.std(axis=0, dtype=np.float64), config.std_floor).astype(np.float32)
      centroids = fit_codebooks((feats - mean) / std, config, km_seqs, progress)
    info = {
      "seed": int(seed),
      "fit_frames": int(len(feats)),
      "frames_seen": int(sample.frames_seen),
      "sklearn_version": sklearn.__version__,
    }
    return cls(config, mean, std, centroids, info)

  def standardized_features(
    self, audio: np.ndarray, start: int = 0, stop: int | None = None
  ) -> np.ndarray:
    """(frames, d) float32 features of tokens [start, stop), standardised with the fit stats."""
    return (frame_features(audio, self.cfg, start, stop) - self.mean) / self.std

  def tokens(self, audio: np.ndarray) -> np.ndarray:
    x = as_audio(audio)
    n = num_tokens(len(x), self.hop)
    codes = np.empty((self.num_codebooks, n), np.int16)
    with thread_limit(self.cfg.num_threads):
      for a in range(0, n, self.cfg.feature_chunk_frames):
        b = min(a + self.cfg.feature_chunk_frames, n)
        z = self.standardized_features(x, a, b)
        if self.cfg.groups:
          for k, c in enumerate(self.centroids):
            dims = self.cfg.codebook_dims(k)
            codes[k, a:b] = nearest_centroid(z[:, dims], c[:, dims], self.cfg.assign_chunk_frames)
        else:
          codes[:, a:b] = residual_quantize(z, self.centroids, self.cfg.assign_chunk_frames)[0]
    return check_tokens(codes, self.num_codebooks, self.codebook_size, n)

  def quantization_errors(self, audio: np.ndarray) -> np.ndarray:
    """(K + 1,) mean squared residual per feature dim after 0, 1, ..., K codebooks (standardised
    units)."""
    r = self.standardized_features(audio)
    errs = [float(np.mean(r**2))]
    for c in self.centroids:
      r = r - c[nearest_centroid(r, c, self.cfg.assign_chunk_frames)]
      errs.append(float(np.mean(r**2)))
    return np.asarray(errs)

  @property
  def centroids_sha256(self) -> str:
    """sha256 of the float32 little-endian bytes of mean, std and centroids, in that order."""
    return _sha256(self.mean, self.std, self.centroids)

  def config(self) -> dict[str, Any]:
    groups = self.cfg.groups
    what = (
      f"independent codebooks on {', '.join(groups)}"
      if groups
      else f"residual codebooks on mfcc{self.cfg.n_mfcc}(log-mel{self.cfg.n_mels}) + "
      f"chroma{self.cfg.n_chroma}"
    )
    return {
      **self._layout(),
      "features": what
      + (" + deltas" if self.cfg.deltas else "")
      + f", hann {self.cfg.n_fft} centred on hop*t + hop/2",
      "feature_dim": self.cfg.feature_dim,
      "edge_margin_frames": self.cfg.edge_margin,
      "settings": dataclasses.asdict(self.cfg),
      "fit": self.fit_info,
      "centroids_sha256": self.centroids_sha256,
    }

  def save(self, directory: str | os.PathLike) -> None:
    storage.makedirs(directory)
    with atomic_open(os.path.join(directory, KMEANS_ARRAYS), "wb") as f:
      np.savez(f, mean=self.mean, std=self.std, centroids=self.centroids)
    write_json(
      directory, {"format_version": FORMAT_VERSION, "arrays": KMEANS_ARRAYS, **self.config()}
    )

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "KMeansTeacher":
    d = read_teacher_json(directory)
    if d.get("name") != cls.name:
      raise ValueError(f"{directory}: saved teacher is {d.get('name')!r}, not {cls.name!r}")
    with fsspec.open(os.path.join(directory, d["arrays"]), "rb") as f:
      arrays = io.BytesIO(f.read())
    with np.load(arrays, allow_pickle=False) as z:
      mean, std, centroids = z["mean"], z["std"], z["centroids"]
    teacher = cls(KMeansConfig(**d["settings"]), mean, std, centroids, d.get("fit"))
    if teacher.centroids_sha256 != d["centroids_sha256"]:
      raise ValueError(
        f"{directory}: {d['arrays']} does not match the sha256 in {TEACHER_JSON} "
        f"(corrupt or replaced)"
      )
    return teacher
