"""The k-means teacher's fit: MiniBatchKMeans per residual codebook on the seeded frame sample, with
progress lines, and the nearest-centroid assignment both the fit and the teacher use.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

from data_pipeline.teachers.kmeans_features import KMeansConfig
from mert_jax.terminal import progress as progress_lib


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, chunk: int) -> np.ndarray:
  """(n,) int64 index of the nearest centroid (squared Euclidean; ties -> lowest index).

  x: (n, d) float32, centroids: (k, d) float32; at most ``chunk`` x k distances held at once.
  """
  c_sq = np.einsum("kd,kd->k", centroids, centroids)
  out = np.empty(len(x), np.int64)
  for a in range(0, len(x), chunk):
    d = c_sq[None, :] - 2.0 * (x[a : a + chunk] @ centroids.T)  # ||x||^2 omitted: same argmin
    out[a : a + chunk] = np.argmin(d, axis=-1)
  return out


def residual_quantize(
  z: np.ndarray, centroids: np.ndarray, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
  """Residual VQ of standardised features z (n, d) -> codes (K, n) int64, final residual (n, d)."""
  codes = np.empty((len(centroids), len(z)), np.int64)
  r = z.copy()
  for k, c in enumerate(centroids):
    codes[k] = nearest_centroid(r, c, chunk)
    r -= c[codes[k]]
  return codes, r


def check_fit_frames(frames: int, cfg: KMeansConfig) -> None:
  if frames < cfg.codebook_size:
    rate = cfg.sample_rate / cfg.hop
    raise ValueError(
      f"k-means teacher: only {frames} feature frames to fit {cfg.codebook_size} centroids per "
      f"codebook "
      f"({frames / rate:.1f} s of audio at {rate:g} Hz); give at least {cfg.codebook_size} frames "
      f"({cfg.codebook_size / rate:.1f} s), ideally ~100x more, or lower codebook_size"
    )


def _reporting_kmeans(on_step: Callable[[int, int], None]) -> type:
  """A MiniBatchKMeans subclass that calls ``on_step(step, n_steps)`` (step from 1) after each
  mini-batch step of ``fit``. It only observes: the centroids are bit-identical to MiniBatchKMeans'.

  sklearn has no progress callback (``verbose`` prints every step to stdout); this hooks the
  private per-step ``_mini_batch_convergence`` (sklearn 1.1+). Should a later sklearn rename it, the
  hook is never called and only the fit's opening line remains (tests/data_pipeline/
  test_progress.py checks that the steps are reported)."""
  from sklearn.cluster import MiniBatchKMeans  # pylint: disable=g-import-not-at-top

  class ReportingMiniBatchKMeans(MiniBatchKMeans):
    def _mini_batch_convergence(self, step, n_steps, *args, **kwargs):
      stop = super()._mini_batch_convergence(step, n_steps, *args, **kwargs)
      on_step(step + 1, n_steps)
      return stop

  return ReportingMiniBatchKMeans


class _FitReport:
  """The mini-batch steps of all K codebooks' fits as one progress bar, made at the first step
  (when sklearn's step limit is known, after the k-means++ inits); a codebook that converges early
  takes its unrun steps off the total, so the ETA stays the time left at the rate so far."""

  def __init__(self, num_codebooks: int, enabled: bool):
    self.num_codebooks, self.enabled = num_codebooks, enabled
    self.bar: Any = None
    self.codebook, self.steps, self.limit, self.early = 0, 0, 0, 0

  def _where(self) -> str:
    return f"codebook {self.codebook + 1}/{self.num_codebooks}"

  def start(self, codebook: int) -> None:
    """Codebook ``codebook`` (from 0) is being fitted next."""
    self.codebook, self.steps = codebook, 0
    if self.bar is not None:
      self.bar.set_postfix_str(self._where())

  def __call__(self, step: int, n_steps: int) -> None:
    """sklearn finished mini-batch step ``step`` (from 1) of at most ``n_steps``."""
    if self.bar is None:
      total = n_steps * self.num_codebooks
      self.bar = progress_lib.bar(total, "k-means", "steps", enabled=self.enabled)
      self.bar.set_postfix_str(self._where())
    self.bar.update(step - self.steps)
    self.steps, self.limit = step, n_steps

  def end(self) -> None:
    """The current codebook is fitted; steps it did not need leave the total."""
    if self.bar is not None and self.steps < self.limit:
      self.bar.total -= self.limit - self.steps
      self.early += 1

  def close(self) -> None:
    """The final line, saying how many codebooks converged before the step limit."""
    if self.bar is None:
      return
    early = f", {self.early} converged before the {self.limit}-step limit" if self.early else ""
    self.bar.set_postfix_str(f"{self.num_codebooks} codebooks{early}")
    self.bar.close()


def _fit_plan(frames: int, cfg: KMeansConfig) -> str:
  """The line that opens a fit: what is clustered, and how (sizes in frames; the step limit as
  MiniBatchKMeans computes it)."""
  batch = min(cfg.batch_size, frames)
  return (
    f"k-means: {cfg.num_codebooks} residual codebooks x {cfg.codebook_size} centroids on {frames} "
    f"frames x {cfg.feature_dim} features; per codebook {cfg.n_init} k-means++ inits, then up to "
    f"{cfg.max_iter * frames // batch} mini-batch steps of {batch} frames"
  )


def fit_codebooks(
  z: np.ndarray, cfg: KMeansConfig, seeds: list[np.random.SeedSequence], progress: bool = False
) -> np.ndarray:
  """(K, codebook_size, d) float32 centroids. Residual codebooks (``cfg.groups`` empty): codebook
  k+1 is fitted on the residual of codebooks 1..k. Independent codebooks: codebook k is a k-means
  of its own feature group's dimensions (``cfg.codebook_dims(k)``), 0 on the other dimensions.

  z: (frames, d) standardised features; seeds: one SeedSequence per codebook; progress: print the
  plan and each codebook's mini-batch steps to stderr (``mert_jax/terminal/progress.py``).
  """
  residual = not cfg.groups
  r = np.array(z, np.float32)  # a copy: residual codebooks subtract from it
  centroids = np.zeros((cfg.num_codebooks, cfg.codebook_size, cfg.feature_dim), np.float32)
  if progress:
    print(_fit_plan(len(r), cfg), file=sys.stderr, flush=True)
  report = _FitReport(cfg.num_codebooks, progress)
  reporting_kmeans = _reporting_kmeans(report)
  for k, seq in enumerate(seeds):
    report.start(k)
    km = reporting_kmeans(
      n_clusters=cfg.codebook_size,
      init="k-means++",
      n_init=cfg.n_init,
      max_iter=cfg.max_iter,
      batch_size=cfg.batch_size,
      tol=cfg.tol,
      max_no_improvement=cfg.max_no_improvement,
      reassignment_ratio=cfg.reassignment_ratio,
      compute_labels=False,
      random_state=int(seq.generate_state(1)[0]),
    )
    dims = cfg.codebook_dims(k)
    km.fit(r if residual else np.ascontiguousarray(r[:, dims]))
    report.end()
    centroids[k][:, dims] = km.cluster_centers_
    if residual:
      r -= centroids[k][nearest_centroid(r, centroids[k], cfg.assign_chunk_frames)]
  report.close()
  return centroids
