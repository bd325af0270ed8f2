"""Model checkpoints: the parameters and ModelConfig of a model, written by ``save_model`` and read
back, verified, by ``load_model`` from a model checkpoint folder or from any step of a training
workdir (convert, extract, probe, init_from and the model card read models this way).

A model checkpoint ``CKPT_DIR``::

  model_config.json             ModelConfig fields
  params/                       orbax (StandardCheckpointer) pytree of float32 parameters
  params_fingerprint.json       {"fingerprints": {leaf: uint32}} (absent in older checkpoints)
"""

from __future__ import annotations

import gc
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from mert_jax import workdir_files
from mert_jax.checkpointing import fingerprint
from mert_jax.checkpointing.errors import CorruptCheckpoint, failed_leaf, root_cause
from mert_jax.checkpointing.orbax_logs import quiet_failed_reads
from mert_jax.checkpointing.workdir_steps import (
  compare_fingerprints,
  complete_steps,
  local_absolute,
  read_meta,
)
from mert_jax.config import ModelConfig
from mert_jax.files.atomic import atomic_write_text
from mert_jax.model.mert import MERTModel, create_model
from mert_jax.terminal.errors import one_line

# Model checkpoint.
MODEL_CONFIG = "model_config.json"


PARAMS_DIR = "params"


PARAMS_FINGERPRINT = "params_fingerprint.json"


def save_model(ckpt_dir: str | os.PathLike, model: MERTModel, *, overwrite: bool = False) -> None:
  """Write ``model``'s parameters, their fingerprints and its config to ``ckpt_dir`` (created). An
  existing ``params/`` is an error unless ``overwrite``."""
  path = local_absolute(ckpt_dir)
  path.mkdir(parents=True, exist_ok=True)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path / PARAMS_DIR, params, force=overwrite)
  fps, _ = fingerprint.digest(params)
  atomic_write_text(path / PARAMS_FINGERPRINT, json.dumps({"fingerprints": fps}))
  atomic_write_text(path / MODEL_CONFIG, model.cfg.to_json())


def load_model_config(ckpt_dir: str | os.PathLike) -> ModelConfig:
  path = local_absolute(ckpt_dir) / MODEL_CONFIG
  if not path.exists():
    raise FileNotFoundError(
      f"{path} not found: {ckpt_dir} is not a model checkpoint written by "
      f"mert_jax (expected {MODEL_CONFIG} and {PARAMS_DIR}/)."
    )
  return ModelConfig.from_dict(json.loads(path.read_text()))


def is_workdir(path: str | os.PathLike) -> bool:
  p = local_absolute(path)
  return (p / workdir_files.CHECKPOINTS).exists() and (p / workdir_files.CONFIG).exists()


def workdir_model_config(workdir: str | os.PathLike) -> ModelConfig:
  return ModelConfig.from_dict(
    dict(json.loads((local_absolute(workdir) / workdir_files.CONFIG).read_text())["model"])
  )


def workdir_state_path(workdir: str | os.PathLike, step: int | None) -> epath.Path:
  """The train-state folder of ``step`` (default: the latest complete checkpoint)."""
  steps = complete_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"{workdir}: the training workdir holds no complete checkpoint yet")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise FileNotFoundError(
      f"{workdir}: no complete checkpoint at step {step}; available: {sorted(steps)}"
    )
  return local_absolute(workdir) / workdir_files.CHECKPOINTS / str(step) / workdir_files.STATE


def _model_source(
  ckpt_dir: str | os.PathLike, step: int | None
) -> tuple[ModelConfig, epath.Path, int | None, dict[str, int] | None]:
  """(config, parameters folder, step, saved parameter fingerprints or None) of a model
  checkpoint or of a workdir's checkpoint ``step`` (default: latest). A workdir checkpoint's own
  ModelConfig is used (the workdir's config.json for checkpoints saved before it was recorded)."""
  if not is_workdir(ckpt_dir):
    if step is not None:
      raise ValueError(f"--step applies to training workdirs; {ckpt_dir} is a model checkpoint")
    path = local_absolute(ckpt_dir)
    saved = None
    if (path / PARAMS_FINGERPRINT).exists():
      try:
        saved = json.loads((path / PARAMS_FINGERPRINT).read_text())["fingerprints"]
      except (OSError, ValueError, KeyError) as e:
        raise CorruptCheckpoint(None, path, f"{PARAMS_FINGERPRINT} is unreadable") from e
    return load_model_config(ckpt_dir), path / PARAMS_DIR, None, saved
  state_path = workdir_state_path(ckpt_dir, step)
  step_dir = state_path.parent
  s = int(step_dir.name)
  meta = read_meta(s, step_dir)
  cfg = ModelConfig.from_dict(meta["model"]) if meta.get("model") else None
  saved = meta.get("fingerprints")
  if saved is not None:
    prefix = "params/"
    saved = {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
  return cfg or workdir_model_config(ckpt_dir), state_path, s, saved


def load_model(
  ckpt_dir: str | os.PathLike, *, step: int | None = None, **config_overrides
) -> MERTModel:
  """Rebuild the model from a model checkpoint or a training workdir (latest step, or ``step``);
  ``config_overrides`` change non-shape fields (e.g. dtype). The parameters are checked against
  the fingerprints saved with them (CorruptCheckpoint, naming the checkpoint and the leaf)."""
  base_cfg, params_path, s, saved = _model_source(ckpt_dir, step)
  workdir = s is not None
  cfg = base_cfg.replace(**config_overrides)
  model = create_model(cfg)
  state = nnx.state(model, nnx.Param)
  # Every array onto this process's first device: a checkpoint written on a pod (or 8 fake CPU
  # devices) restores on a laptop, whatever shardings it was saved with.
  host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  on_host = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=host)
  target = jax.tree.map(on_host, nnx.to_pure_dict(state))
  where = params_path.parent if workdir else local_absolute(ckpt_dir)
  if not params_path.exists():
    raise FileNotFoundError(f"{params_path} not found: the checkpoint in {ckpt_dir} is incomplete.")
  quiet_failed_reads()
  with ocp.StandardCheckpointer() as ckptr:
    try:
      if workdir:  # the train state: restore its params subtree only
        meta = ckptr.metadata(params_path)
        full = jax.tree.map(
          lambda m: on_host(m) if hasattr(m, "shape") else m, meta.item_metadata.tree
        )
        full["params"] = target
        restored = ckptr.restore(params_path, full)["params"]
      else:
        restored = ckptr.restore(params_path, target)
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise plain Exceptions
      leaf, cause = failed_leaf(e), one_line(root_cause(e), 300)
      restored = None
  if restored is None:  # not chained: orbax's exception holds the reads it abandoned
    gc.collect()
    what = f"leaf {leaf}" if leaf else params_path.name + "/"
    raise CorruptCheckpoint(s, where, f"{what} is unreadable ({cause})")
  if saved is not None:
    got, _ = fingerprint.digest(restored)
    compare_fingerprints(s, where, saved, got, "params" if workdir else PARAMS_DIR)
  nnx.replace_by_pure_dict(state, jax.tree.map(np.asarray, restored))
  nnx.update(model, state)
  return model
