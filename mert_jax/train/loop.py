"""MERT pretraining: one code path from a laptop CPU to a TPU pod (command line:
mert_jax/cli/train.py).

``train(config, workdir)`` reads top to bottom in data-flow order: workdir and logging -> step
functions and sharded state (state.py) -> input (input.py) -> restore (checkpoints.py) -> the loop:
step, log, evaluate, checkpoint, stop on preemption. Re-running the same call resumes from the
workdir's newest checkpoint that verifies (checkpoints.py), or from ``restore_step``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from data_pipeline import reader as reader_lib
from mert_jax import sharding
from mert_jax.model.flops import train_flops_per_clip
from mert_jax.objective.loss import check_label_values
from mert_jax.train import (
  checkpoints,
  distributed,
  evaluate,
  init_from,
  loop_config,
)
from mert_jax.train import (
  input as input_lib,
)
from mert_jax.train import (
  state as state_lib,
)
from mert_jax.train import (
  workdir as workdir_lib,
)
from mert_jax.train.metrics import MetricWriter, peak_flops_per_device


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) training; returns {"metrics": last logged metrics, "state": final train
  state, "train_step_compiles": how many times the step was compiled (1 unless shapes or
  shardings changed)}. What the run holds (the workdir's lock) is released when it returns or
  raises."""
  loop_config.check(config)  # one-line ConfigError before anything is written, built or compiled
  with contextlib.ExitStack() as stack:
    return _train(config, workdir, stack)


