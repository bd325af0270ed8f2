"""Everything the step runs on, built once and shared by the trainer, the benchmarks and the tests:
mesh -> logical rules -> shardings -> sharded-at-birth train state -> jitted train and eval steps.

``build(config)`` returns a ``TrainSetup``; ``setup.init()`` creates the train state with every
parameter and optimizer moment born on its shards (no host copy of the full model), and
``setup.train_step(state, batch, seed_key)`` is the jitted, donated update.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from mert_jax import sharding
from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.model.mert import MERTModel, abstract_model
from mert_jax.train import run_config
from mert_jax.train.optim import make_optimizer
from mert_jax.train.run_config import RunConfig
from mert_jax.train.step import init_state, make_eval_step, make_train_step


@dataclasses.dataclass
class TrainSetup:
  """The compiled-to-be pieces of one run (see the module docstring)."""

  config: RunConfig
  mcfg: ModelConfig
  ocfg: ObjectiveConfig
  mesh: Mesh
  devices: list[jax.Device]
  rules: list[tuple[str, Any]]
  graphdef: nnx.GraphDef
  template: nnx.State
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: dict[str, Any]  # ShapeDtypeStructs of the train state
  state_shardings: dict[str, Any]
  param_shardings: dict[str, Any]
  batch_shardings: dict[str, NamedSharding]
  train_step: Callable[[dict, dict, jax.Array], tuple[dict, dict]]  # jitted; donates the state
  eval_step: Callable[[dict, dict, jax.Array], dict]  # jitted

  def init(self, pretrained: dict[str, Any] | None = None) -> dict[str, Any]:
    """The initial train state (seeded by ``config.seed``), each array created on its shards.
    ``pretrained``: host arrays for whole parameter groups (``{"backbone": ...}``, optionally
    ``"heads"``; see init_from.py) that replace the fresh ones; the optimizer state is built
    from the final parameters either way."""
    mcfg, tx, seed = self.mcfg, self.tx, self.config.seed
    pretrained = pretrained or {}
    # Each process supplies only its own shards, so this also holds on a multi-host mesh.
    pre_shardings = {g: self.param_shardings[g] for g in pretrained}
    pretrained = jax.tree.map(
      lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]),
      pretrained,
      pre_shardings,
    )

    def init_fn(pre):
      with nnx.use_eager_sharding(False):
        model = MERTModel(mcfg, nnx.Rngs(seed))
      return init_state({**nnx.to_pure_dict(nnx.state(model, nnx.Param)), **pre}, tx)

    with jax.set_mesh(self.mesh):
      return jax.jit(init_fn, in_shardings=(pre_shardings,), out_shardings=self.state_shardings)(
        pretrained
      )

  @property
  def grad_accum_steps(self) -> int:
    return self.config.optimizer.grad_accum_steps


def check_batch_layout(config: RunConfig, mesh: Mesh, groups: int) -> None:
  """The global batch must split into data groups x micro-batches, each divisible by the batch
  shards (the mesh axes of the ``batch`` rule)."""
  accum, rules = config.optimizer.grad_accum_steps, config.rules
  batch_shards = sharding.batch_shards(mesh, rules)
  if config.batch_size % (groups * accum) or (config.batch_size // accum) % batch_shards:
    over = " x ".join(sharding.batch_mesh_axes(rules)) or "no mesh axis"
    raise ValueError(
      f"batch_size={config.batch_size} must split into data.groups={groups} x "
      f"{accum} micro-batches, each micro-batch divisible by {over} = {batch_shards}"
    )


def build(
  config: RunConfig | ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> TrainSetup:
  """The mesh, shardings and jitted steps of ``config`` on ``devices`` (default: the first
  ``config.num_devices`` devices, or all). A recipe ConfigDict (tests, benchmarks) becomes a
  ``RunConfig`` first, checked there; the trainer passes the one its command line made."""
  config = run_config.from_config_dict(config)
  mcfg, ocfg = config.model, config.objective
  if devices is None:
    devices = jax.devices()[: config.num_devices] if config.num_devices else jax.devices()
  devices = list(devices)
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = config.rules

  graphdef, template = nnx.split(abstract_model(mcfg), nnx.Param)
  param_shardings = sharding.param_shardings(template, mesh, rules)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  abstract_params = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(template)
  )
  abstract_state = jax.eval_shape(lambda p: init_state(p, tx), abstract_params)
  rep = sharding.replicated(mesh)
  state_shardings = {k: rep for k in abstract_state}
  state_shardings["params"] = param_shardings
  state_shardings["opt_state"] = optax.tree_map_params(
    tx,
    lambda _, s: s,
    abstract_state["opt_state"],
    param_shardings,
    transform_non_params=lambda _: rep,
  )

  # Batches are (micro-batches, clips, ...): the clip axis is split as the batch rule says.
  batch_sh = {
    "audio": sharding.batch_sharding(mesh, rules, 3, 1),
    "labels": sharding.batch_sharding(mesh, rules, 4, 1),
  }
  train_step = jax.jit(
    make_train_step(graphdef, template, tx, schedule, ocfg, mcfg.cqt_bins),
    in_shardings=(state_shardings, batch_sh, rep),
    out_shardings=(state_shardings, rep),
    donate_argnums=0,
  )
  eval_step = jax.jit(
    make_eval_step(graphdef, template, ocfg, mcfg.cqt_bins),
    in_shardings=(param_shardings, batch_sh, rep),
    out_shardings=rep,
  )
  return TrainSetup(
    config=config,
    mcfg=mcfg,
    ocfg=ocfg,
    mesh=mesh,
    devices=devices,
    rules=rules,
    graphdef=graphdef,
    template=template,
    tx=tx,
    schedule=schedule,
    abstract_state=abstract_state,
    state_shardings=state_shardings,
    param_shardings=param_shardings,
    batch_shardings=batch_sh,
    train_step=train_step,
    eval_step=eval_step,
  )
