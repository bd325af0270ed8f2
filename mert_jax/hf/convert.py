"""Weight interchange with Hugging Face ``transformers`` (HubertModel / MERT folders); the command
line is ``python -m mert_jax.cli.convert``.

The JAX modules are named like HF's, so the mapping is a rule per parameter kind (one table,
``_hf_key`` / ``_to_hf`` / ``_from_hf``) rather than a list of names:

  JAX (Flax layout)                            HF (PyTorch layout)
  ...conv.kernel (k, in, out)                  ...conv.weight (out, in, k)
  ...{layer_norm,...}.scale                    ...weight
  Dense .kernel (in, out)                      .weight (out, in)
  attention.{q,k,v}_proj.kernel (D, H, dh)     .weight (H*dh, D); bias (H, dh) <-> (H*dh,)
  attention.out_proj.kernel (H, dh, D)         .weight (D, H*dh)
  encoder.pos_conv_embed.conv.g (k,)           ...conv.parametrizations.weight.original0 (1, 1, k)
  encoder.pos_conv_embed.conv.v (k, D/G, D)    ...conv.parametrizations.weight.original1 (D, D/G, k)

An exported folder holds ``config.json`` + ``model.safetensors`` (loadable with
``HubertModel.from_pretrained`` / ``AutoModel.from_pretrained``, no remote code), the published
MERT-v1 ``preprocessor_config.json`` (``AutoFeatureExtractor``), a ``README.md`` model card
(``model_card.py``), and beside them ``mert_heads.safetensors`` (final_proj, label embeddings, CQT
head) and ``mert_jax_config.json`` (the full ModelConfig), so a run can resume pretraining from an
exported model. The folder is built beside its target and renamed into place when complete; in a
bucket (``gs://``), built locally and uploaded, config.json last.

Weights are only ever read from safetensors, or from ``pytorch_model.bin`` through
``torch.load(weights_only=True)``; a pickle that would run code is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np
import safetensors.numpy
from etils import epath
from flax import nnx

from mert_jax.config import ModelConfig
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_dir, atomic_write_bytes
from mert_jax.hf.export_files import (
  HEADS_FILE,
  HF_BIN,
  HF_CONFIG_FILE,
  HF_WEIGHTS,
  MERT_CONFIG_FILE,
  PREPROCESSOR_FILE,
  README_FILE,
)
from mert_jax.model.mert import MERTModel, create_model

# MERT options of the reference code that this model does not implement (config key -> meaning).
UNIMPLEMENTED_MERT_OPTIONS = {
  "deepnorm": "DeepNorm residual scaling",
  "feature_extractor_cqt": "a CQT front end beside the conv extractor",
}


class UnsafeCheckpointError(ValueError):
  """A checkpoint file that can only be read by executing arbitrary code."""


# --------------------------------------------------------------------------- name/layout rules


def _hf_key(path: tuple[Any, ...]) -> str:
  parts = [str(p) for p in path]
  if parts[-2:] == ["conv", "g"]:
    return ".".join(parts[:-1] + ["parametrizations", "weight", "original0"])
  if parts[-2:] == ["conv", "v"]:
    return ".".join(parts[:-1] + ["parametrizations", "weight", "original1"])
  if parts[-1] in ("kernel", "scale"):
    parts[-1] = "weight"
  return ".".join(parts)


def _kind(path: tuple[Any, ...]) -> str:
  parts = [str(p) for p in path]
  leaf, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
  if parent == "conv" and leaf in ("g", "v"):
    return "pos_" + leaf
  if leaf == "kernel" and parent == "conv":
    return "conv"
  if parent in ("q_proj", "k_proj", "v_proj"):
    return "qkv_" + leaf
  if parent == "out_proj" and leaf == "kernel":
    return "out_kernel"
  if leaf == "kernel":
    return "dense"
  return "same"


def _to_hf(kind: str, x: np.ndarray) -> np.ndarray:
  if kind in ("conv", "pos_v"):
    return x.transpose(2, 1, 0)
  if kind == "pos_g":
    return x.reshape(1, 1, -1)
  if kind == "dense":
    return x.T
  if kind == "qkv_kernel":
    return x.reshape(x.shape[0], -1).T
  if kind == "qkv_bias":
    return x.reshape(-1)
  if kind == "out_kernel":
    return x.reshape(-1, x.shape[-1]).T
  return x


def _from_hf(kind: str, x: np.ndarray, like: tuple[int, ...]) -> np.ndarray:
  if kind in ("conv", "pos_v"):
    x = x.transpose(2, 1, 0)
  elif kind == "dense":
    x = x.T
  elif kind == "out_kernel":
    x = x.T
  elif kind == "qkv_kernel":
    x = x.T
  return x.reshape(like)


def backbone_to_hf_state_dict(model: MERTModel) -> dict[str, np.ndarray]:
  """HF HubertModel state dict (float32 numpy, PyTorch layouts) of the backbone."""
  out = {}
  for path, var in nnx.to_flat_state(nnx.state(model.backbone, nnx.Param)):
    out[_hf_key(path)] = np.ascontiguousarray(
      _to_hf(_kind(path), np.asarray(var.get_value(), np.float32))
    )
  return out


def heads_to_state_dict(model: MERTModel) -> dict[str, np.ndarray]:
  """The pretraining heads in fairseq/PyTorch naming and layout."""
  h = model.heads
  f32 = lambda v: np.ascontiguousarray(np.asarray(v.get_value(), np.float32))
  return {
    "final_proj.weight": f32(h.final_proj.kernel).T.copy(),
    "final_proj.bias": f32(h.final_proj.bias),
    "label_embs_concat": f32(h.label_embs),
    "cqt_head.weight": f32(h.cqt_head.kernel).T.copy(),
    "cqt_head.bias": f32(h.cqt_head.bias),
  }


def check_finite_weights(x: np.ndarray, key: str, source: str) -> None:
  """Refuses a tensor holding NaN or inf: a model imported from it would give NaN features."""
  bad = int(x.size - np.count_nonzero(np.isfinite(x)))
  if bad:
    raise ValueError(
      f"{source}: {key} holds {bad} non-finite value(s) (NaN/inf) of {x.size}; the weights are "
      f"damaged or from a diverged run, refusing to import them"
    )


def load_backbone_state_dict(model: MERTModel, sd: dict[str, np.ndarray], *, source: str) -> None:
  """Copy an HF HubertModel state dict into ``model.backbone`` (in place). Every JAX parameter
  must be found with the right shape, and every HF key must be used."""
  state = nnx.state(model.backbone, nnx.Param)
  used, missing, bad_shape = set(), [], []
  for path, var in nnx.to_flat_state(state):
    key = _hf_key(path)
    if key not in sd:
      missing.append(key)
      continue
    kind, like = _kind(path), tuple(var.get_value().shape)
    hf_shape = _to_hf(kind, np.zeros(like, np.float32)).shape
    if tuple(sd[key].shape) != tuple(hf_shape):
      bad_shape.append(f"{key}: file {tuple(sd[key].shape)} vs model {tuple(hf_shape)}")
      continue
    x = np.asarray(sd[key], np.float32)
    check_finite_weights(x, key, source)
    var.set_value(_from_hf(kind, x, like))
    used.add(key)
  unexpected = sorted(set(sd) - used)
  problems = []
  if missing:
    problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
  if bad_shape:
    problems.append(f"shape mismatches {bad_shape[:8]}")
  if unexpected:
    problems.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
  if problems:
    raise ValueError(f"{source}: weights do not fit the model config: " + "; ".join(problems))
  nnx.update(model.backbone, state)


def load_heads_state_dict(model: MERTModel, sd: dict[str, np.ndarray], *, source: str) -> None:
  h = model.heads
  want = {
    "final_proj.weight": (h.final_proj.kernel, True),
    "final_proj.bias": (h.final_proj.bias, False),
    "label_embs_concat": (h.label_embs, False),
    "cqt_head.weight": (h.cqt_head.kernel, True),
    "cqt_head.bias": (h.cqt_head.bias, False),
  }
  for key, (var, transpose) in want.items():
    if key not in sd:
      raise ValueError(f"{source}: missing head tensor {key!r}")
    x = np.asarray(sd[key], np.float32)
    x = x.T if transpose else x
    if x.shape != tuple(var.get_value().shape):
      raise ValueError(
        f"{source}: {key} has shape {x.shape}, model expects {tuple(var.get_value().shape)}"
      )
    check_finite_weights(x, key, source)
    var.set_value(x)


# --------------------------------------------------------------------------- configs


def hf_config_dict(cfg: ModelConfig) -> dict[str, Any]:
  """A ``HubertConfig`` (model_type "hubert") equivalent to ``cfg``'s backbone (spec §5.4)."""
  return {
    "model_type": "hubert",
    "architectures": ["HubertModel"],
    "hidden_size": cfg.hidden_size,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "intermediate_size": cfg.ffn_size,
    "hidden_act": "gelu",
    "do_stable_layer_norm": cfg.layer_norm_first,
    "feat_extract_norm": "group" if cfg.extractor_mode == "default" else "layer",
    "feat_extract_activation": "gelu",
    "conv_bias": cfg.conv_bias,
    "conv_dim": [c for c, _, _ in cfg.conv_layers],
    "conv_kernel": [k for _, k, _ in cfg.conv_layers],
    "conv_stride": [s for _, _, s in cfg.conv_layers],
    "feat_proj_layer_norm": True,
    "conv_pos_batch_norm": False,
    "num_conv_pos_embeddings": cfg.pos_conv_kernel,
    "num_conv_pos_embedding_groups": cfg.pos_conv_groups,
    "layer_norm_eps": cfg.layer_norm_eps,
    "hidden_dropout": cfg.dropout,
    "attention_dropout": cfg.attention_dropout,
    "activation_dropout": cfg.activation_dropout,
    "feat_proj_dropout": cfg.dropout_input,
    "layerdrop": cfg.layerdrop,
    "mask_time_prob": 0.05,  # > 0 keeps masked_spec_embed; masking is off in eval
    "sample_rate": cfg.sample_rate,  # informational, as in MERT's configs
    "attention_relax": cfg.attention_relax,
  }


