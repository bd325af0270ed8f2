"""Checkpoints on disk: the training workdir's layout, and the model checkpoints that ``convert``
and ``extract`` read. The checkpoint paths of both layouts are named here; the metric files are
named by ``metrics.py`` and the default-corpus folder by ``input.py``.

A training workdir::

  config.json                   the run's ConfigDict (written by the trainer)
  metrics.jsonl, tb/            metrics (mert_jax/train/metrics.py)
  checkpoints/STEP/state        orbax: the train state (params, opt_state, counters)
  checkpoints/STEP/data_iter    grain: each process's data position
  checkpoints/STEP/meta         {"step", "process_count", "data_groups"}

A model checkpoint ``CKPT_DIR``::

  model_config.json             ModelConfig fields
  params/                       orbax (StandardCheckpointer) pytree of float32 parameters

orbax writes each step into a temporary directory and renames it when complete, so an
interrupted save never leaves a checkpoint that looks whole; ``latest_step`` lists only finalised
steps. ``load_model`` accepts either layout (a workdir's latest complete step, or ``step=N``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from data_pipeline.atomic import atomic_write_text
from mert_jax.config import ModelConfig
from mert_jax.model.mert import MERTModel, create_model

# Training workdir.
WORKDIR_CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
STATE, DATA_ITER, META = "state", "data_iter", "meta"
# Model checkpoint.
MODEL_CONFIG = "model_config.json"
PARAMS_DIR = "params"


class DataStateMismatch(RuntimeError):
  """The data-iterator state of a checkpoint cannot be restored into this run's data stream."""


def checkpoint_manager(
  workdir: str, *, keep_last: int | None = None, keep_every: int = 0
) -> ocp.CheckpointManager:
  """Async saves under WORKDIR/checkpoints; keeps the last ``keep_last`` plus every multiple of
  ``keep_every`` (0: none)."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep_last,
    keep_period=keep_every or None,
    enable_async_checkpointing=True,
    create=True,
  )
  return ocp.CheckpointManager(epath.Path(workdir) / CHECKPOINTS, options=options)


def save(
  mngr: ocp.CheckpointManager, step: int, state: Any, data_iter: Any, *, data_groups: int
) -> None:
  """Asynchronously writes the train state, the data position and the run's process layout."""
  mngr.save(
    step,
    args=ocp.args.Composite(
      **{
        STATE: ocp.args.StandardSave(state),
        DATA_ITER: grain.checkpoint.CheckpointSave(data_iter),
        META: ocp.args.JsonSave(
          {"step": step, "process_count": jax.process_count(), "data_groups": data_groups}
        ),
      }
    ),
    force=True,
  )


def latest_step(workdir: str) -> int | None:
  """The newest complete checkpoint of a workdir, or None; creates nothing."""
  path = epath.Path(workdir) / CHECKPOINTS
  if not path.exists():
    return None
  with ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
    return mngr.latest_step()


def restore_state(
  mngr: ocp.CheckpointManager, step: int, abstract_state: Any, shardings: Any
) -> Any:
  """The train state of ``step``, each array placed with its sharding on the current mesh."""
  target = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
  )
  return mngr.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target)}))[
    STATE
  ]


def restore_data_iter(
  mngr: ocp.CheckpointManager, step: int, data_iter: Any, *, data_groups: int
) -> None:
  """Moves ``data_iter`` to the position saved at ``step``; ``DataStateMismatch`` names why not."""
  try:
    mngr.restore(
      step, args=ocp.args.Composite(**{DATA_ITER: grain.checkpoint.CheckpointRestore(data_iter)})
    )
  except (FileNotFoundError, ValueError, KeyError) as e:
    saved = _saved_meta(mngr.directory, step).get("process_count", "an unknown number of")
    raise DataStateMismatch(
      f"checkpoint {step}: the data-iterator state cannot be restored "
      f"({type(e).__name__}: {e}); it is "
      f"tied to the process count, data.groups and dataset it was saved with (saved with {saved} "
      f"processes, now {jax.process_count()} with data.groups={data_groups})."
    ) from e


