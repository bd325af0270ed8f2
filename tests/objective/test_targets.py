"""The CQT regression target's transform and its corpus statistics (mert_jax/objective/targets.py,
cqt_stats.py): log-standardised = (log max(|CQT|, floor) - mean) / std per bin, the statistics
equal a NumPy pass over the same crops, and a bad statistics file is one line naming it."""

import numpy as np
import pytest

from data_pipeline import reader as reader_lib
from mert_jax.config import ObjectiveConfig, model_config
from mert_jax.objective import cqt_stats, targets


def test_raw_target_is_the_magnitudes() -> None:
  cqt = np.random.RandomState(0).rand(2, 5, 336).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(targets.regression_target(cqt, ObjectiveConfig())), cqt)


def test_log_standardised_target_by_hand(tmp_path) -> None:
  rng = np.random.RandomState(0)
  mean, std = rng.randn(336).astype(np.float32), (rng.rand(336) + 0.5).astype(np.float32)
  path = str(tmp_path / "stats.npz")
  cqt_stats.save(path, {"mean": mean, "std": std, "frames": 10})
  cqt = np.abs(rng.randn(2, 5, 336)).astype(np.float32)
  cqt[0, 0, 0] = 0.0  # silence: the floor, not -inf
  ocfg = ObjectiveConfig(cqt_target="log_standardised", cqt_stats=path)
  got = np.asarray(targets.regression_target(cqt, ocfg))
  want = (np.log(np.maximum(cqt, 1e-6)) - mean) / std
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_statistics_equal_a_numpy_pass_over_the_same_crops(default_data, tmp_path) -> None:
  mcfg, ocfg = model_config("tiny"), ObjectiveConfig()
  stats = cqt_stats.compute(default_data, mcfg, ocfg, crops=16, crop_samples=48_000)
  rcfg = reader_lib.ReaderConfig(crop_samples=48_000, batch_size=16, shuffle_window=64)
  audio = next(iter(reader_lib.make_dataset(default_data, rcfg, split="train")[0]))["audio"]
  logs = np.log(np.maximum(np.asarray(targets.cqt_fn(mcfg, ocfg)(audio), np.float64), 1e-6))
  logs = logs.reshape(-1, 336)
  assert stats["frames"] == len(logs)
  np.testing.assert_allclose(stats["mean"], logs.mean(axis=0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(stats["std"], logs.std(axis=0), rtol=1e-3, atol=1e-4)
  # the command writes what compute returns
  out = tmp_path / "s.npz"
  cqt_stats.main([f"--data={default_data}", f"--output={out}", "--config=tiny", "--crops=16"])
  mean, _ = cqt_stats.load(str(out))
  assert mean.shape == (336,) and np.all(np.isfinite(mean))


def test_a_bad_statistics_file_is_one_line_naming_it(tmp_path) -> None:
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not an npz")
  with pytest.raises(ValueError, match=f"objective.cqt_stats={bad}: not a CQT statistics file"):
    cqt_stats.load(str(bad))
  short = str(tmp_path / "short.npz")
  cqt_stats.save(short, {"mean": np.zeros(10), "std": np.ones(10)})
  with pytest.raises(ValueError, match="statistics of 10 bins, but model.cqt_bins=336"):
    cqt_stats.check_bins(short, 336)
