"""MERT pretraining: one code path from a laptop CPU to a TPU pod.

  python -m mert_jax.train --config=configs/mert.py:tiny --workdir=runs/tiny
  python -m mert_jax.train --config=configs/mert.py:95m --workdir=gs://BUCKET/run --config.data.dir=gs://BUCKET/data

Re-running the same command resumes from the workdir's latest complete checkpoint. Sections below
follow the data flow: processes and logging -> mesh -> input -> model and optimizer shapes ->
shardings -> sharded init -> step functions -> restore -> loop (log, eval, checkpoint, preemption).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import app, flags, logging
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from ml_collections import config_flags

from configs import mert as mert_configs
from data_pipeline import reader as reader_lib
from mert_jax import default_corpus, sharding
from mert_jax.flops import train_flops_per_clip
from mert_jax.metrics import MetricWriter, peak_flops_per_device
from mert_jax.model import MERTModel, abstract_model
from mert_jax.objective import check_label_values
from mert_jax.optim import make_optimizer
from mert_jax.train_step import init_state, make_eval_step, make_train_step

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/mert.py:VARIANT", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events and metrics.jsonl")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-process: host:port of process 0")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-process: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-process: this process's index")


class Preempted:
  """SIGTERM (TPU maintenance, SLURM, `kill`) sets a flag; the loop checkpoints and exits."""

  def __init__(self):
    self.flag = False
    signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    self.flag = True

  def agreed(self, step: int, every: int) -> bool:
    """True when any process got the signal (all processes must stop at the same step).

    With several processes the agreement is an all-gather, which blocks the host until the devices
    have finished the queued step; done every step it would stop the host from preparing the next
    batch while the current step runs, so it happens every ``every`` steps only."""
    if jax.process_count() == 1:
      return self.flag
    if step % max(every, 1):
      return False
    return bool(np.any(multihost_utils.process_allgather(np.array([self.flag]))))


def initialize_distributed() -> None:
  """Explicit flags, or JAX's own detection on TPU pods / SLURM / Open MPI; nothing on one host."""
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    return
  env = os.environ
  multi_host = (int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
                or "," in env.get("TPU_WORKER_HOSTNAMES", "") or "JAX_COORDINATOR_ADDRESS" in env)
  if multi_host:
    jax.distributed.initialize()


def _global_batch(local: dict[str, np.ndarray], accum: int, mesh) -> dict[str, jax.Array]:
  """Per-process (groups_local, B_group, ...) numpy -> global (accum, B / accum, ...) arrays sharded
  on the batch axis. Micro-batch i takes the i-th slice of every group, so the global micro-batches
  do not depend on how the groups are spread over processes."""
  out = {}
  for k, v in local.items():
    g, b = v.shape[:2]
    v = v.reshape(g, accum, b // accum, *v.shape[2:]).swapaxes(0, 1).reshape(accum, g * (b // accum), *v.shape[2:])
    global_shape = (accum, v.shape[1] * jax.process_count(), *v.shape[2:])
    out[k] = jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, v.ndim, 1), v, global_shape)
  return out


