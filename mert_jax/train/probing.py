"""The in-training probe: every ``config.probe_every`` steps, a small MARBLE-protocol probe suite
(mert_jax/probe) on the current parameters, logged to metrics.jsonl (``probe_`` keys) and
TensorBoard (run ``probe``).

Where it runs: on every process, each on a full host copy of the parameters (gathered once per
probe), computing the same numbers from the same seeded sets; process 0 writes them. Why not
process 0 alone: the others would wait for it at their next collective, where a long probe can
meet a distributed timeout; and why not sharded: the probe sets are minutes of audio and the heads
are tiny sequential fits, which a mesh would not speed up. The cost is one parameter gather (95M:
380 MB in float32) per probe, and the probe's time on every host.

Logged per task: the test metric of the weighted sum of layers (``probe_<task>``), of the last
layer (``probe_<task>_last``) and of the layer picked on validation (``probe_<task>_best``, with
``probe_<task>_best_layer``). The probe sets are rendered once, at start-up, into
``config.probe_cache_dir`` (default: WORKDIR/probe_cache, or the temporary folder for a bucket
workdir).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from mert_jax import workdir_files
from mert_jax.config import ModelConfig
from mert_jax.files import storage
from mert_jax.model.mert import create_model
from mert_jax.probe import features, fit, run
from mert_jax.probe import sets as sets_lib
from mert_jax.train.run_config import RunConfig


def cache_dir(config: RunConfig, workdir: str) -> str:
  """Where the probe sets are rendered: config.probe_cache_dir, else WORKDIR/probe_cache, or for
  a bucket workdir the system's temporary folder (the sets are read locally)."""
  if config.probe_cache_dir:
    return config.probe_cache_dir
  if storage.is_remote(workdir):
    return os.path.join(tempfile.gettempdir(), "mert-probe-cache")
  return os.path.join(workdir, workdir_files.PROBE_CACHE)


def probe_config(config: RunConfig) -> fit.ProbeConfig:
  """The probe heads' settings of a training config."""
  return fit.ProbeConfig(
    seed=config.seed,
    max_epochs=config.probe_max_epochs,
    learning_rates=tuple(float(x) for x in config.probe_lrs),
  )


def scores(report: dict[str, Any], name: str = "model") -> dict[str, float]:
  """The logged numbers of a probe report (run.probe) for extractor ``name``."""
  out: dict[str, float] = {}
  for task, r in report["results"][name].items():
    last = str(max(map(int, r["layers"])))
    out[task] = r["weighted"] if r["weighted"] is not None else r["layers"][last]
    out[f"{task}_last"] = r["layers"][last]
    out[f"{task}_best"] = r["best_layer_test"]
    out[f"{task}_best_layer"] = r["best_layer"]
  return out


class TrainingProbe:
  """The probe suite of one run: its sets (built at construction) and a float32 copy of the model
  whose weights each call replaces."""

  def __init__(self, config: RunConfig, workdir: str, mcfg: ModelConfig):
    self.tasks = sets_lib.parse_tasks(config.probe_tasks, "config.probe_tasks")
    log = print if jax.process_index() == 0 else (lambda _: None)
    self.sets = sets_lib.build_sets(
      self.tasks, config.probe_set, cache_dir(config, workdir), config.seed, log=log
    )
    self.cfg = probe_config(config)
    self.model = create_model(mcfg.replace(dtype="float32"), seed=config.seed)
    self._extract = features.model_layers(self.model.backbone, config.probe_batch)

  def __call__(self, params: Any) -> tuple[dict[str, float], float]:
    """(scores, seconds) of the parameters ``params`` (the train state's, sharded anyhow)."""
    began = time.perf_counter()
    host = multihost_utils.process_allgather(params, tiled=True)  # numpy, whole, on every host
    state = nnx.state(self.model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: np.asarray(x, np.float32), host))
    nnx.update(self.model, state)
    report = run.probe({"model": self._extract}, self.sets, self.cfg)
    return scores(report), time.perf_counter() - began