def _saved_meta(checkpoints_dir: Any, step: int) -> dict[str, Any]:
  try:
    return json.loads((epath.Path(checkpoints_dir) / str(step) / META / "metadata").read_text())
  except (OSError, ValueError):
    return {}


def write_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  atomic_write_text(epath.Path(workdir) / WORKDIR_CONFIG, config.to_json_best_effort(indent=2))


# --------------------------------------------------------------------------- model checkpoints


def save_model(ckpt_dir: str | os.PathLike, model: MERTModel, *, overwrite: bool = False) -> None:
  """Write ``model``'s parameters and config to ``ckpt_dir`` (created). An existing ``params/``
  is an error unless ``overwrite``."""
  path = epath.Path(ckpt_dir)
  path.mkdir(parents=True, exist_ok=True)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path / PARAMS_DIR, params, force=overwrite)
  atomic_write_text(path / MODEL_CONFIG, model.cfg.to_json())


def load_model_config(ckpt_dir: str | os.PathLike) -> ModelConfig:
  path = epath.Path(ckpt_dir) / MODEL_CONFIG
  if not path.exists():
    raise FileNotFoundError(
      f"{path} not found: {ckpt_dir} is not a model checkpoint written by "
      f"mert_jax (expected {MODEL_CONFIG} and {PARAMS_DIR}/)."
    )
  return ModelConfig.from_dict(json.loads(path.read_text()))


def is_workdir(path: str | os.PathLike) -> bool:
  p = epath.Path(path)
  return (p / CHECKPOINTS).exists() and (p / WORKDIR_CONFIG).exists()


def workdir_model_config(workdir: str | os.PathLike) -> ModelConfig:
  return ModelConfig.from_dict(
    dict(json.loads((epath.Path(workdir) / WORKDIR_CONFIG).read_text())["model"])
  )


def workdir_state_path(workdir: str | os.PathLike, step: int | None) -> epath.Path:
  """The train-state folder of ``step`` (default: the latest complete checkpoint)."""
  mngr = ocp.CheckpointManager(epath.Path(workdir) / CHECKPOINTS)
  steps = mngr.all_steps()
  mngr.close()
  if not steps:
    raise FileNotFoundError(f"{workdir}: the training workdir holds no complete checkpoint yet")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise FileNotFoundError(
      f"{workdir}: no complete checkpoint at step {step}; available: {sorted(steps)}"
    )
  return epath.Path(workdir) / CHECKPOINTS / str(step) / STATE


def load_model(
  ckpt_dir: str | os.PathLike, *, step: int | None = None, **config_overrides
) -> MERTModel:
  """Rebuild the model from a model checkpoint or a training workdir (latest step, or ``step``);
  ``config_overrides`` change non-shape fields (e.g. dtype)."""
  workdir = is_workdir(ckpt_dir)
  if step is not None and not workdir:
    raise ValueError(f"--step applies to training workdirs; {ckpt_dir} is a model checkpoint")
  cfg = (workdir_model_config(ckpt_dir) if workdir else load_model_config(ckpt_dir)).replace(
    **config_overrides
  )
  model = create_model(cfg)
  state = nnx.state(model, nnx.Param)
  # Every array onto this process's first device: a checkpoint written on a pod (or 8 fake CPU
  # devices) restores on a laptop, whatever shardings it was saved with.
  host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  on_host = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=host)
  target = jax.tree.map(on_host, nnx.to_pure_dict(state))
  params_path = workdir_state_path(ckpt_dir, step) if workdir else epath.Path(ckpt_dir) / PARAMS_DIR
  if not params_path.exists():
    raise FileNotFoundError(f"{params_path} not found: the checkpoint in {ckpt_dir} is incomplete.")
  with ocp.StandardCheckpointer() as ckptr:
    if workdir:  # the train state: restore its params subtree only
      meta = ckptr.metadata(params_path)
      full = jax.tree.map(
        lambda m: on_host(m) if hasattr(m, "shape") else m, meta.item_metadata.tree
      )
      full["params"] = target
      restored = ckptr.restore(params_path, full)["params"]
    else:
      restored = ckptr.restore(params_path, target)
  nnx.replace_by_pure_dict(state, jax.tree.map(np.asarray, restored))
  nnx.update(model, state)
  return model