def model_config_from_hf(
  hf: dict[str, Any], *, source: str, base: ModelConfig | None = None
) -> ModelConfig:
  """ModelConfig for an HF Hubert/MERT config.json (backbone fields; heads from ``base``)."""

  def need(field, allowed):
    v = hf.get(field, allowed[0])
    if v not in allowed:
      raise ValueError(f"{source}: {field}={v!r} is not supported (supported: {allowed})")
    return v

  need("hidden_act", ["gelu"])
  need("feat_extract_activation", ["gelu"])
  need("feat_proj_layer_norm", [True])
  need("conv_pos_batch_norm", [False])
  for field, what in UNIMPLEMENTED_MERT_OPTIONS.items():
    if hf.get(field, False):
      raise ValueError(
        f"{source}: {field}={hf[field]!r} ({what}) is not implemented by mert_jax; only "
        f"{field}=false models (all published MERT-v1 models) can be imported"
      )
  norm = need("feat_extract_norm", ["group", "layer"])
  if hf.get("model_type", "hubert") not in ("hubert", "mert_model", "music_hubert"):
    raise ValueError(f"{source}: model_type={hf.get('model_type')!r} is not a Hubert/MERT model")
  base = base or ModelConfig()
  cfg = base.replace(
    conv_layers=tuple(
      (int(c), int(k), int(s))
      for c, k, s in zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"])
    ),
    extractor_mode="default" if norm == "group" else "layer_norm",
    conv_bias=bool(hf.get("conv_bias", False)),
    hidden_size=int(hf["hidden_size"]),
    num_layers=int(hf["num_hidden_layers"]),
    num_heads=int(hf["num_attention_heads"]),
    ffn_size=int(hf["intermediate_size"]),
    layer_norm_first=bool(hf.get("do_stable_layer_norm", False)),
    pos_conv_kernel=int(hf.get("num_conv_pos_embeddings", 128)),
    pos_conv_groups=int(hf.get("num_conv_pos_embedding_groups", 16)),
    layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
    attention_relax=float(hf.get("attention_relax", -1.0)),
    sample_rate=int(hf.get("sample_rate", base.sample_rate)),
  )
  cfg.validate()
  return cfg


