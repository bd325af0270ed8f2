"""Training the MARBLE v1 probe head (head.py) on frozen features: Adam, batches of 64, the
learning rate halved when the validation metric stops improving (ReduceLROnPlateau, factor 0.5),
early stopping on the validation metric, the learning rate picked on validation from a grid, and
the test metric reported at the best validation point. Deterministic given the seed.

The spec gives the factor (0.5), the grid and the head; the two patiences and the epoch limit are
not in it (MARBLE's own configs were not read for them): they are this project's choices, fields of
ProbeConfig, and each result records the config it ran with.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mert_jax.probe import head as head_lib
from mert_jax.probe import metrics

Metric = metrics.Metric


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """The probe's training settings (MARBLE v1 where the spec says so)."""

  hidden: int = 512  # head width (MARBLE v1)
  dropout: float = 0.2  # after the ReLU (MARBLE v1)
  batch_size: int = 64  # examples per Adam step (MARBLE v1)
  learning_rates: tuple[float, ...] = (1e-2, 5e-3, 1e-3, 5e-4, 1e-4)  # the grid (MARBLE v1)
  plateau_factor: float = 0.5  # ReduceLROnPlateau's factor (MARBLE v1)
  # epochs without a better validation metric before the learning rate is halved (not in the
  # spec: this project's choice)
  plateau_patience: int = 3
  # epochs without a better validation metric before training stops (not in the spec: this
  # project's choice)
  early_stop_patience: int = 8
  max_epochs: int = 100  # the most epochs per learning rate (not in the spec)
  seed: int = 0  # head initialisation, dropout and batch order


@dataclasses.dataclass(frozen=True)
class Split:
  """Features (N, L + 1, D), or (N, L + 1, T, D) for a frame-level task, float32 or float16, and
  integer labels (N,) or (N, T) of one split."""

  features: np.ndarray
  labels: np.ndarray


# Adam with its learning rate in its state (set per run, halved on plateaus): one optimizer, so
# one compiled step per (layer, dropout) and shape serves every learning rate of the grid.
OPTIMIZER = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)


@functools.cache
def _train_step(dropout: float, optimizer: optax.GradientTransformation = OPTIMIZER):
  """The jitted Adam step on one padded batch (``weight``: 1 for real examples, 0 for padding);
  the layer is an argument, so one program per shape serves every layer."""

  def loss_fn(params, x, y, weight, layer, key):
    logits = head_lib.head_logits(params, x, layer, dropout, key)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)  # (B,) or (B, T) per frame
    w = weight.reshape(weight.shape + (1,) * (ce.ndim - 1)) * jnp.ones_like(ce)
    return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)

  @jax.jit
  def step(params, opt_state, x, y, weight, layer, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, weight, layer, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


@jax.jit
def _eval_logits(params: head_lib.Params, feats: jax.Array, layer: jax.Array) -> jax.Array:
  return head_lib.head_logits(params, feats, layer, 0.0, None)


def predict(params: head_lib.Params, feats: np.ndarray, layer: int) -> np.ndarray:
  """Predicted class per example, or per frame of frame-level features (no dropout)."""
  return np.asarray(jnp.argmax(_eval_logits(params, feats, jnp.int32(layer)), axis=-1))


def fit_head(
  train: Split, valid: Split, test: Split, *, layer: int, lr: float, classes: int,
  metric: Metric, cfg: ProbeConfig = ProbeConfig(),
) -> dict[str, Any]:  # fmt: skip
  """Train one head at learning rate ``lr`` on ``layer`` (or head.WEIGHTED); returns the best
  validation metric, the test metric at that point, the epoch, and the final learning rate."""
  shape = train.features.shape  # (N, L + 1, [T,] D)
  n, layers_plus_one, dim = shape[0], shape[1], shape[-1]
  key = jax.random.key(cfg.seed)
  key, init_key = jax.random.split(key)
  params = head_lib.init_head(init_key, dim, classes, layers_plus_one - 1, cfg.hidden)
  opt_state = OPTIMIZER.init(params)
  opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
  step = _train_step(cfg.dropout)
  layer_arg = jnp.int32(layer)
  rng = np.random.default_rng(cfg.seed)
  bs = cfg.batch_size
  steps = math.ceil(n / bs)
  best = {"valid": -math.inf, "test": None, "epoch": 0, "params": params}
  since_best = since_cut = 0
  for epoch in range(1, cfg.max_epochs + 1):
    order = rng.permutation(n)
    order = np.concatenate([order, np.zeros(steps * bs - n, order.dtype)])  # static shapes
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(steps * bs - n, np.float32)])
    for s in range(steps):
      idx = order[s * bs : (s + 1) * bs]
      key, dropout_key = jax.random.split(key)
      params, opt_state, _ = step(
        params,
        opt_state,
        train.features[idx],
        train.labels[idx],
        weight[s * bs : (s + 1) * bs],
        layer_arg,
        dropout_key,
      )
    score = metric(valid.labels, predict(params, valid.features, layer))
    if score > best["valid"]:
      test_score = metric(test.labels, predict(params, test.features, layer))
      best = {"valid": score, "test": test_score, "epoch": epoch, "params": params}
      since_best = since_cut = 0
      continue
    since_best, since_cut = since_best + 1, since_cut + 1
    if since_best >= cfg.early_stop_patience:
      break
    if since_cut >= cfg.plateau_patience:
      opt_state.hyperparams["learning_rate"] = (
        opt_state.hyperparams["learning_rate"] * cfg.plateau_factor
      )
      since_cut = 0
  return {
    "valid": float(best["valid"]),
    "test": float(best["test"]),
    "best_epoch": best["epoch"],
    "epochs": epoch,
    "lr": lr,
    "final_lr": float(opt_state.hyperparams["learning_rate"]),
    "params": best["params"],
  }


def probe_layer(
  train: Split, valid: Split, test: Split, *, layer: int, classes: int, metric: Metric,
  cfg: ProbeConfig = ProbeConfig(),
) -> dict[str, Any]:  # fmt: skip
  """The grid over ``cfg.learning_rates``: the run with the best validation metric (ties: the
  first in the grid), with every learning rate's validation score."""
  runs = [
    fit_head(train, valid, test, layer=layer, lr=lr, classes=classes, metric=metric, cfg=cfg)
    for lr in cfg.learning_rates
  ]
  best = max(runs, key=lambda r: r["valid"])  # max keeps the first of equal scores
  return {**best, "valid_by_lr": {str(r["lr"]): r["valid"] for r in runs}}
