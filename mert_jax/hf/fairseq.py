"""Import MERT's fairseq pretraining checkpoints (``MERT-v1-95M_fairseq.pt``, ...), heads included.

A fairseq checkpoint is ``torch.save`` of a dict: ``cfg`` (the hydra config as plain nested dicts:
``model``, ``task``, ...; very old files carry an ``argparse.Namespace`` under ``args`` instead),
``model`` (the state dict), ``task_state`` (the label ``Dictionary`` objects), ``extra_state``,
``optimizer_history``, ``last_optimizer_state``, ``criterion``. Only ``cfg``/``args``, ``model``
and the dictionary sizes are used.

Reading never runs code from the file: ``torch.load(weights_only=True)`` with a small allowlist of
data-only globals real fairseq files contain (``argparse.Namespace``, numpy scalars/arrays/dtypes,
and a data-only stand-in for ``fairseq.data.dictionary.Dictionary``). Any other global is refused
with ``UnsafeCheckpointError`` naming it. ``conv_feature_layers`` (a Python expression that fairseq
``eval``s) is parsed by a literal-only walker: lists, tuples, ints, ``+`` and ``*``.

Name mapping (fairseq -> HF HubertModel names, then ``convert.load_backbone_state_dict``):
``feature_extractor.conv_layers.i.0`` conv, ``.2`` GroupNorm (layer 0, "default" mode) or ``.2.1``
LayerNorm ("layer_norm" mode) -> ``...conv_layers.i.{conv,layer_norm}``; ``post_extract_proj`` ->
``feature_projection.projection`` (absent in fairseq when conv width == model width: then the
identity); ``layer_norm`` -> ``feature_projection.layer_norm``; ``mask_emb`` ->
``masked_spec_embed``; ``encoder.pos_conv.0.weight_g/weight_v`` -> ``...parametrizations.weight.
original0/1``; ``encoder.layers.N.{self_attn.*_proj, self_attn_layer_norm, fc1, fc2,
final_layer_norm}`` -> ``attention.*_proj``, ``layer_norm``, ``feed_forward.{intermediate,output}
_dense``, ``final_layer_norm``. Heads: ``final_proj`` (D -> K * final_dim, chunk k = codebook k;
``final_projs.k`` of ``random_codebook`` runs are concatenated), ``label_embs_concat``,
``encoder_cqt_model.fc`` -> ``cqt_head``. Skipped: the nnAudio buffers
``encoder_cqt_model.spec_layer.*`` (our CQT target is computed on the fly), the mel head
``encoder_mel_model.*`` and ``logit_temp_list`` (learnable temperatures); the report says so.

Refused (one-line ValueError; every published MERT-v1 model passes): ``deepnorm``, ``subln``,
``feature_extractor_cqt``, ``untie_final_proj=False``, ``target_glu``, ``activation_fn`` other than
gelu, ``layer_type`` other than transformer, ``audio_extract_type`` other than w2v_conv,
``pos_conv_depth`` != 1, ``wav_normalize``, ``do_cnn_feat_stable_layernorm``, ``extractor_mode``
other than default/layer_norm. Training-only options (masking, mixup, dropout_features, logit_temp,
skip_masked, required_seq_len_multiple, ...) do not change the network and are ignored.

Why 1028 labels per codebook: fairseq's ``label_embs_concat`` has ``sum_k len(dictionary_k)`` rows,
and each ``Dictionary`` (``dict.<label>.txt``) holds the 4 specials ``<s> <pad> </s> <unk>`` before
the codes, so an RVQ codebook of 1024 codes gives 1028 rows (8 x 1028 = 8224 for MERT-v1). A code c
is label c + 4; the special rows are never targets but are negatives in every softmax, so they are
kept (``ModelConfig.num_special_labels`` = 4).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import pickle
import re
import zipfile
from typing import Any

import numpy as np
from etils import epath

from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.hf.convert import (
  UnsafeCheckpointError,
  heads_to_state_dict,
  load_backbone_state_dict,
  load_heads_state_dict,
)
from mert_jax.model.mert import MERTModel, create_model

# MERTConfig's defaults (reference mert_model.py), used when a cfg lacks a field (fairseq saves
# every field, so this matters only for hand-made or legacy files).
_MERT_DEFAULTS: dict[str, Any] = {
  "extractor_mode": "default",
  "encoder_layers": 12,
  "encoder_embed_dim": 768,
  "encoder_ffn_embed_dim": 3072,
  "encoder_attention_heads": 12,
  "activation_fn": "gelu",
  "layer_type": "transformer",
  "dropout": 0.1,
  "attention_dropout": 0.1,
  "activation_dropout": 0.0,
  "encoder_layerdrop": 0.0,
  "dropout_input": 0.0,
  "final_dim": 0,
  "untie_final_proj": False,
  "layer_norm_first": False,
  "audio_extract_type": "w2v_conv",
  "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
  "conv_bias": False,
  "target_glu": False,
  "feature_grad_mult": 1.0,
  "conv_pos": 128,
  "conv_pos_groups": 16,
  "pos_conv_depth": 1,
  "audio_cqt_loss_m": False,
  "audio_cqt_bins": 84,
  "audio_mel_loss_m": False,
  "feature_extractor_cqt": False,
  "learnable_temp": False,
  "deepnorm": False,
  "subln": False,
  "attention_relax": -1.0,
  "do_cnn_feat_stable_layernorm": False,
  "wav_normalize": False,
}

# Options that change the network: field -> (the only value mert_jax implements, what another
# value would mean).
_REFUSED_OPTIONS: dict[str, tuple[Any, str]] = {
  "deepnorm": (False, "DeepNorm residual scaling"),
  "subln": (False, "a Sub-LayerNorm inside each FFN"),
  "feature_extractor_cqt": (False, "a CQT front end concatenated to the conv features"),
  "untie_final_proj": (True, "one final_proj shared by all codebooks"),
  "target_glu": (False, "a GLU applied to the label embeddings"),
  "activation_fn": ("gelu", "another FFN activation"),
  "layer_type": ("transformer", "another encoder layer type"),
  "audio_extract_type": ("w2v_conv", "another waveform front end"),
  "pos_conv_depth": (1, "a multi-layer positional convolution"),
  "wav_normalize": (False, "a layer norm over the raw waveform inside the model"),
  "do_cnn_feat_stable_layernorm": (False, "non-affine layer norms around post_extract_proj"),
}

_MODEL_NAMES = ("mert", "hubert")


@dataclasses.dataclass
class FairseqCheckpoint:
  """What is used of a fairseq checkpoint. ``state``: the model's tensors as float32 numpy
  (fairseq/PyTorch names and layouts); ``dictionary_sizes``: len() of each label dictionary in
  ``task_state`` (empty when the file has none); ``stored_dtypes``: the tensors' dtypes in the file
  (``fp16`` runs store float16 weights; the float32 copies are exact)."""

  model_cfg: dict[str, Any]
  task_cfg: dict[str, Any]
  state: dict[str, np.ndarray]
  dictionary_sizes: tuple[int, ...] = ()
  path: str = ""
  stored_dtypes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- safe reading


class _FairseqDictionary:
  """Data-only stand-in for ``fairseq.data.dictionary.Dictionary`` (``task_state`` holds one per
  label set). Unpickling only fills ``__dict__`` with plain lists and dicts; no fairseq code
  runs."""


def _safe_globals() -> list[Any]:
  """The allowlist for ``torch.load(weights_only=True)``, as (object, pickled name) pairs.

  An allowlist rather than a parse-and-skip reader: torch's weights-only unpickler already refuses
  every other global (and blocks os/sys/subprocess outright), so the file is read by one audited
  unpickler and only these data-only types are added: ``argparse.Namespace`` (legacy ``args``;
  filled by ``__dict__`` update), numpy scalars/dtypes (``extra_state`` metrics such as
  ``val_loss`` are ``np.float64``), numpy arrays (numpy refuses object pointers from raw bytes),
  and the stand-in Dictionary above. Names are given for numpy 1 (``numpy.core``) and numpy 2
  (``numpy._core``) pickles."""
  try:
    from numpy._core import multiarray  # pylint: disable=g-import-not-at-top
  except ImportError:  # numpy 1
    from numpy.core import multiarray  # pylint: disable=g-import-not-at-top
  out: list[Any] = [
    (argparse.Namespace, "argparse.Namespace"),
    (np.dtype, "numpy.dtype"),
    (np.ndarray, "numpy.ndarray"),
    (_FairseqDictionary, "fairseq.data.dictionary.Dictionary"),
  ]
  for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    out.append((multiarray.scalar, f"{mod}.scalar"))
    out.append((multiarray._reconstruct, f"{mod}._reconstruct"))  # pylint: disable=protected-access
  dtypes = getattr(np, "dtypes", None)
  for name in ("Float64", "Float32", "Float16", "Int64", "Int32", "Int16", "Int8", "UInt8", "Bool"):
    cls = getattr(dtypes, f"{name}DType", None)
    if cls is not None:
      out.append((cls, f"numpy.dtypes.{name}DType"))
  return out


def _refusal(path: Any, err: BaseException) -> str:
  """One line naming the file, what torch's weights-only reader refused, and what to do."""
  msg = str(err)
  todo = (
    "If you trust the file, re-save just its 'cfg' (plain dicts) and 'model' (tensors) entries "
    "with torch.save in an environment you trust, then import that."
  )
  m = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", msg)
  if m:
    return (
      f"{path}: refused: unpickling it needs the Python global {m.group(1)!r}, which is not on "
      f"mert_jax's allowlist of data-only types (loading it could run code). {todo}"
    )
  lines = [line.strip() for line in msg.splitlines() if line.strip()]
  reason = next(
    (
      line.split("WeightsUnpickler error:", 1)[-1].strip() or nxt
      for line, nxt in zip(lines, lines[1:] + [""])
      if "WeightsUnpickler error:" in line
    ),
    lines[-1] if lines else type(err).__name__,
  )
  return (
    f"{path}: refused: torch's weights-only reader stopped at {reason[:200]!r}; the file is not a "
    f"PyTorch checkpoint, or one that can only be loaded by running code. {todo}"
  )


