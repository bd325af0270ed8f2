"""Model-only checkpoints: an orbax checkpoint of the parameters plus the model config (JSON).

Layout of ``CKPT_DIR``::

  model_config.json       ModelConfig fields
  params/                 orbax (StandardCheckpointer) pytree of float32 parameters

orbax writes into a temporary directory and renames it when complete, so an interrupted save
never leaves a ``params/`` that looks whole.
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


def load_model(ckpt_dir: str | os.PathLike, **config_overrides) -> MERTModel:
  """Rebuild the model from ``ckpt_dir``; ``config_overrides`` change non-shape fields (e.g. dtype)."""
  cfg = load_model_config(ckpt_dir).replace(**config_overrides)
  model = create_model(cfg)
  state = nnx.state(model, nnx.Param)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(state))
  params_path = epath.Path(ckpt_dir) / PARAMS_DIR
  if not params_path.exists():
    raise FileNotFoundError(f"{params_path} not found: the checkpoint in {ckpt_dir} is incomplete.")
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(params_path, target)
  nnx.replace_by_pure_dict(state, jax.tree.map(np.asarray, restored))
  nnx.update(model, state)
  return model
