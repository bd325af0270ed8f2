"""MERT pretraining recipes as ml_collections configs: ``configs/mert.py:VARIANT``.

  python -m mert_jax.cli.train --config=configs/mert.py:95m --workdir=DIR
  python -m mert_jax.cli.train --config=95m --list-config      # every field, its value and meaning

Variants: ``tiny`` (CPU tests), ``small`` (the CPU probing experiment, docs/probing.md),
``small_rq`` (``small`` with BEST-RQ targets, the log-CQT target and no mixup: the learning
experiment, benchmarks/learning.py), ``95m`` (MERT-v1-95M), ``330m`` (MERT-v1-330M), ``1b``,
``95m_long`` (the 95M continued on 30 s crops from a 5 s checkpoint: docs/whole_songs.md) and
``tiny_long`` (its CPU stand-in).
Every model/objective field and its default is documented once, in mert_jax/config.py; this file
holds only what a recipe changes. The comment beside (or right above) each field is its help text
(``--help``, ``--list-config``; mert_jax/cli/config_help.py reads it). Recipes at a glance
(spec §4):

  95m : post-LN, lr 5e-4, warm-up 32k, linear decay to 0 at 400k, clip 10,
        5 s crops (120,000 samples)
  330m: pre-LN, attention relaxation (a no-op, see attention.py), lr 1.5e-3, clip 1.0,
        8-step gradient accumulation, 5.12 s crops (122,880 samples), mixup segments up to 1.5 s
"""

from __future__ import annotations

import ml_collections

from data_pipeline.audio_format import SAMPLE_RATE
from mert_jax.config import MODEL_SIZES, ObjectiveConfig
from mert_jax.recipe import dataclass_to_config_dict as _dict
from mert_jax.sharding import DEFAULT_RULES

# What get_config takes (mert_jax/recipe.py checks it): the model sizes, plus recipes that reuse a
# size with other targets (variant -> its model size).
RECIPE_SIZES = {
  **{size: size for size in MODEL_SIZES},
  "small_rq": "small",
  "95m_long": "95m",
  "tiny_long": "tiny",
}
VARIANTS = tuple(RECIPE_SIZES)


# The recipes as data: each variant's fields that differ from the defaults of get_config, as dotted
# names (spec §4 for the published ones; [design choice] where the spec says nothing). A variant
# may extend another (EXTENDS): the other's overrides first, then its own.
_LARGE = {  # what the 330M and the 1B share
  "optimizer.clip_norm": 1.0,
  "optimizer.grad_accum_steps": 8,
  "batch_size": 3584,  # 7 x 64 GPUs x 8 accumulation steps
  "crop_samples": 512 * SAMPLE_RATE // 100,  # 5.12 s (122,880 samples)
  "objective.mixup_max_len": 3 * SAMPLE_RATE // 2,  # 1.5 s
}
RECIPES: dict[str, dict[str, object]] = {
  "95m": {},  # the defaults below are MERT-v1-95M's
  "330m": {**_LARGE, "optimizer.lr": 1.5e-3},
  # between the 330M's 1.5e-3 and a smaller step for 3x width/depth [design choice]
  "1b": {**_LARGE, "optimizer.lr": 1e-3},
  # The CPU experiment of docs/probing.md: under an hour on two cores (0.32 steps/s measured).
  "small": {
    "total_steps": 1000,
    "batch_size": 16,
    "crop_samples": 3 * SAMPLE_RATE,  # 3 s
    "optimizer.warmup_steps": 100,
    "optimizer.lr": 1e-3,  # pre-LN at 4 x 256: a short warm-up to a large step [design choice]
    "optimizer.clip_norm": 1.0,
    "model.codebook_size": 256,  # a k-means teacher of 8 x 256 codes on the hour of music
    "log_every": 25,
    "eval_every": 200,
    "eval_batches": 4,
    "checkpoint_every": 200,
    "keep_every": 200,  # every checkpoint stays: docs/probing.md probes each one
  },
  # The learning experiment's recipe (docs/probing.md, benchmarks/learning.py): BEST-RQ codes
  # computed in the step, the log-standardised CQT target (both read the corpus statistics of
  # objective.target_stats, written by python -m mert_jax.objective.target_stats), no mixup (at
  # 3 s crops MERT's segments cover most of the clip).
  "small_rq": {
    "objective.targets": "bestrq",
    "objective.cqt_target": "log_standardised",
    "objective.mixup_prob": 0.0,
  },
  # Long context (docs/whole_songs.md): 30 s crops, continued from a 5 s checkpoint
  # (--config.init_from=WORKDIR_5S), attention blockwise in the step (memory linear in the crop).
  # [design choices: 4 crops per TPU v4 chip, the most that fit (compile_check: 27.3 GiB of 32 at
  # 4, 34.2 at 5; docs/whole_songs.md); a tenth of MERT-95M's peak rate for a continuation; mixup
  # segments the same fraction of the crop as 0.5-1 s of 5 s]
  "95m_long": {
    "crop_samples": 30 * SAMPLE_RATE,  # 30 s (720,000 samples, 2,249 frames)
    "model.attention_blockwise_from": 2048,  # frames: 30 s crops take the blockwise path
    "objective.mixup_crop_fraction": 0.2,
    "optimizer.lr": 5e-5,
    "optimizer.warmup_steps": 1000,
    "total_steps": 50_000,
    "batch_size": 128,  # a v4-64 at 4 crops per chip: 3,840 s of audio per step (MERT-95M: 5,120)
  },
  "tiny_long": {  # the long-context chain on CPU
    "batch_size": 2,
    "total_steps": 4,
    "optimizer.warmup_steps": 1,
    "optimizer.lr": 1e-4,
    "model.codebook_size": 64,  # the tiny recipe's teacher
    "log_every": 1,
    "eval_every": 0,
    "checkpoint_every": 2,
  },
  "tiny": {  # CPU tests
    "total_steps": 200,
    "batch_size": 8,
    "crop_samples": 2 * SAMPLE_RATE,  # 2 s (the CQT needs >= 1.05 s)
    "optimizer.warmup_steps": 20,
    "optimizer.lr": 2e-3,
    "model.codebook_size": 64,  # the embedded k-means teacher fits 64 codes in seconds on CPU
    "log_every": 10,
    "eval_every": 50,
    "eval_batches": 2,
    "checkpoint_every": 50,
    "objective.mixup_min_len": SAMPLE_RATE // 10,  # 0.1 s
    "objective.mixup_max_len": SAMPLE_RATE // 5,  # 0.2 s
  },
}
EXTENDS = {"small_rq": "small", "tiny_long": "95m_long"}  # variant -> the variant it builds on