def _import_torch(p: Any):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
      f"{p} is a fairseq (PyTorch pickle) checkpoint; reading it needs the torch extra "
      f"(pip install -e '.[torch]')."
    ) from e
  return torch


def _plain(x: Any) -> dict[str, Any]:
  if isinstance(x, argparse.Namespace):
    return dict(vars(x))
  return dict(x) if isinstance(x, dict) else {}


def read_fairseq_checkpoint(path: str | os.PathLike) -> FairseqCheckpoint:
  """Read a fairseq checkpoint without running code from it (see ``_safe_globals``)."""
  p = epath.Path(path)
  torch = _import_torch(p)
  local = os.fspath(path)
  try:
    with torch.serialization.safe_globals(_safe_globals()):
      if os.path.isfile(local) and zipfile.is_zipfile(local):
        # mmap: the optimizer state (2x the weights) is never read into memory.
        obj = torch.load(local, map_location="cpu", weights_only=True, mmap=True)
      else:
        with p.open("rb") as f:
          obj = torch.load(f, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise UnsafeCheckpointError(_refusal(p, e)) from e
  except (RuntimeError, EOFError, OSError, ValueError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ValueError(f"{p}: not a readable PyTorch checkpoint ({first})") from e
  if not isinstance(obj, dict):
    raise ValueError(
      f"{p}: not a fairseq checkpoint: expected a dict with 'cfg' and 'model', "
      f"found {type(obj).__name__}"
    )
  sd = obj.get("model")
  if not isinstance(sd, dict):
    raise ValueError(
      f"{p}: not a fairseq checkpoint: no 'model' state dict "
      f"(top-level keys: {sorted(map(str, obj))[:12]})"
    )
  cfg = obj.get("cfg")
  if isinstance(cfg, dict) and isinstance(cfg.get("model"), (dict, argparse.Namespace)):
    model_cfg, task_cfg = _plain(cfg["model"]), _plain(cfg.get("task"))
  elif isinstance(obj.get("args"), argparse.Namespace):  # pre-hydra fairseq: one flat namespace
    model_cfg = task_cfg = dict(vars(obj["args"]))
  else:
    raise ValueError(
      f"{p}: fairseq checkpoint without a config: no 'cfg' with a 'model' section and no legacy "
      f"'args', so the architecture cannot be known"
    )
  state, bad, dtypes = {}, [], set()
  for k, v in sd.items():
    if not isinstance(v, torch.Tensor):
      bad.append(k)
      continue
    dtypes.add(str(v.dtype).removeprefix("torch."))
    state[str(k)] = np.array(v.detach().to(torch.float32).numpy(), dtype=np.float32, copy=True)
  if bad:
    raise ValueError(f"{p}: 'model' holds non-tensor entries {bad[:8]}")
  sizes = []
  task_state = obj.get("task_state")
  if isinstance(task_state, dict):
    dicts = task_state.get("dictionaries", task_state.get("target_dictionary"))
    for d in dicts if isinstance(dicts, (list, tuple)) else [dicts]:
      symbols = getattr(d, "symbols", None)
      if isinstance(symbols, list):
        sizes.append(len(symbols))
  return FairseqCheckpoint(model_cfg, task_cfg, state, tuple(sizes), str(p), tuple(sorted(dtypes)))


# --------------------------------------------------------------------------- conv_feature_layers

_MAX_CONV_LAYERS = 64
_MAX_INT = 1 << 20


def parse_conv_feature_layers(
  spec: str, *, source: str = "conv_feature_layers"
) -> tuple[tuple[int, int, int], ...]:
  """fairseq's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, parsed
  without eval: only list/tuple/int literals, ``+`` and ``*`` (with bounded sizes)."""
  where = f"{source}: conv_feature_layers={str(spec)[:120]!r}"
  if not isinstance(spec, str) or len(spec) > 2000:
    raise ValueError(f"{where} is not a short string")
  try:
    tree = ast.parse(spec.strip(), mode="eval")
  except SyntaxError as e:
    raise ValueError(f"{where} is not a Python literal expression ({e.msg})") from None

  def bad(node: ast.AST, why: str) -> ValueError:
    return ValueError(
      f"{where}: {why} `{ast.unparse(node)[:60]}`; only list/tuple/int literals, + and * are "
      f"allowed"
    )

  def ev(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) is int:
      if abs(node.value) > _MAX_INT:
        raise bad(node, "integer too large:")
      return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
      items = [ev(e) for e in node.elts]
      if len(items) > _MAX_CONV_LAYERS:
        raise bad(node, "too many items in")
      return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
      a, b = ev(node.left), ev(node.right)
      if isinstance(node.op, ast.Add):
        if type(a) is not type(b):
          raise bad(node, "mismatched operands of +")
        out = a + b
      elif isinstance(a, int) and isinstance(b, int):
        out = a * b
      elif isinstance(a, (list, tuple)) and isinstance(b, int):
        out = a * max(0, min(b, _MAX_CONV_LAYERS + 1))
      elif isinstance(a, int) and isinstance(b, (list, tuple)):
        out = b * max(0, min(a, _MAX_CONV_LAYERS + 1))
      else:
        raise bad(node, "unsupported operands of *")
      if isinstance(out, int) and abs(out) > _MAX_INT:
        raise bad(node, "integer too large:")
      if not isinstance(out, int) and len(out) > _MAX_CONV_LAYERS:
        raise bad(node, "too many items in")
      return out
    raise bad(node, f"{type(node).__name__} is not allowed:")

  layers = ev(tree.body)
  ok = (
    isinstance(layers, list)
    and layers
    and all(
      isinstance(lay, (list, tuple))
      and len(lay) == 3
      and all(isinstance(v, int) and v > 0 for v in lay)
      for lay in layers
    )
  )
  if not ok:
    raise ValueError(f"{where} is not a non-empty list of (dim, kernel, stride) positive ints")
  return tuple((int(c), int(k), int(s)) for c, k, s in layers)


# --------------------------------------------------------------------------- names

_BACKBONE_RULES: list[tuple[re.Pattern[str], str]] = [
  (re.compile(p), r)
  for p, r in [
    (
      r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)",
      r"feature_extractor.conv_layers.\1.conv.\2",
    ),
    (
      r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)",
      r"feature_extractor.conv_layers.\1.layer_norm.\2",
    ),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"mask_emb", "masked_spec_embed"),
    (
      r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
      "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    ),
    (
      r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
      "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    ),
    (r"encoder\.pos_conv\.0\.bias", "encoder.pos_conv_embed.conv.bias"),
    (
      r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)",
      r"encoder.layers.\1.attention.\2_proj.\3",
    ),
    (
      r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)",
      r"encoder.layers.\1.layer_norm.\2",
    ),
    (
      r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)",
      r"encoder.layers.\1.feed_forward.intermediate_dense.\2",
    ),
    (
      r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)",
      r"encoder.layers.\1.feed_forward.output_dense.\2",
    ),
    (
      r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)",
      r"encoder.layers.\1.final_layer_norm.\2",
    ),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
  ]
]
_HEAD_KEY = re.compile(
  r"final_proj\.(weight|bias)|final_projs\.\d+\.(weight|bias)|label_embs_concat"
  r"|encoder_cqt_model\.fc\.(weight|bias)"
)
# Not parameters of this model, dropped on purpose (see the module docstring).
_SKIPPED_KEY = re.compile(
  r"encoder_cqt_model\.spec_layer\..+|encoder_mel_model\..+|logit_temp_list"
)