def _train(
  config: ml_collections.ConfigDict, workdir: str, stack: contextlib.ExitStack
) -> dict[str, Any]:
  # ############################################################ workdir, logging
  process = jax.process_index()
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  # One trainer per workdir, and the config checked against the one its checkpoints were trained
  # under, before anything is written (workdir.py).
  claim = stack.enter_context(workdir_lib.Claim(workdir, config))
  writer = MetricWriter(workdir, enabled=process == 0)
  preempted = distributed.Preempted()

  # ############################################################ mesh, shardings, jitted steps
  setup = state_lib.build(config)
  mcfg, mesh, accum = setup.mcfg, setup.mesh, setup.grad_accum_steps
  groups = config.data.groups or jax.process_count()
  state_lib.check_batch_layout(config, mesh, groups)
  if process == 0:
    logging.info(
      "mesh %s; parameter shardings:\n%s",
      dict(mesh.shape),
      "\n".join(sharding.describe(setup.param_shardings)),
    )

  # ############################################################ pretrained weights
  pretrained = None
  resuming_from = checkpoints.latest_step(workdir) if config.init_from else None
  if config.init_from and resuming_from is None:  # checked on the host, before anything compiles
    pre = init_from.load_pretrained(
      config.init_from, mcfg, step=config.init_from_step, seed=config.seed
    )
    init_from.check_compatible(pre, mcfg, setup.abstract_state["params"])
    pretrained = init_from.initial_params(pre, setup.abstract_state["params"])
    if process == 0:
      init_from.record(workdir, pre, config.init_from_step)
      print(f"init_from {config.init_from} ({pre.kind}): {pre.note}", flush=True)
  elif config.init_from and process == 0:
    print(
      f"resuming from checkpoint {resuming_from}; init_from applies to a fresh run only", flush=True
    )

  # ############################################################ input
  data_dir = input_lib.resolve_data_dir(config, mcfg, workdir)
  manifest = reader_lib.load_manifest(data_dir)
  input_lib.check_manifest(manifest, mcfg, data_dir)
  rcfg = input_lib.reader_config(config, groups)
  dataset, dropped = input_lib.train_stream(data_dir, rcfg, groups)
  data_iter = iter(dataset)

  # ############################################################ state: restore or initialise
  ckpts = checkpoints.RunCheckpoints(
    workdir, keep_last=config.keep_last, keep_every=config.keep_every, model_config=mcfg
  )
  stack.callback(ckpts.abandon)  # however the run ends, orbax's threads end before the process
  # The newest checkpoint that verifies (or restore_step); None: a fresh run.
  restored = ckpts.restore(setup.abstract_state, setup.state_shardings, step=config.restore_step)
  start = restored.step if restored else None
  if restored is None:
    state = setup.init(pretrained)
  else:
    state = restored.state
    try:
      ckpts.restore_data_iter(start, data_iter, data_groups=groups)
    except checkpoints.DataStateMismatch as e:
      if config.data.on_state_mismatch != "restart":
        raise checkpoints.CheckpointError(
          f"{e} Re-run with the same number of processes, or pass "
          "--config.data.on_state_mismatch=restart to continue with a fresh data stream "
          "(no exact resume)."
        ) from e
      logging.warning("%s Continuing with a fresh data stream seeded with (seed, step).", e)
      rcfg = dataclasses.replace(rcfg, seed=input_lib.restart_seed(config.seed, start))
      dataset, dropped = input_lib.train_stream(data_dir, rcfg, groups)
      data_iter = iter(dataset)
    logging.info("resumed from step %d", start)
  step = int(start or 0)
  seed_key = jax.random.key(config.seed)
  if step >= config.total_steps:
    if process == 0:
      print(f"the run is already at step {step} (total_steps={config.total_steps})", flush=True)
    ckpts.close()
    writer.close()
    return {"metrics": {}, "state": state, "train_step_compiles": 0}
  writer.resume(step)  # the steps after `step` are replayed: their old metric rows go

  # ############################################################ compile
  # Ahead of the first step, so that a SIGTERM arriving meanwhile (restoring, compiling: minutes
  # at scale) stops the run before any step: at most one compile late, which cannot be cut short.
  first = next(data_iter)
  batches = itertools.chain([first], data_iter)
  if not preempted.agreed(step, 1, now=True):
    setup.train_step.lower(state, input_lib.global_batch(first, accum, mesh), seed_key).compile()
  if preempted.agreed(step, 1, now=True):
    if process == 0:
      print(f"SIGTERM before the first step: exiting at step {step}, nothing to save", flush=True)
    ckpts.close()
    writer.close()
    return {"metrics": {}, "state": state, "train_step_compiles": 1}

  # ############################################################ loop
  flops_per_step = train_flops_per_clip(mcfg, config.crop_samples) * config.batch_size
  peak = peak_flops_per_device(setup.devices[0])
  peak = peak * len(setup.devices) if peak else None
  last_log_time, last_log_step, last = time.perf_counter(), step, {}
  while step < config.total_steps:
    local = next(batches)
    check_label_values(local["labels"], mcfg)
    state, metrics = setup.train_step(state, input_lib.global_batch(local, accum, mesh), seed_key)
    ckpts.poll()  # a failed asynchronous save stops the run here, naming the checkpoint
    step += 1
    is_last = step == config.total_steps

    if step % config.log_every == 0 or is_last:
      now = time.perf_counter()
      dt = (now - last_log_time) / max(step - last_log_step, 1)
      last_log_time, last_log_step = now, step
      last = {
        "step": step,
        **{k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()},
        "clips_per_s": config.batch_size / dt,
        "step_time_s": dt,
        "nonfinite_total": int(jax.device_get(state["nonfinite_total"])),
        "dropped_short_records": sum(d.dropped_records for d in dropped),
      }
      if peak:
        last["mfu"] = flops_per_step / dt / peak
      writer.write(step, last)
      claim.heartbeat(step)
      if int(jax.device_get(state["nonfinite_run"])) >= config.max_nonfinite_steps:
        ckpts.wait_until_finished()
        raise RuntimeError(
          f"{config.max_nonfinite_steps} consecutive non-finite steps at step {step}: stopping; "
          + ckpts.last_good_note()
        )

    if (
      config.eval_every
      and (step % config.eval_every == 0 or is_last)
      and "valid" in manifest["splits"]
    ):
      scores = evaluate.evaluate(setup, state["params"], data_dir, manifest, rcfg)
      writer.write(step, jax.tree.map(lambda v: np.asarray(v).tolist(), scores), prefix="eval_")

    stop = preempted.agreed(step, config.preemption_check_every)
    if step % config.checkpoint_every == 0 or is_last or stop:
      checkpoints.save(ckpts, step, state, data_iter, data_groups=groups)
    if stop:
      logging.warning("SIGTERM: checkpoint %d written; exiting", step)
      break

  ckpts.close()
  writer.close()
  # Static shapes and fixed shardings: the step compiles once. More means a shape, dtype or sharding
  # changed between steps (each recompile costs minutes at scale).
  compiles = setup.train_step._cache_size()  # pylint: disable=protected-access
  if compiles > 1:
    logging.warning("the train step was compiled %d times; expected once", compiles)
  return {"metrics": last, "state": state, "train_step_compiles": compiles}
