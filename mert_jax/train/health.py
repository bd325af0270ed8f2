"""Is the representation learning? Two numbers at every evaluation, and a warning when they say no.

* ``eval_rank_l{i}``: the effective rank of layer i's time-pooled features over a fixed set of
  validation clips (``config.health_clips`` crops at evaluation's fixed positions), as
  (sum s)^2 / sum s^2 of the singular values s of the centred (N, D) matrix (the participation
  ratio: 1 when every clip maps to one direction, D when all directions are equally used). A
  pretraining run whose features collapse shows it here long before a probe does (docs/probing.md:
  rank 4 of 256 after 1,000 steps, 30-35 for random weights).
* ``eval_prior_accuracy``: per codebook, the accuracy on the evaluation's masked frames of always
  predicting the training split's most frequent code, beside ``eval_accuracy``. The training
  frequencies are the target codes of the logged training steps (the batches of every
  ``log_every``-th step, a sample of the stream; counting restarts with the process).
  ``eval_accuracy_over_prior``: the mean accuracy minus the mean prior accuracy.

A one-line warning when the lowest layer rank falls below ``config.health_min_rank`` or when the
accuracy has not beaten the prior for ``config.health_prior_patience`` evaluations in a row.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from mert_jax.train.eval_pictures import fixed_clips
from mert_jax.train.run_config import RunConfig
from mert_jax.train.step import bind


def effective_rank(x: np.ndarray) -> float:
  """(sum s)^2 / sum s^2 of the singular values of the centred rows of ``x`` (N, D); 0 for a
  constant matrix."""
  x = np.asarray(x, np.float64)
  sv = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
  power = float(np.sum(sv**2))
  return float(np.sum(sv) ** 2 / power) if power > 0 else 0.0


def prior_accuracy(train_counts: np.ndarray, eval_counts: np.ndarray) -> np.ndarray:
  """(K,) accuracy on frames with code counts ``eval_counts`` (K, C) of predicting, per codebook,
  the most frequent code of ``train_counts`` (K, C); 0 where a codebook has no frames."""
  prior = np.argmax(train_counts, axis=1)
  hits = eval_counts[np.arange(len(prior)), prior]
  return hits / np.maximum(eval_counts.sum(axis=1), 1.0)


class Health:
  """Keeps the training code counts, computes the health numbers at each evaluation (call on
  every process: the parameters are sharded over all of them) and warns."""

  def __init__(self, setup: Any, data_dir: str, rcfg: Any, config: RunConfig):
    self.setup, self.config = setup, config
    mcfg = setup.mcfg
    self.train_counts = np.zeros((mcfg.num_codebooks, mcfg.codebook_size), np.float64)
    self.at_prior = 0  # evaluations in a row whose accuracy did not beat the prior
    self.warnings: list[str] = []  # the last evaluation's warning lines
    host = fixed_clips(data_dir, rcfg, config.health_clips)["audio"]
    replicated = NamedSharding(setup.mesh, PartitionSpec())
    self.audio = jax.make_array_from_callback(host.shape, replicated, lambda idx: host[idx])
    graphdef, template = setup.graphdef, setup.template

    def pooled(params, audio):
      out = bind(graphdef, template, params).backbone(audio, output_hidden_states=True)
      return jnp.stack([h.astype(jnp.float32).mean(axis=1) for h in out.hidden_states], axis=1)

    self._pooled = jax.jit(
      pooled, in_shardings=(setup.param_shardings, replicated), out_shardings=replicated
    )

  def add_train_counts(self, counts: np.ndarray) -> None:
    self.train_counts += np.asarray(counts, np.float64)

  def evaluate(self, params: Any, eval_scores: dict[str, Any]) -> dict[str, Any]:
    """The health numbers of ``params``, given the evaluation's scores (which must hold
    ``code_counts`` and ``accuracy``); warns when they say the run is not learning."""
    feats = np.asarray(jax.device_get(self._pooled(params, self.audio)))  # (N, L + 1, D)
    ranks = [effective_rank(feats[:, i]) for i in range(feats.shape[1])]
    prior = prior_accuracy(self.train_counts, np.asarray(eval_scores["code_counts"]))
    acc = np.asarray(eval_scores["accuracy"], np.float64)
    over = float(acc.mean() - prior.mean())
    out = {f"rank_l{i}": r for i, r in enumerate(ranks)}
    out.update(prior_accuracy=prior.tolist(), accuracy_over_prior=over)
    self.at_prior = self.at_prior + 1 if over <= 0 else 0
    self.warnings = []
    if min(ranks) < self.config.health_min_rank:
      self.warnings.append(
        f"warning: feature collapse: effective rank {min(ranks):.1f} at layer "
        f"{int(np.argmin(ranks))} < health_min_rank={self.config.health_min_rank} "
        f"({len(feats)} validation clips)"
      )
    if self.at_prior >= self.config.health_prior_patience:
      self.warnings.append(
        f"warning: not learning: masked accuracy {acc.mean():.4f} has not beaten the training "
        f"prior {prior.mean():.4f} for {self.at_prior} evaluations"
      )
    for w in self.warnings:
      logging.warning("%s", w)
    return out