def fairseq_to_hf_backbone(
  state: dict[str, np.ndarray], *, source: str = "fairseq checkpoint"
) -> dict[str, np.ndarray]:
  """The backbone tensors of a fairseq MERT/HuBERT state dict under HF HubertModel names (both
  extractor modes; legacy weight_g/weight_v -> parametrizations.weight.original0/1). Keys that are
  neither backbone, heads nor known-skippable raise ValueError."""
  out, unknown = {}, []
  for k, v in state.items():
    if _HEAD_KEY.fullmatch(k) or _SKIPPED_KEY.fullmatch(k):
      continue
    for pat, repl in _BACKBONE_RULES:
      if pat.fullmatch(k):
        out[pat.sub(repl, k)] = v
        break
    else:
      unknown.append(k)
  if unknown:
    raise ValueError(
      f"{source}: tensors mert_jax does not know how to map: {sorted(unknown)[:12]}"
      f"{' ...' if len(unknown) > 12 else ''}"
    )
  # fairseq has no post_extract_proj when the conv width equals the model width (identity).
  w = "feature_projection.projection.weight"
  if w not in out and "feature_projection.layer_norm.weight" in out and "masked_spec_embed" in out:
    c, d = out["feature_projection.layer_norm.weight"].shape[0], out["masked_spec_embed"].shape[0]
    if c == d:
      out[w] = np.eye(d, dtype=np.float32)
      out["feature_projection.projection.bias"] = np.zeros((d,), np.float32)
  return out