# --------------------------------------------------------------------------- safe file reading


def read_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Tensors of a ``.safetensors`` file, or of a PyTorch ``.bin`` via
  ``torch.load(weights_only=True)``. Never unpickles arbitrary objects."""
  p = epath.Path(path)
  if p.suffix == ".safetensors":
    try:
      return dict(safetensors.numpy.load(p.read_bytes()))
    except Exception as e:  # safetensors raises its own (Rust) error type for a damaged header
      raise ValueError(
        f"{p}: not a readable safetensors file ({str(e).splitlines()[0][:160]}); it may be "
        f"truncated or damaged: export or download it again"
      ) from e
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
      f"{p} is a PyTorch pickle; reading it needs the torch extra "
      f"(pip install -e '.[torch]'), or convert it to safetensors."
    ) from e
  import pickle  # pylint: disable=g-import-not-at-top

  try:
    with p.open("rb") as f:
      sd = torch.load(f, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
    raise UnsafeCheckpointError(
      f"{p}: refused. The file is not a plain tensor state dict: loading it would require "
      f"unpickling arbitrary Python objects, which can run code. Re-save it as safetensors in an "
      f"environment you trust. (torch said: {str(e).splitlines()[0][:200]})"
    ) from e
  if not isinstance(sd, dict):
    raise ValueError(f"{p}: expected a state dict, found {type(sd).__name__}")
  if "state_dict" in sd and isinstance(sd["state_dict"], dict):
    sd = sd["state_dict"]
  return {k: v.detach().float().numpy() for k, v in sd.items() if hasattr(v, "detach")}


def read_hf_state_dict(hf_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """The backbone tensors of an HF folder with HF names (``hubert.`` prefixes stripped, legacy
  ``weight_g``/``weight_v`` renamed)."""
  d = epath.Path(hf_dir)
  index = d / (HF_WEIGHTS + ".index.json")
  if (d / HF_WEIGHTS).exists():
    sd = read_weights(d / HF_WEIGHTS)
  elif index.exists():
    sd = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
      sd.update(read_weights(d / shard))
  elif (d / HF_BIN).exists():
    sd = read_weights(d / HF_BIN)
  else:
    raise FileNotFoundError(
      f"{hf_dir}: no {HF_WEIGHTS}, sharded safetensors index or {HF_BIN} found"
    )
  out = {}
  for k, v in sd.items():
    for prefix in ("hubert.", "model."):
      if k.startswith(prefix):
        k = k[len(prefix) :]
    k = k.replace("conv.weight_g", "conv.parametrizations.weight.original0")
    k = k.replace("conv.weight_v", "conv.parametrizations.weight.original1")
    out[k] = v
  return out


# --------------------------------------------------------------------------- folder-level API


def preprocessor_config_dict(cfg: ModelConfig) -> dict[str, Any]:
  """``preprocessor_config.json`` as the published m-a-p/MERT-v1 folders have it (a
  ``Wav2Vec2FeatureExtractor``: raw mono waveform, no normalisation), at ``cfg.sample_rate``."""
  return {
    "do_normalize": False,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": cfg.sample_rate,
  }


class OutputExistsError(FileExistsError):
  """The export's output path is taken (the message is one line)."""


