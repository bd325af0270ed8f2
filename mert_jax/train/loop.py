"""MERT pretraining: one code path from a laptop CPU to a TPU pod (command line:
mert_jax/cli/train.py).

``train(config, workdir)`` reads top to bottom in data-flow order: workdir and logging -> step
functions and sharded state (state.py) -> input (input.py) -> restore (checkpoints.py) -> the loop:
step, log, evaluate, probe (probing.py), checkpoint, stop on preemption. Re-running the same call
resumes from the workdir's newest checkpoint that verifies (checkpoints.py), or from
``restore_step``. Process 0 prints a start-up summary, the compile time and a line per logged step,
evaluation and probe (console.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from data_pipeline import reader as reader_lib
from mert_jax import sharding, workdir_files
from mert_jax.checkpointing import workdir_steps
from mert_jax.checkpointing.errors import CheckpointError
from mert_jax.model.flops import train_flops_per_clip
from mert_jax.model.mert import tree_size
from mert_jax.objective import bestrq
from mert_jax.objective.loss import check_label_values
from mert_jax.train import (
  checkpoints,
  console,
  distributed,
  eval_pictures,
  evaluate,
  fail_fast,
  goodput,
  init_from,
  loop_config,
  probing,
  run_config,
)
from mert_jax.train import (
  health as health_lib,
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
from mert_jax.train.run_config import RunConfig

# WORKDIR/profile/process_N: jax.profiler traces of profile_steps (TensorBoard's profile tab)


def train(
  config: RunConfig | ml_collections.ConfigDict,
  workdir: str,
  *,
  clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
  """Runs (or resumes) training; returns {"metrics": last logged metrics, "probe": the last
  in-training probe's scores ({} without one), "state": final train state,
  "train_step_compiles": how many times the step was compiled (1; 0 when the run had nothing to
  do)}. What the run holds (the workdir's lock) is released when it returns or
  raises. ``clock``: seconds, for the compile time and the throughput (tests pass a fake one)."""
  # The command line passes the RunConfig it made; a recipe ConfigDict (the API, tests) becomes one
  # here. Either way every field was checked once, before anything is written, built or compiled.
  config = run_config.from_config_dict(config)
  with contextlib.ExitStack() as stack:
    return _train(config, workdir, stack, clock)


def _train(
  config: RunConfig,
  workdir: str,
  stack: contextlib.ExitStack,
  clock: Callable[[], float],
) -> dict[str, Any]:
  # ############################################################ workdir, logging
  good = goodput.Goodput(clock)  # where the wall time goes (goodput.py)
  process = jax.process_index()
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  # One trainer per workdir, and the config checked against the one its checkpoints were trained
  # under, before anything is written (workdir.py: recorded_config.py, workdir_lock.py).
  claim = stack.enter_context(workdir_lib.Claim(workdir, config))
  writer = MetricWriter(workdir, enabled=process == 0, guard=claim.check)
  preempted = distributed.Preempted()
  if process == 0:
    logging.info("preemption notices: %s", preempted.route)

  # ############################################################ mesh, shardings, jitted steps
  groups = config.data.groups or jax.process_count()
  setup = _build(config, groups)
  mcfg, accum = setup.mcfg, setup.grad_accum_steps
  pretrained, init_source = _pretrained(config, workdir, setup)  # on the host, before compiling

  # ############################################################ input
  data = _Input.open(config, workdir, setup, groups)
  if setup.ocfg.targets == "bestrq" and process == 0:  # the frozen quantizers, saved with the run
    bestrq.save(
      str(epath.Path(workdir) / workdir_files.BESTRQ), bestrq.quantizers(mcfg, setup.ocfg)
    )
  # The in-training probe's sets, rendered (or read from their cache) once, before the compile.
  probe = probing.TrainingProbe(config, workdir, mcfg) if config.probe_every else None

  # ############################################################ state: restore or initialise
  ckpts = checkpoints.RunCheckpoints(
    workdir, keep_last=config.keep_last, keep_every=config.keep_every, model_config=mcfg
  )
  stack.callback(ckpts.abandon)  # however the run ends, orbax's threads end before the process
  good.until_now("startup")
  with good.phase("restore"):
    state, start = _restore_or_init(config, setup, ckpts, data, pretrained)
  step = int(start or 0)
  seed_key = jax.random.key(config.seed)
  if step >= config.total_steps:
    if process == 0:
      print(f"the run is already at step {step} (total_steps={config.total_steps})", flush=True)
    return _ended_before_training(ckpts, writer, state, compiles=0)
  # The steps after `step` are replayed: their old metric rows go (and count as lost time).
  good.replayed(writer.resume(step), step)
  if process == 0:
    start_at = console.start_point(start, init_source)
    summary = _run_summary(config, setup, data.manifest, data.dir, workdir, start_at)
    print("\n".join(console.summary_lines(summary)), flush=True)

  # ############################################################ compile
  # Ahead of the first step, so that a SIGTERM arriving meanwhile (restoring, compiling: minutes
  # at scale) stops the run before any step: at most one compile late, which cannot be cut short.
  # The loop calls this executable: static shapes, so a batch of another shape or sharding raises
  # (TypeError) instead of silently compiling again (minutes at scale).
  good.until_now("startup")  # a fresh run's initialisation, the data position, the summary
  with good.phase("input"):
    first = next(data.iterator)
  batches = itertools.chain([first], data.iterator)
  train_step = None
  with good.phase("compile"):
    if not preempted.before_first_step(step):
      first_batch = input_lib.global_batch(first, accum, setup.batch_shardings)
      train_step = compile_train_step(setup, state, first_batch, seed_key, clock, process == 0)
    distributed.wait_for_every_process("train step compiled", config.distributed.barrier_timeout_s)
  compiles = int(train_step is not None)
  if preempted.before_first_step(step):
    if process == 0:
      print(f"SIGTERM before the first step: exiting at step {step}, nothing to save", flush=True)
    return _ended_before_training(ckpts, writer, state, compiles)

  # ############################################################ loop
  flops_per_step = train_flops_per_clip(mcfg, config.crop_samples) * config.batch_size
  peak = peak_flops_per_device(setup.devices[0])
  peak = peak * len(setup.devices) if peak else None
  pace, last, last_probe = console.Pace(step, config.total_steps, clock=clock), {}, {}
  trace = _Trace(config, workdir)
  while step < config.total_steps:
    trace.before(step + 1)
    with good.phase("input"):
      local = next(batches)
      if setup.ocfg.targets == "teacher":
        check_label_values(local["labels"], mcfg)
      batch = input_lib.global_batch(local, accum, setup.batch_shardings)
    state, metrics = train_step(state, batch, seed_key)
    ckpts.poll()  # a failed asynchronous save stops the run here, naming the checkpoint
    step += 1
    fail_fast.note_step(step)
    trace.after(step, state)
    is_last = step == config.total_steps

    if step % config.log_every == 0 or is_last:
      # One transfer, which waits for the step: the window of `pace.row` ends with the work done.
      metrics, nonfinite_total, nonfinite_run = jax.device_get(
        (metrics, state["nonfinite_total"], state["nonfinite_run"])
      )
      metrics = dict(metrics)
      code_counts = metrics.pop("code_counts")
      if data.health is not None:
        data.health.add_train_counts(code_counts)
      rate = pace.row(step)
      last = {
        "step": step,
        **{k: np.asarray(v).tolist() for k, v in metrics.items()},
        "clips_per_s": config.batch_size * rate.steps_per_s,
        "step_time_s": rate.step_time_s,
        "steps_per_s": rate.steps_per_s,
        "eta_s": rate.eta_s,
        "nonfinite_total": int(nonfinite_total),
        "dropped_short_records": sum(d.dropped_records for d in data.dropped),
      }
      if peak:
        last["mfu"] = flops_per_step * rate.steps_per_s / peak
      last.update(good.account())
      with pace.paused(), good.phase("logging"):  # the row's writes (the first imports TensorBoard)
        # A trainer that lost the workdir to another stops before writing its row (the writer's
        # guard checks the lock before every row; the heartbeat refreshes it now and then).
        claim.heartbeat(step)
        writer.write(step, last)
        if process == 0:
          print(console.step_line(step, config.total_steps, last), flush=True)
      if int(nonfinite_run) >= config.max_nonfinite_steps:
        ckpts.wait_until_finished()
        raise RuntimeError(
          f"{config.max_nonfinite_steps} consecutive non-finite steps at step {step}: stopping; "
          + ckpts.last_good_note()
        )

    if config.eval_every and (step % config.eval_every == 0 or is_last):
      jax.block_until_ready(metrics)  # the queued steps stay in the window (evaluating waits)
      with pace.paused(), good.phase("evaluation"):
        _evaluate(config, setup, state, data, writer, step, clock)

    if probe is not None and (step % config.probe_every == 0 or is_last):
      jax.block_until_ready(metrics)  # as for evaluations: the probe's time is not training's
      with pace.paused(), good.phase("probe"):
        last_probe, seconds = probe(state["params"])
        writer.write(step, last_probe, run="probe")
      if process == 0:
        print(console.probe_line(step, config.total_steps, last_probe, seconds), flush=True)

    stop = preempted.agreed(step, config.preemption_check_every)
    if step % config.checkpoint_every == 0 or is_last or stop:
      jax.block_until_ready(metrics)  # as above: saving waits for the state
      with pace.paused(), good.phase("checkpoint"):
        claim.check(step, f"writing checkpoint {step}")  # every process, before it writes
        checkpoints.save(ckpts, step, state, data.iterator, data_groups=groups)
    if stop:
      logging.warning("SIGTERM: checkpoint %d written; exiting", step)
      break

  with good.phase("checkpoint"):
    ckpts.close()  # waits for the last asynchronous save
  writer.close()
  if process == 0:
    print(goodput.summary_line(good.account()), flush=True)
  # The AOT executable cannot recompile; a compile through the jitted function (some other caller
  # of setup.train_step in this process) would show here.
  compiles += setup.train_step._cache_size()  # pylint: disable=protected-access
  if compiles > 1:
    logging.warning("the train step was compiled %d times; expected once", compiles)
  return {"metrics": last, "probe": last_probe, "state": state, "train_step_compiles": compiles}


# ------------------------------------------------------------------- the steps of _train, in order


def _build(config: RunConfig, groups: int) -> state_lib.TrainSetup:
  """The mesh, shardings and jitted steps (state.py), the batch layout (``groups`` data groups)
  checked against them."""
  setup = state_lib.build(config)
  state_lib.check_batch_layout(config, setup.mesh, groups)
  if jax.process_index() == 0:
    logging.info(
      "mesh %s; parameter shardings:\n%s",
      dict(setup.mesh.shape),
      "\n".join(sharding.describe(setup.param_shardings)),
    )
  return setup


def _pretrained(
  config: RunConfig, workdir: str, setup: state_lib.TrainSetup
) -> tuple[dict[str, Any] | None, str | None]:
  """(the initial parameters init_from names, where they came from) for a fresh run; (None,
  None) without init_from or when the workdir already holds a checkpoint (init_from.py)."""
  if not config.init_from:
    return None, None
  process = jax.process_index()
  resuming_from = workdir_steps.latest_step(workdir)
  if resuming_from is not None:
    if process == 0:
      print(
        f"resuming from checkpoint {resuming_from}; init_from applies to a fresh run only",
        flush=True,
      )
    return None, None
  pre = init_from.load_pretrained(
    config.init_from, setup.mcfg, step=config.init_from_step, seed=config.seed
  )
  init_from.check_compatible(pre, setup.mcfg, setup.abstract_state["params"])
  source = f"{config.init_from} ({pre.kind})"
  if process == 0:
    init_from.record(workdir, pre, config.init_from_step)
    print(f"init_from {source}: {pre.note}", flush=True)
  return init_from.initial_params(pre, setup.abstract_state["params"]), source


@dataclasses.dataclass
class _Input:
  """The run's data: the folder and its manifest, the training stream and its iterator, and the
  fixed validation clips of the evaluation's pictures and health checks."""

  dir: str
  manifest: dict[str, Any]
  rcfg: reader_lib.ReaderConfig
  groups: int
  dropped: list[Any]  # the stream's per-group counters of records too short to crop
  iterator: Any
  pictures: eval_pictures.EvalPictures | None
  health: health_lib.Health | None

  @classmethod
  def open(
    cls, config: RunConfig, workdir: str, setup: state_lib.TrainSetup, groups: int
  ) -> _Input:
    data_dir = input_lib.resolve_data_dir(config, setup.mcfg, workdir)
    manifest = input_lib.load_manifest(data_dir)
    input_lib.check_manifest(manifest, setup.mcfg, data_dir, setup.ocfg.targets)
    rcfg = input_lib.reader_config(config, groups)
    dataset, dropped = input_lib.train_stream(data_dir, rcfg, groups)
    valid = config.eval_every and "valid" in manifest["splits"]
    # TensorBoard pictures of fixed validation clips at each evaluation (eval_pictures.py).
    pictures = None
    if valid and config.eval_picture_clips:
      pictures = eval_pictures.EvalPictures(
        setup, data_dir, manifest, rcfg, clips=config.eval_picture_clips
      )
    # Representation health at each evaluation: feature rank, accuracy against the prior.
    health = None
    if valid and config.health_clips:
      health = health_lib.Health(setup, data_dir, rcfg, config)
    return cls(data_dir, manifest, rcfg, groups, dropped, iter(dataset), pictures, health)

  def restart(self, seed: int) -> None:
    """A fresh training stream seeded with ``seed`` (data.on_state_mismatch=restart)."""
    self.rcfg = dataclasses.replace(self.rcfg, seed=seed)
    dataset, self.dropped = input_lib.train_stream(self.dir, self.rcfg, self.groups)
    self.iterator = iter(dataset)


def _restore_or_init(
  config: RunConfig,
  setup: state_lib.TrainSetup,
  ckpts: checkpoints.RunCheckpoints,
  data: _Input,
  pretrained: dict[str, Any] | None,
) -> tuple[dict[str, Any], int | None]:
  """(train state, its step): the newest checkpoint that verifies (or restore_step), its data
  position restored into ``data``; or a fresh state (step None)."""
  restored = ckpts.restore(setup.abstract_state, setup.state_shardings, step=config.restore_step)
  if restored is None:
    return setup.init(pretrained), None
  start = restored.step
  try:
    ckpts.restore_data_iter(start, data.iterator, data_groups=data.groups)
  except checkpoints.DataStateMismatch as e:
    if config.data.on_state_mismatch != "restart":
      raise CheckpointError(
        f"{e} Re-run with the same number of processes, or pass "
        "--config.data.on_state_mismatch=restart to continue with a fresh data stream "
        "(no exact resume)."
      ) from e
    logging.warning("%s Continuing with a fresh data stream seeded with (seed, step).", e)
    data.restart(input_lib.restart_seed(config.seed, start))
  logging.info("resumed from step %d", start)
  return restored.state, start


def _ended_before_training(
  ckpts: checkpoints.RunCheckpoints, writer: MetricWriter, state: dict[str, Any], compiles: int
) -> dict[str, Any]:
  """``train``'s result for a run that stops before its first step (nothing left to do, or a
  SIGTERM while compiling)."""
  ckpts.close()
  writer.close()
  return {"metrics": {}, "probe": {}, "state": state, "train_step_compiles": compiles}


class _Trace:
  """--config.profile_steps=A,B: a jax.profiler trace of steps A..B in WORKDIR/profile/process_N
  (a run resumed inside the range traces the rest of it)."""

  def __init__(self, config: RunConfig, workdir: str):
    self.range = loop_config.profile_range(config)
    self.total = config.total_steps
    self.folder = epath.Path(workdir) / workdir_files.PROFILE / f"process_{jax.process_index()}"
    self.workdir = workdir
    self.first: int | None = None  # the first traced step, once the trace runs

  def before(self, step: int) -> None:
    """Called before running ``step``: starts the trace at the range's first step this run
    reaches."""
    if self.range and self.first is None and self.range[0] <= step <= self.range[1]:
      self.first = step
      jax.profiler.start_trace(str(self.folder))

  def after(self, step: int, state: Any) -> None:
    """Called after ``step``: stops the trace at the range's last step (or the run's)."""
    if self.first is not None and step == min(self.range[1], self.total):
      jax.block_until_ready(state)  # the traced steps' device work ends inside the trace
      jax.profiler.stop_trace()
      if jax.process_index() == 0:
        print(
          f"profile of steps {self.first}-{step}: {self.workdir}/{workdir_files.PROFILE}",
          flush=True,
        )


def _evaluate(
  config: RunConfig,
  setup: state_lib.TrainSetup,
  state: dict[str, Any],
  data: _Input,
  writer: MetricWriter,
  step: int,
  clock: Callable[[], float],
) -> None:
  """The held-out loss (evaluate.py), health checks and pictures of ``step``, written and printed
  (nothing without a valid split)."""
  if "valid" not in data.manifest["splits"]:
    return
  began = clock()
  scores = evaluate.evaluate(setup, state["params"], data.dir, data.manifest, data.rcfg)
  if data.health is not None:
    scores.update(data.health.evaluate(state["params"], scores))
  del scores["code_counts"]
  seconds = clock() - began
  scores = jax.tree.map(lambda v: np.asarray(v).tolist(), scores)
  writer.write(step, scores, run="eval")
  if data.pictures is not None:  # every process: the parameters are sharded over all of them
    data.pictures.log(writer.tensorboard("eval"), state["params"], step)
  if jax.process_index() == 0:
    print(console.eval_line(step, config.total_steps, scores, seconds), flush=True)
    for warning in data.health.warnings if data.health is not None else ():
      print(warning, flush=True)


def compile_train_step(
  setup: state_lib.TrainSetup,
  state: dict[str, Any],
  batch: dict[str, jax.Array],
  seed_key: jax.Array,
  clock: Callable[[], float],
  announce: bool,
) -> jax.stages.Compiled:
  """The train step compiled for these shapes and shardings (donating the state, as the jitted
  function does); ``announce``: print the compile lines. The arguments may be ShapeDtypeStructs:
  mert_jax/train/aot.py compiles this same step for TPU slices that are not attached."""
  if announce:
    print(console.COMPILING, flush=True)
  began = clock()
  compiled = setup.train_step.lower(state, batch, seed_key).compile()
  if announce:
    print(console.compiled_line(clock() - began), flush=True)
  return compiled


def _train_subset(config: RunConfig, manifest: dict[str, Any]) -> dict[str, tuple[float, int]]:
  """The train split's line when ``data.train_shards`` reads only a prefix of it."""
  n = config.data.train_shards
  return {"train": (reader_lib.subset_hours(manifest, n), n)} if n else {}


def _run_summary(
  config: RunConfig,
  setup: state_lib.TrainSetup,
  manifest: dict[str, Any],
  data_dir: str,
  workdir: str,
  start: str,
) -> console.RunSummary:
  """The start-up summary's values, gathered from the run's pieces (parameter counts from the
  abstract state, without building the model again)."""
  params = setup.abstract_state["params"]
  device = setup.devices[0]
  return console.RunSummary(
    variant=config.variant,
    params=tree_size(params),
    backbone_params=tree_size(params["backbone"]),
    platform=device.platform,
    device_kind=device.device_kind,
    num_devices=len(setup.devices),
    num_processes=jax.process_count(),
    mesh=dict(setup.mesh.shape),
    batch_shards=sharding.batch_shards(setup.mesh, setup.rules),
    batch_size=config.batch_size,
    clip_seconds=config.crop_samples / setup.mcfg.sample_rate,
    grad_accum_steps=setup.grad_accum_steps,
    splits={
      name: (split["hours"], len(split["shards"])) for name, split in manifest["splits"].items()
    }
    | _train_subset(config, manifest),
    data_dir=data_dir,
    workdir=workdir,
    start=start,
    total_steps=config.total_steps,
  )
