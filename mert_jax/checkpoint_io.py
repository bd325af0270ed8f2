"""Model checkpoints: what ``convert`` and ``extract`` read.

A model checkpoint ``CKPT_DIR`` is an orbax checkpoint of the parameters plus the model config::

  model_config.json       ModelConfig fields
  params/                 orbax (StandardCheckpointer) pytree of float32 parameters

``load_model`` also accepts a training workdir (``config.json`` + ``checkpoints/STEP/state``):
the latest complete step, or ``step=N``. orbax writes into a temporary directory and renames it
when complete, so an interrupted save never leaves a checkpoint that looks whole.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from mert_jax.config import ModelConfig
from mert_jax.model import MERTModel, create_model

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_model(ckpt_dir: str | os.PathLike, model: MERTModel, *, overwrite: bool = False) -> None:
  """Write ``model``'s parameters and config to ``ckpt_dir`` (created). An existing ``params/``
  is an error unless ``overwrite``."""
  path = epath.Path(ckpt_dir)
  path.mkdir(parents=True, exist_ok=True)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path / PARAMS_DIR, params, force=overwrite)
  (path / CONFIG_FILE).write_text(model.cfg.to_json())


def load_model_config(ckpt_dir: str | os.PathLike) -> ModelConfig:
  path = epath.Path(ckpt_dir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {ckpt_dir} is not a model checkpoint written by "
                            f"mert_jax (expected {CONFIG_FILE} and {PARAMS_DIR}/).")
  return ModelConfig.from_dict(json.loads(path.read_text()))


def is_workdir(path: str | os.PathLike) -> bool:
  p = epath.Path(path)
  return (p / "checkpoints").exists() and (p / "config.json").exists()


def _workdir_config(workdir: str | os.PathLike) -> ModelConfig:
  cfg = json.loads((epath.Path(workdir) / "config.json").read_text())
  model = dict(cfg["model"])
  return ModelConfig.from_dict(model)


def _workdir_params_path(workdir: str | os.PathLike, step: int | None) -> epath.Path:
  mngr = ocp.CheckpointManager(epath.Path(workdir) / "checkpoints")
  steps = mngr.all_steps()
  mngr.close()
  if not steps:
    raise FileNotFoundError(f"{workdir}: the training workdir holds no complete checkpoint yet")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise FileNotFoundError(f"{workdir}: no complete checkpoint at step {step}; available: {sorted(steps)}")
  return epath.Path(workdir) / "checkpoints" / str(step) / "state"


def load_model(ckpt_dir: str | os.PathLike, *, step: int | None = None, **config_overrides) -> MERTModel:
  """Rebuild the model from a model checkpoint or a training workdir (latest step, or ``step``);
  ``config_overrides`` change non-shape fields (e.g. dtype)."""
  workdir = is_workdir(ckpt_dir)
  if step is not None and not workdir:
    raise ValueError(f"--step applies to training workdirs; {ckpt_dir} is a model checkpoint")
  cfg = (_workdir_config(ckpt_dir) if workdir else load_model_config(ckpt_dir)).replace(**config_overrides)
  model = create_model(cfg)
  state = nnx.state(model, nnx.Param)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(state))
  params_path = _workdir_params_path(ckpt_dir, step) if workdir else epath.Path(ckpt_dir) / PARAMS_DIR
  if not params_path.exists():
    raise FileNotFoundError(f"{params_path} not found: the checkpoint in {ckpt_dir} is incomplete.")
  with ocp.StandardCheckpointer() as ckptr:
    if workdir:      # the train state: restore its params subtree only
      meta = ckptr.metadata(params_path)
      full = jax.tree.map(lambda m: ocp.utils.to_shape_dtype_struct(m) if hasattr(m, "shape") else m,
                          meta.item_metadata.tree)
      full["params"] = target
      restored = ckptr.restore(params_path, full)["params"]
    else:
      restored = ckptr.restore(params_path, target)
  nnx.replace_by_pure_dict(state, jax.tree.map(np.asarray, restored))
  nnx.update(model, state)
  return model
