"""The jitted training and evaluation steps: pure functions of (state, batch, key).

State (a pytree, every leaf a device array):
  params          float32 parameters (pure dict, nnx names)
  opt_state       optax state (sharded like the parameters)
  step            int32, batches consumed (drives the RNG: key = fold_in(seed key, step))
  updates         int32, updates applied (drives the learning-rate schedule)
  nonfinite_total int32, steps skipped because the loss or gradient was not finite
  nonfinite_run   int32, consecutive skipped steps (the loop stops after config.max_nonfinite_steps)

Batch: {"audio": (A, B, L) float32, "labels": (A, B, K, T) int32} with A micro-batches per update
(gradient accumulation). As in fairseq, the update is the gradient of the summed loss of all
micro-batches divided by the total number of masked frames.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mert_jax.config import ObjectiveConfig
from mert_jax.model.mert import MERTModel
from mert_jax.objective.loss import pretraining_loss
from mert_jax.train.metrics import SUMMED, normalise_sums


def bind(graphdef: nnx.GraphDef, template: nnx.State, params: dict) -> MERTModel:
  """The model with ``params`` (a pure dict) in place of the template's values."""
  state = jax.tree.map(lambda x: x, template)
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)


def init_state(params: dict, tx: optax.GradientTransformation) -> dict[str, Any]:
  zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the state is donated
  return {
    "params": params,
    "opt_state": tx.init(params),
    "step": zero(),
    "updates": zero(),
    "nonfinite_total": zero(),
    "nonfinite_run": zero(),
  }


def _sums(m: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The additive quantities of one loss evaluation (the feature penalty weighted by masked
  frames)."""
  out = {k: m[k] for k in SUMMED if k != "pen_weighted"}
  out["pen_weighted"] = m["features_pen"] * m["num_masked"]
  return out


def make_train_step(
  graphdef: nnx.GraphDef,
  template: nnx.State,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  ocfg: ObjectiveConfig,
  cqt_bins: int,
) -> Callable[[dict, dict, jax.Array], tuple[dict, dict]]:
  def micro(params, batch, key):
    def loss_sum(p):
      _, m = pretraining_loss(bind(graphdef, template, p), batch, key, cfg=ocfg)
      return m["loss_sum"], m

    (_, m), grads = jax.value_and_grad(loss_sum, has_aux=True)(params)
    return grads, _sums(m)

  def train_step(state, batch, seed_key):
    key = jax.random.fold_in(seed_key, state["step"])
    params = state["params"]
    accum = batch["audio"].shape[0]
    if accum == 1:
      grads, sums = micro(params, jax.tree.map(lambda x: x[0], batch), jax.random.fold_in(key, 0))
    else:

      def body(carry, xs):
        g_acc, s_acc = carry
        mb, i = xs
        g, s = micro(params, mb, jax.random.fold_in(key, i))
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, s)), None

      zeros_g = jax.tree.map(jnp.zeros_like, params)
      zeros_s = jax.eval_shape(lambda: micro(params, jax.tree.map(lambda x: x[0], batch), key)[1])
      zeros_s = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), zeros_s)
      (grads, sums), _ = jax.lax.scan(body, (zeros_g, zeros_s), (batch, jnp.arange(accum)))
    n = jnp.maximum(sums["num_masked"], 1.0)
    grads = jax.tree.map(lambda g: g / n, grads)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums["loss_sum"])
    updates, new_opt = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    metrics = normalise_sums(sums, cqt_bins)
    metrics.update(grad_norm=grad_norm, lr=schedule(state["updates"]), finite=finite)
    metrics["code_counts"] = sums["code_counts"]  # (K, C): the loop pops it (train/health.py)
    new_state = {
      "params": keep(new_params, params),
      "opt_state": keep(new_opt, state["opt_state"]),
      "step": state["step"] + 1,
      "updates": state["updates"] + finite.astype(jnp.int32),
      "nonfinite_total": state["nonfinite_total"] + (~finite).astype(jnp.int32),
      "nonfinite_run": jnp.where(finite, 0, state["nonfinite_run"] + 1),
    }
    return new_state, metrics

  return train_step


def make_eval_step(
  graphdef: nnx.GraphDef, template: nnx.State, ocfg: ObjectiveConfig, cqt_bins: int
) -> Callable[[dict, dict, jax.Array], dict]:
  """Deterministic (no dropout) loss sums on a held-out batch; masking and mixup use ``key``."""

  def eval_step(params, batch, key):
    mb = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
    _, m = pretraining_loss(bind(graphdef, template, params), mb, key, cfg=ocfg, deterministic=True)
    return _sums(m)

  return eval_step
