"""The config a workdir's checkpoints were trained under, and the changes a resume may make to it.

Recorded config (``WORKDIR/config.json``)
  A fresh run (no complete checkpoint yet) writes its config there before anything else. A fresh
  run may rewrite it with another config (nothing was trained under the old one yet: a run that
  failed before its first checkpoint), and says so in one line. Every later invocation is compared
  with it, field by field (dotted names); each difference is of one kind:

  ==========  ===========================================================  ======================
  kind        fields (the sets RUN, PLACEMENT and LOOP below name each)      on resume
  ==========  ===========================================================  ======================
  run         what the checkpoints were trained under: variant, seed,      refused, unless named
              model.* shapes and numerics, objective.*, optimizer.*,       in
              batch and crop, the data stream; and any field the recorded  allow_config_change
              config lacks or has in excess (code changed since)
  placement   where and how the same computation runs: mesh, rules,        allowed
              num_devices, attention and positional-conv kernels, remat
  loop        how long and what the run does beside training: steps,       allowed
              logging, evaluation, health checks, in-training probes,
              checkpoint cadence, init_from, restore_step, the job's
              timeouts, profiling
  ==========  ===========================================================  ======================

  Every field of the recipe is named in exactly one set (tests/train/test_workdir.py fails on a
  field that is in none); a field the sets do not know (a recorded config from other code) is of
  kind ``run``, so it is protected. Note that total_steps also ends the learning-rate decay
  (linear to 0 at total_steps): extending a run changes the rate of every later step; it is a loop
  setting because that is what extending means.

  A refused change stops the run with one line (``ConfigChangeRefused``) listing each field with
  both values; ``--config.allow_config_change=FIELD1,FIELD2`` (exact dotted names) lets those
  through. Allowed changes are printed in one line and recorded, with the step they take effect at
  (restore_step, else the newest checkpoint found), in ``WORKDIR/config_changes.jsonl``;
  ``config.json`` then becomes the new config. Both are written once the newest checkpoint is one
  this run saved (orbax's save timestamp; looked at by a heartbeat, at most once a minute, and when
  ``train`` ends), so ``config.json`` describes the latest checkpoint: a run that fails before its
  first checkpoint (say, an allowed change the checkpoint cannot be restored into) leaves both
  files as they were, and ``extract`` / ``convert`` keep rebuilding the model that was trained. A
  run killed outright after its first checkpoint leaves the record to the next run, which sees the
  same changes (and needs the same permission). Only process 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import ml_collections
from etils import epath

from mert_jax import workdir_files
from mert_jax.files.atomic import atomic_write_text
from mert_jax.terminal.progress import utc_text
from mert_jax.train.run_config import RunConfig

# Fields by kind (the module table). A field in none of them is of kind "run".
RUN = frozenset(
  """variant seed batch_size crop_samples
  data.dir data.groups data.shuffle_window data.train_shards data.default_minutes
  model.activation_dropout model.attention_dropout model.attention_relax model.codebook_size
  model.conv_bias model.conv_layers model.cqt_bins model.dropout model.dropout_input model.dtype
  model.extractor_mode model.feature_grad_mult model.ffn_size model.final_dim model.hidden_size
  model.layer_norm_eps model.layer_norm_first model.layerdrop model.num_codebooks model.num_heads
  model.num_layers model.num_special_labels model.pos_conv_groups model.pos_conv_kernel
  model.sample_rate
  objective.bestrq_dim objective.bestrq_input objective.bestrq_mels objective.bestrq_n_fft
  objective.bestrq_norm objective.bestrq_seed objective.bestrq_stack objective.codebook_weights
  objective.cqt_bins_per_octave objective.cqt_fmin objective.cqt_method objective.cqt_target
  objective.cqt_unmasked_weight objective.cqt_weight objective.feature_pen_weight
  objective.logit_temp objective.mask_length objective.mask_prob objective.min_masks
  objective.mixup_crop_fraction objective.mixup_max_len objective.mixup_max_segments
  objective.mixup_min_len objective.mixup_prob objective.mixup_volume objective.target_stats
  objective.targets
  optimizer.b1 optimizer.b2 optimizer.clip_norm optimizer.eps optimizer.grad_accum_steps
  optimizer.lr optimizer.warmup_steps optimizer.weight_decay optimizer.weight_decay_on""".split()
)


PLACEMENT = frozenset(
  """mesh rules num_devices
  model.attention_impl model.attention_block model.attention_blockwise_from model.pos_conv_impl
  model.remat model.remat_policy""".split()
)


LOOP = frozenset(
  """total_steps log_every eval_every eval_batches eval_picture_clips checkpoint_every keep_last
  keep_every preemption_check_every max_nonfinite_steps init_from init_from_step restore_step
  data.on_state_mismatch allow_config_change profile_steps
  health_clips health_min_rank health_prior_patience
  probe_every probe_tasks probe_set probe_max_epochs probe_lrs probe_batch probe_cache_dir
  distributed.peer_timeout_s distributed.init_timeout_s distributed.shutdown_timeout_s
  distributed.barrier_timeout_s""".split()
)


ABSENT = "<absent>"


class ConfigChangeRefused(ValueError):
  """This run's config changes fields that shape the model or the data stream of a workdir that
  already holds checkpoints."""


@dataclasses.dataclass(frozen=True)
class Change:
  """One differing field: its dotted name, the recorded and the new value (``ABSENT`` when one
  side lacks it) and its kind (``classify``)."""

  field: str
  old: Any
  new: Any
  kind: str

  def __str__(self) -> str:
    show = lambda v: v if v is ABSENT else repr(v)
    return f"{self.field} {show(self.old)} -> {show(self.new)}"


def classify(field: str) -> str:
  """The kind of a dotted field name: run, placement or loop (see the module table); a field in
  none of the sets is of kind run."""
  if field in PLACEMENT:
    return "placement"
  if field in LOOP:
    return "loop"
  return "run"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def _same(a: Any, b: Any) -> bool:
  """Equal as JSON values: 3 == 3.0, but True != 1."""
  numbers = (int, float)
  if isinstance(a, numbers) and isinstance(b, numbers):
    return isinstance(a, bool) == isinstance(b, bool) and a == b
  return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
  """The fields (dotted, sorted) whose values differ between two configs as JSON dicts."""
  a, b = flatten(old), flatten(new)
  return [
    Change(f, a.get(f, ABSENT), b.get(f, ABSENT), classify(f))
    for f in sorted(a.keys() | b.keys())
    if f not in a or f not in b or not _same(a[f], b[f])
  ]


def allowed_fields(config: RunConfig | ml_collections.ConfigDict) -> set[str]:
  """The dotted names in ``config.allow_config_change`` (comma-separated)."""
  text = getattr(config, "allow_config_change", "") or ""
  return {f.strip() for f in text.split(",") if f.strip()}


def as_json(config: RunConfig | ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as ``config.json`` holds it."""
  recorded = getattr(config, "recorded", None)  # a RunConfig keeps its recipe's JSON
  return recorded if recorded is not None else json.loads(config.to_json_best_effort())