def fairseq_heads(
  state: dict[str, np.ndarray], *, source: str = "fairseq checkpoint"
) -> dict[str, np.ndarray] | None:
  """The pretraining heads in ``convert.load_heads_state_dict`` naming: ``final_proj.weight``
  (K*final_dim, D), ``final_proj.bias``, ``label_embs_concat`` (rows, final_dim) and, when the
  file has a CQT head (``audio_cqt_loss_m``), ``cqt_head.weight`` (bins, D) / ``cqt_head.bias``.
  None when the file has no heads (a fine-tuning checkpoint)."""
  out: dict[str, np.ndarray] = {}
  if "final_proj.weight" in state:
    out["final_proj.weight"] = state["final_proj.weight"]
    if "final_proj.bias" not in state:
      raise ValueError(f"{source}: final_proj.weight without final_proj.bias")
    out["final_proj.bias"] = state["final_proj.bias"]
  else:  # random_codebook runs: one Linear per codebook; concatenated = chunked final_proj
    ks = sorted(
      int(m.group(1)) for k in state if (m := re.fullmatch(r"final_projs\.(\d+)\.weight", k))
    )
    if ks:
      if ks != list(range(len(ks))):
        raise ValueError(f"{source}: final_projs indices {ks} are not 0..{len(ks) - 1}")
      out["final_proj.weight"] = np.concatenate([state[f"final_projs.{k}.weight"] for k in ks])
      out["final_proj.bias"] = np.concatenate([state[f"final_projs.{k}.bias"] for k in ks])
  if "label_embs_concat" in state:
    out["label_embs_concat"] = state["label_embs_concat"]
  if not out:
    return None
  if set(out) != {"final_proj.weight", "final_proj.bias", "label_embs_concat"}:
    raise ValueError(
      f"{source}: incomplete pretraining heads: found {sorted(out)}, need final_proj and "
      f"label_embs_concat"
    )
  if "encoder_cqt_model.fc.weight" in state or "encoder_cqt_model.fc.bias" in state:
    if "encoder_cqt_model.fc.bias" not in state or "encoder_cqt_model.fc.weight" not in state:
      raise ValueError(f"{source}: encoder_cqt_model.fc has only one of weight and bias")
    out["cqt_head.weight"] = state["encoder_cqt_model.fc.weight"]
    out["cqt_head.bias"] = state["encoder_cqt_model.fc.bias"]
  return out