def check_export_output(hf_dir: str | os.PathLike, *, overwrite: bool) -> None:
  """Refuses an output that ``export_hf`` would not write (local or in a bucket): an existing
  file, a non-empty folder without ``overwrite``, and (even with it) a non-empty folder that is not
  a model folder (no config.json), so a mistyped path never loses unrelated files."""
  path = os.fspath(hf_dir)
  if storage.isfile(path):
    raise OutputExistsError(f"{path} exists and is not a folder")
  if not storage.list_names(path):
    return
  if not overwrite:
    raise OutputExistsError(f"{path} exists and is not empty; pass --overwrite to replace it")
  if not storage.exists(os.path.join(path, HF_CONFIG_FILE)):
    raise OutputExistsError(
      f"{path} is not empty and holds no config.json (not a model folder): refusing to replace "
      f"it even with --overwrite; choose another --output"
    )


def export_hf(
  model: MERTModel,
  hf_dir: str | os.PathLike,
  *,
  overwrite: bool = True,
  card: str | None = None,
) -> None:
  """Write an HF folder: config.json + model.safetensors (HubertModel), preprocessor_config.json,
  mert_heads.safetensors, mert_jax_config.json and a README.md model card (``card``, default:
  ``model_card.render`` of the model's own facts).

  The folder is built as ``HF_DIR.tmp`` and renamed into place only when every file is written,
  so an interrupted export leaves no folder that looks whole. ``hf_dir`` may be missing or an
  empty folder; a non-empty model folder is replaced only with ``overwrite`` (the command line
  defaults to refusing; library callers such as the demo re-export into the same folder), and
  then only once the new folder is complete (see ``check_export_output``).

  In a bucket (``gs://``), which cannot rename a folder, the folder is written to a local
  temporary folder and then uploaded file by file, config.json last (``atomic.atomic_dir``): an
  interrupted upload leaves no config.json, so nothing loads it as a model. A model folder being
  replaced loses its config.json first, and its files the new export lacks at the end."""
  remote = storage.is_remote(hf_dir)
  path = os.fspath(hf_dir) if remote else os.path.abspath(os.fspath(hf_dir))
  check_export_output(path, overwrite=overwrite)
  if card is None:
    from mert_jax.hf import model_card  # pylint: disable=g-import-not-at-top

    card = model_card.render(model_card.gather(model))
  if remote:
    with atomic_dir(path, last=HF_CONFIG_FILE) as tmp:
      _write_export(model, tmp, card)
    return
  replace = os.path.isdir(path) and bool(os.listdir(path))
  staged = path + ".new" if replace else path
  with atomic_dir(staged) as tmp:
    _write_export(model, tmp, card)
  if replace:  # both folders are whole at every moment; the old one goes once the new is in place
    old = path + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    os.replace(staged, path)
    shutil.rmtree(old, ignore_errors=True)


