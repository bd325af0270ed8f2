"""The training loop's counting fields (cadences, retention, length), checked before anything is
written, built or compiled: a bad value is one ``ConfigError`` line naming the field, not a crash
after minutes of compilation."""

from __future__ import annotations

import ml_collections

# field: (smallest allowed value, what it counts)
FIELDS = {
  "total_steps": (0, "steps of the run; 0 loads, checks and initialises, then stops"),
  "log_every": (1, "steps between metric lines"),
  "checkpoint_every": (1, "steps between checkpoints"),
  "eval_every": (0, "steps between evaluations (0 = never)"),
  "eval_batches": (1, "batches per evaluation"),
  "eval_picture_clips": (0, "validation clips pictured at each evaluation (0 = none)"),
  "preemption_check_every": (1, "steps between SIGTERM agreements"),
  "keep_last": (1, "checkpoints kept"),
  "keep_every": (0, "step multiple whose checkpoints are kept (0 = none)"),
  "max_nonfinite_steps": (1, "consecutive non-finite steps before stopping"),
  "health_clips": (0, "validation clips whose feature rank is measured (0 = none)"),
  "health_prior_patience": (1, "evaluations at the prior accuracy before warning"),
  "probe_every": (0, "steps between in-training probes (0 = never)"),
  "probe_max_epochs": (1, "probe head epochs per learning rate"),
  "probe_batch": (1, "clips per probe feature call"),
}
OPTIONAL = {"restore_step": (0, "the checkpoint to resume from")}  # unset: None


class ConfigError(ValueError):
  """A config field the loop cannot run with; the message names the field."""


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first loop field that is not an integer in its range."""
  for name, (low, what) in {**FIELDS, **OPTIONAL}.items():
    if not hasattr(config, name):
      continue
    value = getattr(config, name)
    if value is None and name in OPTIONAL:
      continue
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ConfigError(f"{name}={value!r}: must be an integer >= {low} ({what})")
  if getattr(config, "probe_every", 0):
    _check_probe(config)
  profile_range(config)


def profile_range(config: ml_collections.ConfigDict) -> tuple[int, int] | None:
  """``profile_steps`` ("A,B": trace steps A to B inclusive, 1 <= A <= B; "" none) as (A, B)."""
  text = str(getattr(config, "profile_steps", "") or "").strip()
  if not text:
    return None
  parts = text.split(",")
  if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
    raise ConfigError(f"profile_steps={text!r}: give two steps A,B (trace steps A to B), or ''")
  first, last = (int(p) for p in parts)
  if not 1 <= first <= last:
    raise ConfigError(f"profile_steps={text!r}: need 1 <= A <= B")
  return first, last


def _check_probe(config: ml_collections.ConfigDict) -> None:
  """The in-training probe's names: known tasks (not custom, which needs a folder), a set size,
  a non-empty learning-rate list."""
  from mert_jax.probe import sets  # pylint: disable=g-import-not-at-top

  try:
    tasks = sets.parse_tasks(config.probe_tasks, "probe_tasks")
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if "custom" in tasks:
    raise ConfigError("probe_tasks: custom is for the probe command (it needs --data)")
  if config.probe_set not in sets.SIZES:
    raise ConfigError(f"probe_set={config.probe_set!r}: choose one of {', '.join(sets.SIZES)}")
  if not list(config.probe_lrs):
    raise ConfigError("probe_lrs: give at least one learning rate")