# --------------------------------------------------------------------------- config


def _get(model_cfg: dict[str, Any], field: str) -> Any:
  v = model_cfg.get(field)
  return _MERT_DEFAULTS[field] if v is None else v


def _check_options(model_cfg: dict[str, Any], source: str) -> None:
  name = model_cfg.get("_name", model_cfg.get("arch"))
  if name is not None and name not in _MODEL_NAMES:
    raise ValueError(f"{source}: model._name={name!r} is not a MERT/HuBERT model {_MODEL_NAMES}")
  for field, (implemented, what) in _REFUSED_OPTIONS.items():
    v = _get(model_cfg, field)
    differs = bool(v) != implemented if isinstance(implemented, bool) else v != implemented
    if differs:
      raise ValueError(
        f"{source}: model.{field}={v!r} ({what}) is not implemented by mert_jax; only "
        f"{field}={implemented!r} checkpoints (all published MERT-v1 models) can be imported"
      )
  mode = _get(model_cfg, "extractor_mode")
  if mode not in ("default", "layer_norm"):
    raise ValueError(
      f"{source}: model.extractor_mode={mode!r} is not implemented by mert_jax "
      f"(default or layer_norm)"
    )


@dataclasses.dataclass(frozen=True)
class _Heads:
  num_codebooks: int
  num_labels: int  # rows per codebook = codes + specials
  final_dim: int
  cqt_bins: int | None  # None: no CQT head in the file


