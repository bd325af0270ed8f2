"""The corpus statistics file of the targets' spectral inputs (log-CQT and log-mel mean and std per
bin; written by ``python -m mert_jax.objective.target_stats``, whose docstring says why they are
needed): reading, checking and writing it, and the floored log both sides apply.
"""

from __future__ import annotations

import functools
import io

import jax
import numpy as np
from etils import epath

from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.files.atomic import atomic_write_bytes

LOG_FLOOR = 1e-6  # log(max(x, LOG_FLOOR)): silence is finite


STD_FLOOR = 1e-3  # a bin that never varies is divided by this, not by 0


KEYS = ("cqt_mean", "cqt_std", "mel_mean", "mel_std")


HINT = "write one with python -m mert_jax.objective.target_stats --data=DATA_DIR --output=FILE.npz"


def log_floor(x):
  """Magnitudes or powers -> their log, floored (jax or numpy in, same out)."""
  xp = np if isinstance(x, np.ndarray) else jax.numpy
  return xp.log(xp.maximum(x, LOG_FLOOR))


@functools.lru_cache(maxsize=4)
def load(path: str) -> dict[str, np.ndarray]:
  """The statistics of a file ({key: (bins,) float32}, stds floored); one line naming the file if
  it cannot be read."""
  try:
    with epath.Path(path).open("rb") as f:
      z = np.load(io.BytesIO(f.read()))
      out = {k: np.asarray(z[k], np.float32) for k in KEYS}
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(
      f"objective.target_stats={path}: not a target statistics file ({type(e).__name__}: {e}); "
      f"{HINT}"
    ) from e
  for k in ("cqt_std", "mel_std"):
    out[k] = np.maximum(out[k], STD_FLOOR)
  return out


def check(path: str, mcfg: ModelConfig, ocfg: ObjectiveConfig) -> None:
  """The file reads and its bins match the model's CQT and the objective's mel bands."""
  stats = load(path)
  for key, want, field in (
    ("cqt_mean", mcfg.cqt_bins, "model.cqt_bins"),
    ("mel_mean", ocfg.bestrq_mels, "objective.bestrq_mels"),
  ):
    if stats[key].shape != (want,):
      raise ValueError(
        f"objective.target_stats={path}: {key} has {stats[key].shape[0]} bins, but {field}={want}"
      )


def save(path: str, stats: dict[str, np.ndarray]) -> None:
  buf = io.BytesIO()
  np.savez(buf, **stats)
  atomic_write_bytes(path, buf.getvalue())
