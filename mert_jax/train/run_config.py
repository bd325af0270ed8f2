"""The typed boundary of a training run: the recipe's ConfigDict (configs/mert.py, with its
command-line overrides) becomes one frozen ``RunConfig`` here, once, and is validated here, once;
the trainer, its state, its input and its optimizer read typed fields from then on.

``RunConfig`` mirrors the recipe's tree (``run.total_steps``, ``run.data.dir``,
``run.optimizer.lr``, ``run.model`` a ``ModelConfig``, ``run.objective`` an ``ObjectiveConfig``),
so a field has one name from the command line to the code. The recipe keeps every default and its
help text (the comment beside it); these classes hold the types. ``recorded`` keeps the recipe as
JSON, which ``WORKDIR/config.json`` records and later runs are compared with.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from mert_jax import recipe, sharding
from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.objective import target_stats_file
from mert_jax.train import loop_config
from mert_jax.train.distributed import Timeouts


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with warm-up and linear decay (optim.py); configs/mert.py documents each field."""

  lr: float
  b1: float
  b2: float
  eps: float
  weight_decay: float
  weight_decay_on: str
  warmup_steps: int
  clip_norm: float
  grad_accum_steps: int


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the training data comes from and how it is streamed (input.py)."""

  dir: str | None
  groups: int
  shuffle_window: int
  train_shards: int
  default_minutes: float
  on_state_mismatch: str


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One training run, typed and validated (``from_config_dict``); field names and meanings are
  the recipe's (``python -m mert_jax.cli.train --config=RECIPE --list-config``)."""

  variant: str
  seed: int
  model: ModelConfig
  objective: ObjectiveConfig
  optimizer: OptimizerConfig
  data: DataConfig
  distributed: Timeouts
  batch_size: int
  crop_samples: int
  total_steps: int
  mesh: tuple[int, ...]
  rules: tuple[tuple[str, Any], ...]
  num_devices: int
  log_every: int
  eval_every: int
  eval_batches: int
  eval_picture_clips: int
  checkpoint_every: int
  keep_last: int
  keep_every: int
  preemption_check_every: int
  max_nonfinite_steps: int
  restore_step: int | None
  profile_steps: str
  health_clips: int
  health_min_rank: float
  health_prior_patience: int
  probe_every: int
  probe_tasks: str
  probe_set: str
  probe_max_epochs: int
  probe_lrs: tuple[float, ...]
  probe_batch: int
  probe_cache_dir: str | None
  init_from: str | None
  init_from_step: int | None
  allow_config_change: str
  recorded: dict[str, Any] = dataclasses.field(repr=False, compare=False)

  def replace(self, **changes: Any) -> RunConfig:
    """A copy with top-level fields changed; ``recorded`` follows, so config.json records it."""
    recorded = {**self.recorded, **{k: _jsonable(v) for k, v in changes.items()}}
    return dataclasses.replace(self, **changes, recorded=recorded)


def _jsonable(value: Any) -> Any:
  if dataclasses.is_dataclass(value):
    return json.loads(json.dumps(dataclasses.asdict(value)))
  return json.loads(json.dumps(value))


def _rules(rules: Any) -> tuple[tuple[str, Any], ...]:
  """ConfigDict rules (lists) -> (logical axis, mesh axis | tuple of mesh axes | None) pairs."""
  return tuple((r[0], tuple(r[1]) if isinstance(r[1], (list, tuple)) else r[1]) for r in rules)


def from_config_dict(config: RunConfig | ml_collections.ConfigDict) -> RunConfig:
  """The run ``config`` describes (a RunConfig is returned as it is, checked when it was made),
  every field checked: the loop's counting fields
  (loop_config.py), the model and the objective (config.py), the target statistics file, the
  batch rule. Raises ValueError (one line naming the field) on the first bad one."""
  if isinstance(config, RunConfig):
    return config
  loop_config.check(config)
  model, objective = recipe.model_config_from(config), recipe.objective_config_from(config)
  if objective.target_stats:
    target_stats_file.check(objective.target_stats, model, objective)
  rules = _rules(config.rules)
  sharding.batch_mesh_axes(rules)
  recorded = json.loads(config.to_json_best_effort())
  typed = {
    f.name: recorded[f.name]
    for f in dataclasses.fields(RunConfig)
    if f.name not in ("model", "objective", "optimizer", "data", "distributed", "recorded")
  }
  typed.update(
    mesh=tuple(typed["mesh"]),
    rules=rules,
    probe_lrs=tuple(float(x) for x in typed["probe_lrs"]),
  )
  return RunConfig(
    model=model,
    objective=objective,
    optimizer=OptimizerConfig(**recorded["optimizer"]),
    data=DataConfig(**recorded["data"]),
    distributed=Timeouts.from_config(recorded["distributed"]),
    recorded=recorded,
    **typed,
  )