def _head_shapes(ckpt: FairseqCheckpoint, source: str, final_dim: int, d: int) -> _Heads | None:
  heads = fairseq_heads(ckpt.state, source=source)
  if heads is None:
    return None
  fp, emb = heads["final_proj.weight"], heads["label_embs_concat"]
  if fp.ndim != 2 or fp.shape[1] != d:
    raise ValueError(
      f"{source}: final_proj.weight has shape {fp.shape}, expected (K*{final_dim}, {d})"
    )
  if fp.shape[0] % final_dim:
    raise ValueError(
      f"{source}: final_proj has {fp.shape[0]} outputs, not a multiple of final_dim={final_dim}"
    )
  k = fp.shape[0] // final_dim
  if emb.ndim != 2 or emb.shape[1] != final_dim:
    raise ValueError(
      f"{source}: label_embs_concat has shape {emb.shape}, expected (rows, final_dim={final_dim})"
    )
  rows = emb.shape[0]
  if rows % k:
    raise ValueError(
      f"{source}: label_embs_concat has {rows} rows, not divisible by the {k} codebooks of "
      f"final_proj ({fp.shape[0]} outputs / final_dim {final_dim}); dictionaries of unequal "
      f"sizes are not supported"
    )
  labels = rows // k
  if ckpt.dictionary_sizes and set(ckpt.dictionary_sizes) != {labels}:
    raise ValueError(
      f"{source}: task_state dictionaries hold {list(ckpt.dictionary_sizes)} symbols but "
      f"label_embs_concat has {labels} rows per codebook"
    )
  task_labels = ckpt.task_cfg.get("labels")
  if isinstance(task_labels, (list, tuple)) and len(task_labels) != k:
    raise ValueError(
      f"{source}: task.labels lists {len(task_labels)} label sets but final_proj has {k} codebooks"
    )
  bins = None
  if "cqt_head.weight" in heads:
    w = heads["cqt_head.weight"]
    if w.ndim != 2 or w.shape[1] != d:
      raise ValueError(
        f"{source}: encoder_cqt_model.fc.weight has shape {w.shape}, expected (bins, {d})"
      )
    bins = int(w.shape[0])
  return _Heads(k, labels, final_dim, bins)