def _config_path(workdir: str) -> epath.Path:
  return epath.Path(workdir) / workdir_files.CONFIG


def read_config(workdir: str) -> dict[str, Any] | None:
  """The recorded config, or None when the workdir has none."""
  path = _config_path(workdir)
  if not path.exists():
    return None
  try:
    recorded = json.loads(path.read_text())
  except ValueError as e:
    raise ConfigChangeRefused(
      f"{path} is not valid JSON ({e}): cannot check this run's config against the checkpoints; "
      f"restore the file, or delete it to record this run's config unchecked"
    ) from None
  if not isinstance(recorded, dict):
    raise ConfigChangeRefused(f"{path} does not hold a config (a JSON object)")
  return recorded


def write_config(workdir: str, config: RunConfig | ml_collections.ConfigDict) -> None:
  atomic_write_text(_config_path(workdir), json.dumps(as_json(config), indent=2))


def check_config(
  workdir: str, config: RunConfig | ml_collections.ConfigDict, *, resume_step: int | None
) -> list[Change]:
  """Compares ``config`` with the workdir's recorded config; returns the allowed changes, to be
  recorded (``record_changes``) once this run has written a checkpoint.

  ``resume_step`` None (no checkpoint yet): (re)writes ``config.json`` and returns []. Otherwise
  a ``run`` change not named in ``allow_config_change`` raises ``ConfigChangeRefused`` (one line,
  every such field with both values); nothing is written. Call on process 0 only."""
  recorded = read_config(workdir)
  path = _config_path(workdir)
  if resume_step is None:
    if recorded is not None and (changes := config_diff(recorded, as_json(config))):
      print(
        f"{path}: no checkpoint yet, so nothing was trained under the recorded config; this "
        f"run's replaces it ({_summary(changes)})",
        flush=True,
      )
    write_config(workdir, config)
    return []
  if recorded is None:
    print(
      f"{path} is missing beside checkpoint {resume_step}: recording this run's config "
      f"(it cannot be checked against the one the checkpoints were trained under)",
      flush=True,
    )
    write_config(workdir, config)
    return []
  changes = config_diff(recorded, as_json(config))
  allow = allowed_fields(config)
  refused = [c for c in changes if c.kind == "run" and c.field not in allow]
  if refused:
    names = ",".join(c.field for c in refused)
    raise ConfigChangeRefused(
      f"{workdir} holds checkpoints up to step {resume_step} trained under another config "
      f"({path}): {'; '.join(map(str, refused))}. These shape the model or the data stream; use "
      f"a new --workdir, drop the overrides, or pass --config.allow_config_change={names} to "
      f"change them deliberately (recorded in {workdir_files.CONFIG_CHANGES})"
    )
  if changes:
    print(
      f"{workdir}: config changed at step {resume_step} ({_summary(changes)}); recorded in "
      f"{workdir_files.CONFIG_CHANGES} and {workdir_files.CONFIG} with this run's first checkpoint",
      flush=True,
    )
  return changes


def _summary(changes: list[Change]) -> str:
  return "; ".join(str(c) if c.kind == "run" else f"{c} [{c.kind}]" for c in changes)


def record_changes(
  workdir: str, config: RunConfig | ml_collections.ConfigDict, changes: list[Change], *, step: int
) -> None:
  """Appends one line {"step", "time", "changes": [{field, old, new, kind}]} to
  ``config_changes.jsonl``, then makes ``config`` the recorded config. ``kind`` is "allowed" for a
  ``run`` field let through by allow_config_change."""
  path = epath.Path(workdir) / workdir_files.CONFIG_CHANGES
  entry = {
    "step": step,
    "time": utc_text(time.time()),
    "changes": [
      {
        "field": c.field,
        "old": None if c.old is ABSENT else c.old,
        "new": None if c.new is ABSENT else c.new,
        "kind": "allowed" if c.kind == "run" else c.kind,
      }
      for c in changes
    ],
  }
  before = path.read_text() if path.exists() else ""
  atomic_write_text(path, before + json.dumps(entry) + "\n")
  write_config(workdir, config)