def get_config(variant: str = "95m") -> ml_collections.ConfigDict:
  variant = variant.lower()
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.variant = variant  # the variant's name (one of VARIANTS), shown in the start-up line
  c.seed = 1337  # reference seed: initial parameters, data order, dropout, masking and mixup
  c.model = _dict(MODEL_SIZES[RECIPE_SIZES[variant]])  # the network (ModelConfig, config.py)
  c.objective = _dict(ObjectiveConfig())  # masked prediction (ObjectiveConfig, mert_jax/config.py)
  c.optimizer = ml_collections.ConfigDict(
    dict(
      lr=5e-4,  # peak learning rate
      b1=0.9,  # Adam beta1
      b2=0.98,  # Adam beta2
      eps=1e-6,  # Adam epsilon
      weight_decay=0.01,  # decoupled, on every parameter (the reference's choice)
      warmup_steps=32_000,  # linear warm-up, then linear decay to 0 at total_steps
      clip_norm=10.0,  # global-norm gradient clipping
      grad_accum_steps=1,  # micro-batches per update
    )
  )
  c.optimizer.weight_decay_on = "all"  # "all" (the reference) or "matrices" (ndim >= 2 only)
  c.total_steps = 400_000  # optimizer updates of the whole run (the schedule ends here)
  c.batch_size = 1024  # global clips per update (95M YAML: 16 x 64 GPUs)
  c.crop_samples = 5 * SAMPLE_RATE  # samples per training clip (120,000 = 5 s at 24 kHz)
  # --- initial weights (mert_jax/train/init_from.py; docs/continue_pretraining.md) ---
  c.init_from = ml_collections.config_dict.placeholder(str)  # HF folder or hub id, model
  # checkpoint, training workdir or fairseq .pt; unset: random init. Optimizer and step start fresh.
  c.init_from_step = ml_collections.config_dict.placeholder(int)  # workdir source: this step
  # Resume from this checkpoint of the workdir instead of the newest that verifies; the newer ones
  # are moved to WORKDIR/checkpoints_set_aside (mert_jax/train/checkpoints.py). Drop it afterwards.
  c.restore_step = ml_collections.config_dict.placeholder(int)
  # --- devices ---
  c.mesh = [-1, 1, 1]  # (data, fsdp, tensor); -1 = the remaining devices
  c.num_devices = 0  # use the first N devices (0 = all); tests compare meshes in one process
  c.rules = [list(r) for r in DEFAULT_RULES]  # logical axis -> mesh axes (mert_jax/sharding.py)
  # --- data ---
  c.data = ml_collections.ConfigDict(
    dict(
      # a data_pipeline.prepare folder (local or gs://); unset: the embedded default corpus is
      # prepared under WORKDIR/data
      dir=ml_collections.config_dict.placeholder(str),
      shuffle_window=1024,  # crops in the reader's window shuffle
      # train on the first N shards of the train split only (0 = all): the data-size axis of a
      # scaling experiment (prepare shuffles segments into shards, so a prefix samples the corpus)
      train_shards=0,
      on_state_mismatch="error",  # data-iterator state not restorable (e.g. other process count):
      # "error" stops; "restart" starts a fresh, differently seeded stream
      default_minutes=8.0,  # embedded default corpus: minutes of music to prepare
      groups=0,  # fixed data groups making up each global batch (0 = process count);
      # equal groups give the same global batches on any process count
    )
  )
  # --- loop ---
  c.log_every = 50  # steps between metric lines (metrics.jsonl, TensorBoard, console)
  c.eval_every = 1000  # steps between evaluations on the valid split (0 = never)
  c.eval_batches = 8  # batches per evaluation
  c.eval_picture_clips = 1  # validation clips pictured in TensorBoard at each evaluation (0 = none)
  c.checkpoint_every = 1000  # steps between (async) checkpoints; one is also written at the end
  c.keep_last = 3  # checkpoints kept ...
  c.keep_every = 50_000  # ... plus every checkpoint at a multiple of this step (0 = none)
  # several processes without JAX's preemption sync manager: steps between SIGTERM agreements
  # (host syncs); with it (jax.distributed's default) every step is checked at no cost
  c.preemption_check_every = 10
  c.max_nonfinite_steps = 20  # consecutive non-finite steps (skipped updates) before stopping
  # several processes: seconds (mert_jax/train/distributed.py Timeouts, fail_fast.py)
  c.distributed = ml_collections.ConfigDict(
    dict(
      peer_timeout_s=45.0,  # a process silent this long is declared lost by every other
      init_timeout_s=300,  # start-up: how long every process waits for the others to connect
      shutdown_timeout_s=60,  # a normal end: how long the service waits for every process
      barrier_timeout_s=3600,  # how long a process waits for the others to compile the step
    )
  )
  # a jax.profiler trace of steps A to B (inclusive) in WORKDIR/profile ("" = none), "A,B"
  c.profile_steps = ""
  # --- representation health at each evaluation (mert_jax/train/health.py) ---
  c.health_clips = 32  # validation clips whose time-pooled features' effective rank is measured
  c.health_min_rank = 3.0  # warn when a layer's effective rank falls below this
  c.health_prior_patience = 3  # warn after this many evaluations not beating the training prior
  # --- in-training probe (mert_jax/train/probing.py, docs/probing.md) ---
  c.probe_every = 0  # steps between probes of the current weights (0 = never); also the last step
  c.probe_tasks = "pitch,instrument"  # comma-separated: pitch, instrument, key, beat
  c.probe_set = "tiny"  # probe set size: tiny, small or full (rendered once, at start-up)
  c.probe_max_epochs = 20  # probe head epochs per learning rate (the probe command's default: 100)
  c.probe_lrs = [1e-3]  # probe head learning rates (the command's: MARBLE's grid of 5)
  c.probe_batch = 8  # clips per feature call
  # where the probe sets are rendered; unset: WORKDIR/probe_cache (a bucket workdir: the temp dir)
  c.probe_cache_dir = ml_collections.config_dict.placeholder(str)
  # Resuming a workdir with other model / objective / optimizer / data fields is refused; list the
  # dotted fields to change deliberately, "optimizer.lr,model.dropout" (train/recorded_config.py)
  c.allow_config_change = ""
  for step in _chain(variant):
    for field, value in RECIPES[step].items():
      _set(c, field, value)
  return c


def _chain(variant: str) -> list[str]:
  """The variants whose overrides make ``variant``, the one it extends first."""
  chain = [variant]
  while EXTENDS.get(chain[0]):
    chain.insert(0, EXTENDS[chain[0]])
  return chain


def _set(c: ml_collections.ConfigDict, dotted: str, value) -> None:
  """Sets an existing field (a recipe naming a field the defaults lack is a bug, not a field)."""
  *path, leaf = dotted.split(".")
  for part in path:
    c = c[part]
  if leaf not in c:
    raise KeyError(f"configs/mert.py: RECIPES names {dotted!r}, which is no field of the config")
  c[leaf] = value