def model_config_from_fairseq(
  ckpt: FairseqCheckpoint, *, source: str, base: ModelConfig | None = None
) -> ModelConfig:
  """ModelConfig of a fairseq MERT checkpoint: backbone, dropout and feature_grad_mult from
  ``cfg.model``, sample rate from ``cfg.task``, heads (K, codebook size, CQT bins) from the
  tensors. Fields the file does not determine (dtype, remat, ...; the heads when absent) come from
  ``base`` (default ``ModelConfig()``)."""
  base = base or ModelConfig()
  mc = ckpt.model_cfg
  _check_options(mc, source)
  d = int(_get(mc, "encoder_embed_dim"))
  final_dim = int(_get(mc, "final_dim"))
  final_dim = final_dim if final_dim > 0 else d
  heads = _head_shapes(ckpt, source, final_dim, d)
  fields: dict[str, Any] = {}
  if heads is not None:
    if heads.num_labels <= base.num_special_labels:
      raise ValueError(
        f"{source}: label_embs_concat has {heads.num_labels} rows per codebook, not more than the "
        f"{base.num_special_labels} fairseq specials"
      )
    fields.update(
      num_codebooks=heads.num_codebooks,
      codebook_size=heads.num_labels - base.num_special_labels,
    )
    if heads.cqt_bins is not None:
      fields["cqt_bins"] = heads.cqt_bins
      declared = mc.get("audio_cqt_bins")
      if mc.get("audio_cqt_loss_m") and declared is not None and int(declared) != heads.cqt_bins:
        raise ValueError(
          f"{source}: model.audio_cqt_bins={declared} but encoder_cqt_model.fc has "
          f"{heads.cqt_bins} outputs"
        )
  sample_rate = ckpt.task_cfg.get("sample_rate")
  cfg = base.replace(
    conv_layers=parse_conv_feature_layers(_get(mc, "conv_feature_layers"), source=source),
    extractor_mode=str(_get(mc, "extractor_mode")),
    conv_bias=bool(_get(mc, "conv_bias")),
    feature_grad_mult=float(_get(mc, "feature_grad_mult")),
    sample_rate=int(sample_rate) if sample_rate else base.sample_rate,
    hidden_size=d,
    num_layers=int(_get(mc, "encoder_layers")),
    num_heads=int(_get(mc, "encoder_attention_heads")),
    ffn_size=int(_get(mc, "encoder_ffn_embed_dim")),
    layer_norm_first=bool(_get(mc, "layer_norm_first")),
    pos_conv_kernel=int(_get(mc, "conv_pos")),
    pos_conv_groups=int(_get(mc, "conv_pos_groups")),
    layer_norm_eps=1e-5,  # fairseq's LayerNorm / Fp32GroupNorm default
    attention_relax=float(_get(mc, "attention_relax")),
    dropout=float(_get(mc, "dropout")),
    attention_dropout=float(_get(mc, "attention_dropout")),
    activation_dropout=float(_get(mc, "activation_dropout")),
    dropout_input=float(_get(mc, "dropout_input")),
    layerdrop=float(_get(mc, "encoder_layerdrop")),
    final_dim=final_dim,
    **fields,
  )
  try:
    cfg.validate()
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from None
  return cfg