def _checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  """Async saves; keeps the last ``keep_last`` plus every multiple of ``keep_every``."""
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_last, keep_period=config.keep_every or None,
                                         enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(epath.Path(workdir) / "checkpoints", options=options)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) training; returns {"metrics": last logged metrics, "state": final train state,
  "train_step_compiles": how many times the step was compiled (1 unless shapes or shardings changed)}."""
  # ############################################################ processes, workdir, logging
  process, num_processes = jax.process_index(), jax.process_count()
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  writer = MetricWriter(workdir, enabled=process == 0)
  writer.config(config)
  preempted = Preempted()
  mcfg = mert_configs.model_config_from(config)
  ocfg = mert_configs.objective_config_from(config)

  # ############################################################ mesh
  devices = jax.devices()[:config.num_devices] if config.num_devices else jax.devices()
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = [tuple(r) if not isinstance(r[1], list) else (r[0], tuple(r[1])) for r in config.rules]
  batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  accum = config.optimizer.grad_accum_steps
  groups = config.data.groups or num_processes
  if config.batch_size % (groups * accum) or (config.batch_size // accum) % batch_shards:
    raise ValueError(f"batch_size={config.batch_size} must split into data.groups={groups} x "
                     f"{accum} micro-batches, each micro-batch divisible by data x fsdp = {batch_shards}")

  # ############################################################ input
  data_dir = config.data.dir
  if not data_dir:
    data_dir = default_corpus.corpus_dir(os.path.join(workdir, "data"), mcfg.num_codebooks, mcfg.codebook_size)
    if process == 0:
      default_corpus.ensure_default_corpus(
          os.path.join(workdir, "data"), num_codebooks=mcfg.num_codebooks, codebook_size=mcfg.codebook_size,
          minutes=config.data.default_minutes, seed=config.seed)
    if num_processes > 1:
      multihost_utils.sync_global_devices("default corpus prepared")
  manifest = reader_lib.load_manifest(data_dir)
  if (manifest["num_codebooks"], manifest["codebook_size"]) != (mcfg.num_codebooks, mcfg.codebook_size):
    raise ValueError(f"{data_dir}: the teacher has {manifest['num_codebooks']} codebooks of "
                     f"{manifest['codebook_size']} codes but the model expects {mcfg.num_codebooks} x "
                     f"{mcfg.codebook_size}; set --config.model.num_codebooks / --config.model.codebook_size")
  rcfg = reader_lib.ReaderConfig(crop_samples=config.crop_samples, batch_size=config.batch_size // groups,
                                 shuffle_window=config.data.shuffle_window, seed=config.seed)
  def data_stream(cfg):
    return reader_lib.make_grouped_dataset(data_dir, cfg, groups=groups, process_index=process,
                                           process_count=num_processes)
  dataset, dropped = data_stream(rcfg)
  data_iter = iter(dataset)

  # ############################################################ model and optimizer shapes, shardings
  graphdef, template = nnx.split(abstract_model(mcfg), nnx.Param)
  param_shardings = sharding.param_shardings(template, mesh, rules)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(template))
  abstract_state = jax.eval_shape(lambda p: init_state(p, tx), abstract_params)
  rep = sharding.replicated(mesh)
  state_shardings = {k: rep for k in abstract_state}
  state_shardings["params"] = param_shardings
  state_shardings["opt_state"] = optax.tree_map_params(
      tx, lambda _, s: s, abstract_state["opt_state"], param_shardings, transform_non_params=lambda _: rep)
  if process == 0:
    logging.info("mesh %s; parameter shardings:\n%s", dict(mesh.shape), "\n".join(sharding.describe(param_shardings)))

  # ############################################################ sharded init (parameters born sharded)
  def init_fn():
    with nnx.use_eager_sharding(False):
      model = MERTModel(mcfg, nnx.Rngs(config.seed))
    return init_state(nnx.to_pure_dict(nnx.state(model, nnx.Param)), tx)
  with jax.set_mesh(mesh):
    state = jax.jit(init_fn, out_shardings=state_shardings)()

  # ############################################################ step functions
  batch_sh = {"audio": sharding.batch_sharding(mesh, 3, 1), "labels": sharding.batch_sharding(mesh, 4, 1)}
  train_step = jax.jit(make_train_step(graphdef, template, tx, schedule, ocfg, mcfg.cqt_bins),
                       in_shardings=(state_shardings, batch_sh, rep), out_shardings=(state_shardings, rep),
                       donate_argnums=0)
  eval_step = jax.jit(make_eval_step(graphdef, template, ocfg, mcfg.cqt_bins),
                      in_shardings=(param_shardings, batch_sh, rep), out_shardings=rep)
  seed_key = jax.random.key(config.seed)

  # ############################################################ restore
  # Resume order: the workdir's latest complete checkpoint (orbax lists only finalised ones), else scratch.
  mngr = _checkpoint_manager(workdir, config)
  start = mngr.latest_step()
  if start is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
                          state_shardings)
    restored = mngr.restore(start, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    state = restored["state"]
    try:
      mngr.restore(start, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
    except (FileNotFoundError, ValueError, KeyError) as e:
      msg = (f"checkpoint {start}: the data-iterator state cannot be restored ({type(e).__name__}: {e}); it is "
             f"tied to the process count, data.groups and dataset it was saved with (saved with "
             f"{_saved_processes(workdir, start)} processes, now {num_processes} with data.groups={groups}).")
      if config.data.on_state_mismatch != "restart":
        raise RuntimeError(msg + " Re-run with the same number of processes, or pass "
                           "--config.data.on_state_mismatch=restart to continue with a fresh data stream "
                           "(no exact resume).") from e
      logging.warning("%s Continuing with a fresh data stream seeded with (seed, step).", msg)
      rcfg = rcfg.__class__(**{**rcfg.__dict__, "seed": config.seed * 1_000_003 + start})
      dataset, dropped = data_stream(rcfg)
      data_iter = iter(dataset)
    logging.info("resumed from step %d", start)
  step = int(start or 0)

  # ############################################################ loop
  flops_per_step = train_flops_per_clip(mcfg, config.crop_samples) * config.batch_size
  peak = peak_flops_per_device(devices[0]) * len(devices) if peak_flops_per_device(devices[0]) else None
  last_log_time, last_log_step, last = time.perf_counter(), step, {}
  while step < config.total_steps:
    local = next(data_iter)
    check_label_values(local["labels"], mcfg)
    batch = _global_batch(local, accum, mesh)
    state, metrics = train_step(state, batch, seed_key)
    step += 1
    is_last = step == config.total_steps
    if step % config.log_every == 0 or is_last:
      metrics = jax.device_get(metrics)
      now = time.perf_counter()
      dt = (now - last_log_time) / max(step - last_log_step, 1)
      last_log_time, last_log_step = now, step
      last = {"step": step, **{k: np.asarray(v).tolist() for k, v in metrics.items()},
              "clips_per_s": config.batch_size / dt, "step_time_s": dt,
              "nonfinite_total": int(jax.device_get(state["nonfinite_total"])),
              "dropped_short_records": sum(d.dropped_records for d in dropped)}
      if peak:
        last["mfu"] = flops_per_step / dt / peak
      writer.write(step, last)
      if int(jax.device_get(state["nonfinite_run"])) >= config.max_nonfinite_steps:
        mngr.wait_until_finished()
        raise RuntimeError(f"{config.max_nonfinite_steps} consecutive non-finite steps at step {step}: stopping; "
                           f"the last checkpoint ({mngr.latest_step()}) holds the last good parameters")
    if config.eval_every and (step % config.eval_every == 0 or is_last) and "valid" in manifest["splits"]:
      writer.write(step, _evaluate(eval_step, state["params"], data_dir, manifest, rcfg, config, accum, mesh,
                                   mcfg.cqt_bins), prefix="eval_")
    stop = preempted.agreed(step, config.preemption_check_every)
    if step % config.checkpoint_every == 0 or is_last or stop:
      mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(data_iter),
          meta=ocp.args.JsonSave({"step": step, "process_count": num_processes, "data_groups": groups})),
          force=True)
      if step == config.debug_sigkill_after_step:
        mngr.wait_until_finished()
        os.kill(os.getpid(), signal.SIGKILL)
    if stop:
      logging.warning("SIGTERM: checkpoint %d written; exiting", step)
      break
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  # Static shapes and fixed shardings: the step compiles once. More means a shape, dtype or sharding
  # changed between steps (each recompile costs minutes at scale).
  compiles = train_step._cache_size()
  if compiles > 1:
    logging.warning("the train step was compiled %d times; expected once", compiles)
  return {"metrics": last, "state": state, "train_step_compiles": compiles}


def _saved_processes(workdir: str, step: int) -> str:
  try:
    return str(json.loads((epath.Path(workdir) / "checkpoints" / str(step) / "meta" / "metadata").read_text())
               ["process_count"])
  except (OSError, KeyError, ValueError):
    return "an unknown number of"


def _evaluate(eval_step, params, data_dir, manifest, rcfg, config, accum, mesh, cqt_bins) -> dict[str, float]:
  """Loss on the first ``eval_batches`` batches of the valid split (fixed crops, masks and mixup).
  Each process reads a share of the valid shards (all of them when there are fewer shards)."""
  paths = reader_lib.shard_paths(data_dir, manifest, "valid")
  readers = min(jax.process_count(), len(paths))
  ecfg = rcfg.__class__(**{**rcfg.__dict__, "shuffle_window": 1, "seed": 0,
                           "batch_size": config.batch_size // jax.process_count()})
  it = iter(reader_lib.make_dataset(data_dir, ecfg, split="valid", process_index=jax.process_index() % readers,
                                    process_count=readers)[0])
  sums: dict[str, float] = {}
  for i in range(config.eval_batches):
    local = jax.tree.map(lambda x: x[None], next(it))
    out = jax.device_get(eval_step(params, _global_batch(local, accum, mesh), jax.random.key(10_000 + i)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64)
  n = max(float(sums["num_masked"]), 1.0)
  return {"loss": float(sums["loss_sum"]) / n, "loss_codes": float(np.sum(sums["ce_sum"])) / n,
          "loss_cqt": float(sums["cqt_sq_sum"]) / (n * cqt_bins), "accuracy": (sums["correct"] / n).tolist()}


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)     # orbax is chatty at INFO; progress lines are printed
  initialize_distributed()
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
