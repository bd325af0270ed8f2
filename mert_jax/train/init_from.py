"""Start a run from pretrained weights: ``--config.init_from=SOURCE`` (``init_from_step=N`` for
a workdir source).

SOURCE is one of

  a Hugging Face folder or hub id   stock Hubert, a published MERT folder (model_type mert_model,
                                    pytorch_model.bin with legacy names) or a ``jax-to-hf`` export
  a model checkpoint                written by ``convert hf-to-jax`` (model_config.json + params/)
  a training workdir                its latest complete checkpoint, or ``init_from_step``
  a fairseq checkpoint (``*.pt``)   MERT's own (yizhilll/MERT), e.g. MERT-v1-95M_fairseq.pt

The backbone is always loaded; the pretraining heads (final projection, label embeddings, CQT
head) when the source holds them (workdirs, model checkpoints, fairseq files, this project's
exports), else they start fresh from ``config.seed`` and the start-up line says so. The optimizer
state and the step counters always start fresh, so the run's own schedule (warm-up, peak, length)
applies from step 0. A workdir that already holds a checkpoint resumes from it instead.

Every check happens on the host before the train step is compiled: a source whose architecture
differs from the run's is refused with one line naming the config field or the parameter and
both values (``InitFromError``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx

from mert_jax import workdir_files
from mert_jax.checkpointing import model_checkpoint
from mert_jax.config import ModelConfig
from mert_jax.files.atomic import atomic_write_text
from mert_jax.hf import export_files, hub
from mert_jax.model.mert import MERTModel

# The workdir file recording where the run's initial weights came from.

# ModelConfig fields that decide which computation the backbone's weights are meant for. Any
# difference is refused, including those that leave every shape alike (layer-norm placement, the
# attention relaxation, epsilon).
BACKBONE_FIELDS = (
  "conv_layers",
  "extractor_mode",
  "conv_bias",
  "hidden_size",
  "num_layers",
  "num_heads",
  "ffn_size",
  "layer_norm_first",
  "layer_norm_eps",
  "pos_conv_kernel",
  "pos_conv_groups",
  "attention_relax",
  "sample_rate",
)
# ... and those of the pretraining heads, compared only when the source holds heads.
HEAD_FIELDS = ("num_codebooks", "codebook_size", "num_special_labels", "final_dim", "cqt_bins")


class InitFromError(ValueError):
  """The init_from source cannot initialise this run (the message is one line)."""


@dataclasses.dataclass
class Pretrained:
  """Weights read from an init_from source."""

  source: str  # as given
  kind: str  # "hf", "model checkpoint", "workdir", "fairseq"
  model_cfg: ModelConfig  # the source's architecture (heads: the run's when not in the source)
  params: dict[str, Any]  # {"backbone": ..., "heads": ...} float32 numpy, the model's layout
  heads_loaded: bool
  note: str  # one line: what was loaded and what starts fresh


def source_kind(source: str) -> str:
  """Which of the supported sources ``source`` names (see the module docstring)."""
  p = epath.Path(source)
  if p.suffix == ".pt":
    return "fairseq"
  if model_checkpoint.is_workdir(p):
    return "workdir"
  if (p / model_checkpoint.MODEL_CONFIG).exists():
    return "model checkpoint"
  if (p / export_files.HF_CONFIG_FILE).exists():
    return "hf"
  if hub.looks_like_hub_id(source):
    return "hf"  # such as m-a-p/MERT-v1-95M
  raise InitFromError(
    f"init_from={source}: not a Hugging Face folder ({export_files.HF_CONFIG_FILE}), a model "
    f"checkpoint ({model_checkpoint.MODEL_CONFIG}), a training workdir "
    f"({workdir_files.CHECKPOINTS}/ and {workdir_files.CONFIG}) or a fairseq .pt file"
  )


def _model_params(model: MERTModel) -> dict[str, Any]:
  return jax.tree.map(
    lambda x: np.asarray(x, np.float32), nnx.to_pure_dict(nnx.state(model, nnx.Param))
  )


def load_pretrained(
  source: str, run_cfg: ModelConfig, *, step: int | None = None, seed: int = 0
) -> Pretrained:
  """Reads ``source``'s weights on the host. Heads missing from the source are initialised from
  ``seed`` with the run's head fields."""
  kind = source_kind(source)
  if step is not None and kind != "workdir":
    raise InitFromError(
      f"init_from_step={step} applies to a training workdir; {source} is a {kind} source"
    )
  try:
    if kind == "hf":
      from mert_jax.hf.convert import import_hf  # pylint: disable=g-import-not-at-top

      model, heads = import_hf(source, seed=seed, base=run_cfg)  # downloads a hub id
      note = "heads from the folder" if heads else "no heads in the folder: heads start fresh"
    elif kind == "fairseq":
      from mert_jax.hf.fairseq import import_fairseq  # pylint: disable=g-import-not-at-top

      model, report = import_fairseq(source, seed=seed, base=run_cfg)
      heads, note = True, report
    else:
      model = model_checkpoint.load_model(source, step=step)
      heads = True
      note = "backbone and heads" + (f" of step {step}" if step is not None else "")
  except InitFromError:
    raise
  except (ValueError, FileNotFoundError, ImportError) as e:
    raise InitFromError(f"init_from={source}: {e}") from e
  return Pretrained(source, kind, model.cfg, _model_params(model), bool(heads), note)


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
  return {
    ".".join(str(getattr(k, "key", k)) for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def check_compatible(pre: Pretrained, run_cfg: ModelConfig, abstract_params: dict) -> None:
  """Refuses a source whose architecture differs from the run's: first the parameters (name and
  both shapes), then the config fields that change no shape."""
  fields = BACKBONE_FIELDS + (HEAD_FIELDS if pre.heads_loaded else ())
  differ = [f for f in fields if getattr(pre.model_cfg, f) != getattr(run_cfg, f)]
  hint = ", ".join(
    f"model.{f} {getattr(pre.model_cfg, f)} there vs {getattr(run_cfg, f)} here" for f in differ
  )
  hint = f" ({hint})" if hint else ""
  want, have = _flat(abstract_params), _flat(pre.params)
  groups = ("backbone", "heads") if pre.heads_loaded else ("backbone",)
  for name, like in want.items():
    if name.split(".")[0] not in groups:
      continue
    if name not in have:
      raise InitFromError(
        f"init_from={pre.source}: parameter {name} {tuple(like.shape)} of this run is not in "
        f"the source{hint}"
      )
    if tuple(have[name].shape) != tuple(like.shape):
      raise InitFromError(
        f"init_from={pre.source}: parameter {name} has shape {tuple(have[name].shape)} in the "
        f"source but {tuple(like.shape)} in this run{hint}"
      )
  extra = sorted(n for n in have if n.split(".")[0] in groups and n not in want)
  if extra:
    raise InitFromError(
      f"init_from={pre.source}: parameter {extra[0]} of the source has no place in this run{hint}"
    )
  if differ:
    raise InitFromError(
      f"init_from={pre.source}: the source was built with {hint.strip(' ()')}; set the run's "
      f"model fields to the source's (e.g. --config.model.{differ[0]}="
      f"{getattr(pre.model_cfg, differ[0])})"
    )


def initial_params(pre: Pretrained, abstract_params: dict) -> dict[str, Any]:
  """The parameter groups the source provides (``backbone``, and ``heads`` when loaded), as host
  arrays in the run's dtypes; ``TrainSetup.init`` places them on their shards."""
  groups = ("backbone", "heads") if pre.heads_loaded else ("backbone",)
  return {
    g: jax.tree.map(lambda like, x: np.asarray(x, like.dtype), abstract_params[g], pre.params[g])
    for g in groups
  }


def record(workdir: str, pre: Pretrained, step: int | None) -> None:
  """Writes WORKDIR/init_from.json: the source, its kind and step, and what was loaded."""
  text = json.dumps(
    {
      "source": os.fspath(pre.source),
      "kind": pre.kind,
      "step": step,
      "heads_loaded": pre.heads_loaded,
      "note": pre.note,
    },
    indent=2,
  )
  atomic_write_text(epath.Path(workdir) / workdir_files.INIT_FROM, text)