# --------------------------------------------------------------------------- import


def _report(ckpt: FairseqCheckpoint, cfg: ModelConfig, heads: dict[str, np.ndarray] | None) -> str:
  parts = []
  if heads is None:
    parts.append(
      "no pretraining heads in the file: final_proj, label embeddings and CQT head are fresh"
    )
  else:
    k, ns, cb = cfg.num_codebooks, cfg.num_special_labels, cfg.codebook_size
    labels = (
      f"label_embs_concat: {k} codebooks x {cfg.num_labels} labels "
      f"({cb} codes + {ns} fairseq specials)"
    )
    if cb & (cb - 1):
      labels += (
        f" [found {cfg.num_labels} rows per codebook: {cb} is not a power of two, so the "
        f"dictionaries may hold extra symbols; codebook_size={cb} taken as found]"
      )
    parts.append(labels)
    parts.append(f"final_proj {cfg.hidden_size}->{k}x{cfg.final_dim}")
    if "cqt_head.weight" in heads:
      cqt = f"CQT head {cfg.cqt_bins} bins"
      bpo = cfg.cqt_bins // 7
      if bpo != ObjectiveConfig().cqt_bins_per_octave:
        cqt += f" (the reference CQT target used {bpo} bins/octave)"
      parts.append(cqt)
    else:
      parts.append(f"CQT head fresh ({cfg.cqt_bins} bins; audio_cqt_loss_m was off)")
  state = ckpt.state
  if any(k.startswith("encoder_mel_model.") for k in state):
    parts.append("mel head dropped")
  if "logit_temp_list" in state:
    parts.append("learnable logit temperatures dropped")
  if set(ckpt.stored_dtypes) - {"float32"}:
    parts.append(f"file tensors {'/'.join(ckpt.stored_dtypes)}, widened exactly to float32")
  if ckpt.task_cfg.get("normalize"):
    parts.append("task.normalize: feed zero-mean unit-variance audio")
  return "; ".join(parts)


def import_fairseq(
  path: str | os.PathLike,
  *,
  seed: int = 0,
  base: ModelConfig | None = None,
  **config_overrides: Any,
) -> tuple[MERTModel, str]:
  """Build a MERTModel from a fairseq MERT checkpoint, backbone and heads (the CQT head, when the
  file has none, is initialised with ``seed``). Returns (model, one-line report), e.g.
  ``"label_embs_concat: 8 codebooks x 1028 labels (1024 codes + 4 fairseq specials);
  final_proj 768->8x64; CQT head 336 bins"``. ``config_overrides`` apply on top (dtype, ...)."""
  source = str(path)
  ckpt = read_fairseq_checkpoint(path)
  cfg = model_config_from_fairseq(ckpt, source=source, base=base).replace(**config_overrides)
  cfg.validate()
  backbone = fairseq_to_hf_backbone(ckpt.state, source=source)
  heads = fairseq_heads(ckpt.state, source=source)
  model = create_model(cfg, seed=seed)
  load_backbone_state_dict(model, backbone, source=source)
  if heads is not None:
    sd = dict(heads)
    if "cqt_head.weight" not in sd:
      fresh = heads_to_state_dict(model)
      sd["cqt_head.weight"], sd["cqt_head.bias"] = fresh["cqt_head.weight"], fresh["cqt_head.bias"]
    load_heads_state_dict(model, sd, source=source)
  return model, _report(ckpt, cfg, heads)
