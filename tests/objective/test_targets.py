"""The CQT regression target's transform and the corpus statistics (mert_jax/objective/targets.py,
target_stats.py): log-standardised = (log max(|CQT|, floor) - mean) / std per bin, the statistics
equal a NumPy pass over the same crops, and a bad statistics file is one line naming it."""

import numpy as np
import pytest

from data_pipeline import reader as reader_lib
from mert_jax.config import ObjectiveConfig, model_config
from mert_jax.objective import bestrq, target_stats, target_stats_file, targets


def test_raw_target_is_the_magnitudes() -> None:
  cqt = np.random.RandomState(0).rand(2, 5, 336).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(targets.regression_target(cqt, ObjectiveConfig())), cqt)


def _stats_file(path, rng) -> tuple[str, dict]:
  stats = {
    "cqt_mean": rng.randn(336).astype(np.float32),
    "cqt_std": (rng.rand(336) + 0.5).astype(np.float32),
    "mel_mean": rng.randn(128).astype(np.float32),
    "mel_std": (rng.rand(128) + 0.5).astype(np.float32),
    "frames": np.asarray(10),
  }
  target_stats_file.save(str(path), stats)
  return str(path), stats


def test_log_standardised_target_by_hand(tmp_path) -> None:
  rng = np.random.RandomState(0)
  path, stats = _stats_file(tmp_path / "stats.npz", rng)
  cqt = np.abs(rng.randn(2, 5, 336)).astype(np.float32)
  cqt[0, 0, 0] = 0.0  # silence: the floor, not -inf
  ocfg = ObjectiveConfig(cqt_target="log_standardised", target_stats=path)
  got = np.asarray(targets.regression_target(cqt, ocfg))
  want = (np.log(np.maximum(cqt, 1e-6)) - stats["cqt_mean"]) / stats["cqt_std"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_statistics_equal_a_numpy_pass_over_the_same_crops(default_data, tmp_path) -> None:
  mcfg, ocfg = model_config("tiny"), ObjectiveConfig()
  stats = target_stats.compute(default_data, mcfg, ocfg, crops=16, crop_samples=48_000)
  rcfg = reader_lib.ReaderConfig(crop_samples=48_000, batch_size=16, shuffle_window=64)
  audio = next(iter(reader_lib.make_dataset(default_data, rcfg, split="train")[0]))["audio"]
  logs = np.log(np.maximum(np.asarray(targets.cqt_fn(mcfg, ocfg)(audio), np.float64), 1e-6))
  logs = logs.reshape(-1, 336)
  assert int(stats["frames"]) == len(logs)
  np.testing.assert_allclose(stats["cqt_mean"], logs.mean(axis=0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(stats["cqt_std"], logs.std(axis=0), rtol=1e-3, atol=1e-4)
  mel = np.asarray(bestrq.log_mel_frames(audio, mcfg, ocfg), np.float64).reshape(-1, 128)
  np.testing.assert_allclose(stats["mel_mean"], mel.mean(axis=0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(stats["mel_std"], mel.std(axis=0), rtol=1e-3, atol=1e-4)
  # the command writes what compute returns
  out = tmp_path / "s.npz"
  assert (
    target_stats.main([f"--data={default_data}", f"--output={out}", "--config=tiny", "--crops=16"])
    == 0
  )
  loaded = target_stats_file.load(str(out))
  np.testing.assert_allclose(loaded["cqt_mean"], stats["cqt_mean"])


def test_a_bad_statistics_file_is_one_line_naming_it(tmp_path) -> None:
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not an npz")
  with pytest.raises(ValueError, match=f"objective.target_stats={bad}: not a target statistics"):
    target_stats_file.load(str(bad))
  rng = np.random.RandomState(0)
  path, _ = _stats_file(tmp_path / "ok.npz", rng)
  with pytest.raises(ValueError, match="cqt_mean has 336 bins, but model.cqt_bins=84"):
    target_stats_file.check(path, model_config("tiny", cqt_bins=84), ObjectiveConfig())
  with pytest.raises(ValueError, match="mel_mean has 128 bins, but objective.bestrq_mels=64"):
    target_stats_file.check(path, model_config("tiny"), ObjectiveConfig(bestrq_mels=64))
