"""mert_jax/train/probing.py: the in-training probe's scores reach metrics.jsonl, TensorBoard and
the console, on the train state's own parameters; bad probe fields are one ConfigError line."""

from __future__ import annotations

import pytest

from mert_jax.train import loop, loop_config, probing
from tests.train.helpers import rows, tiny

PROBE = dict(probe_every=2, probe_tasks="pitch,instrument", probe_max_epochs=2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
  """The rendered probe sets, shared by this module's runs."""
  return str(tmp_path_factory.mktemp("probe_cache"))


def test_in_training_probe_is_logged(data_dir, cache, tmp_path, capsys):
  wd = tmp_path / "run"
  cfg = tiny(data_dir, total_steps=3, probe_cache_dir=cache, **PROBE)
  result = loop.train(cfg, str(wd))
  probes = [r for r in rows(wd) if any(k.startswith("probe_") for k in r)]
  assert [r["step"] for r in probes] == [2, 3]  # every 2 steps, and the last
  for r in probes:
    for task in ("pitch", "instrument"):
      assert 0.0 <= r[f"probe_{task}"] <= 1.0 and 0.0 <= r[f"probe_{task}_best"] <= 1.0
      assert r[f"probe_{task}_best_layer"] in (0, 1, 2)
  assert result["probe"] == {k[len("probe_") :]: v for k, v in probes[-1].items() if k != "step"}
  assert any((wd / "tb" / "probe").iterdir())
  out = capsys.readouterr().out
  assert "pitch: 27 clips" in out and "probe 2/3  pitch " in out and "  instrument " in out


def test_the_probe_reads_the_trained_parameters(trained_workdir, data_dir, cache, tmp_path):
  """The probe's model copy carries the train state's parameters: its features are those of the
  checkpoint loaded for the probe command."""
  import numpy as np

  from mert_jax.checkpointing import model_checkpoint
  from mert_jax.probe import features

  wd, params = trained_workdir
  cfg = tiny(data_dir, probe_cache_dir=cache, **PROBE)
  probe = probing.TrainingProbe(cfg, str(tmp_path), model_checkpoint.load_model(wd).cfg)
  probe(params)
  clips = np.random.default_rng(0).standard_normal((2, 9000)).astype(np.float32) * 0.1
  loaded = model_checkpoint.load_model(wd, dtype="float32").backbone
  np.testing.assert_allclose(
    features.model_layers(probe.model.backbone)(clips, "mean"),
    features.model_layers(loaded)(clips, "mean"),
    atol=1e-6,
  )


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("probe_tasks", "pitch,tempo", "probe_tasks=pitch,tempo: unknown task 'tempo'"),
    ("probe_tasks", "custom", "probe_tasks: custom is for the probe command"),
    ("probe_set", "huge", "probe_set='huge': choose one of full, small, tiny"),
    ("probe_max_epochs", 0, "probe_max_epochs=0: must be an integer >= 1"),
  ],
)
def test_bad_probe_fields_are_one_line(data_dir, field, value, message):
  cfg = tiny(data_dir, probe_every=5, **{field: value})
  with pytest.raises(loop_config.ConfigError, match=message):
    loop_config.check(cfg)