def _write_export(model: MERTModel, folder: str, card: str) -> None:
  """The files of an export, written into the local ``folder``."""
  d = epath.Path(folder)

  def write(name: str, data: bytes) -> None:
    atomic_write_bytes(d / name, data)

  write(
    HF_WEIGHTS,
    safetensors.numpy.save(backbone_to_hf_state_dict(model), metadata={"format": "pt"}),
  )
  write(HEADS_FILE, safetensors.numpy.save(heads_to_state_dict(model), metadata={"format": "pt"}))
  write(MERT_CONFIG_FILE, model.cfg.to_json().encode())
  write(HF_CONFIG_FILE, json.dumps(hf_config_dict(model.cfg), indent=2).encode())
  write(PREPROCESSOR_FILE, json.dumps(preprocessor_config_dict(model.cfg), indent=2).encode())
  write(README_FILE, card.encode())


def import_hf(
  hf_dir: str | os.PathLike,
  *,
  seed: int = 0,
  base: ModelConfig | None = None,
  **config_overrides,
) -> tuple[MERTModel, bool]:
  """Load an HF Hubert/MERT folder, or a Hub id (``hub.resolve_hf_dir``). Returns (model,
  heads_loaded): heads come from ``mert_heads.safetensors`` when present, else they are freshly
  initialised with ``seed``.
  The fields config.json does not hold (heads, dropout, dtype) come from the folder's
  ``mert_jax_config.json`` when present, else from ``base`` (default: ``ModelConfig()``)."""
  from mert_jax.hf.hub import resolve_hf_dir  # pylint: disable=g-import-not-at-top

  d = epath.Path(resolve_hf_dir(hf_dir))  # a Hub id (owner/name) is downloaded first
  cfg_path = d / HF_CONFIG_FILE
  if not cfg_path.exists():
    raise FileNotFoundError(
      f"{hf_dir}: config.json not found; is this a Hugging Face model folder?"
    )
  if (d / MERT_CONFIG_FILE).exists():
    base = ModelConfig.from_dict(json.loads((d / MERT_CONFIG_FILE).read_text()))
  cfg = model_config_from_hf(json.loads(cfg_path.read_text()), source=str(cfg_path), base=base)
  model = create_model(cfg.replace(**config_overrides), seed=seed)
  load_backbone_state_dict(model, read_hf_state_dict(d), source=str(d))
  heads_loaded = (d / HEADS_FILE).exists()
  if heads_loaded:
    load_heads_state_dict(model, read_weights(d / HEADS_FILE), source=str(d / HEADS_FILE))
  return model, heads_loaded
