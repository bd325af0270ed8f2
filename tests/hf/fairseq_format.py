"""Test-only builder of fairseq-format MERT checkpoints (what ``fairseq-hydra-train`` with MERT's
``mert_fairseq`` code writes), from a JAX model.

The fairseq names are produced by an inverse mapping written here independently of
``mert_jax/hf/fairseq.py`` (from the reference ``mert_model.py`` / wav2vec2 module tree), with the
legacy ``weight_g``/``weight_v`` names of ``nn.utils.weight_norm``. The file holds what a real
checkpoint holds: ``args`` None, ``cfg`` as plain nested dicts (fairseq saves
``OmegaConf.to_container``), ``model``, ``criterion``, ``optimizer_history``, ``task_state`` with
the label ``fairseq.data.dictionary.Dictionary`` objects, ``extra_state`` (numpy float64 scalars,
as fairseq's rounded metrics are) and ``last_optimizer_state``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import sys
import types
from typing import Any

import numpy as np
import torch

from mert_jax.config import ModelConfig
from mert_jax.hf import convert
from mert_jax.model.mert import MERTModel


def conv_layers_string(layers: tuple[tuple[int, int, int], ...]) -> str:
  """fairseq's run-length form, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``."""
  runs: list[list[Any]] = []
  for lay in layers:
    if runs and runs[-1][0] == lay:
      runs[-1][1] += 1
    else:
      runs.append([lay, 1])
  parts = []
  for (c, k, s), n in runs:
    parts.append(f"[({c},{k},{s})]" + (f" * {n}" if n > 1 else ""))
  return " + ".join(parts)


def _fairseq_name(hf_name: str, extractor_mode: str) -> str:
  """HF HubertModel name -> the reference fairseq module path."""
  m = re.fullmatch(
    r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)", hf_name
  )
  if m:
    i, part, leaf = m.groups()
    if part == "conv":
      return f"feature_extractor.conv_layers.{i}.0.{leaf}"
    # Sequential(conv, Dropout, norm, GELU); in layer_norm mode norm = Sequential(TransposeLast,
    # Fp32LayerNorm, TransposeLast).
    norm = "2" if extractor_mode == "default" else "2.1"
    return f"feature_extractor.conv_layers.{i}.{norm}.{leaf}"
  fixed = {
    "masked_spec_embed": "mask_emb",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v",
    "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv.0.bias",
  }
  if hf_name in fixed:
    return fixed[hf_name]
  for old, new in [
    ("feature_projection.projection.", "post_extract_proj."),
    ("feature_projection.layer_norm.", "layer_norm."),
    (".attention.", ".self_attn."),
    (".feed_forward.intermediate_dense.", ".fc1."),
    (".feed_forward.output_dense.", ".fc2."),
  ]:
    if old in hf_name:
      return hf_name.replace(old, new)
  m = re.fullmatch(r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", hf_name)
  if m:
    return f"encoder.layers.{m.group(1)}.self_attn_layer_norm.{m.group(2)}"
  if re.fullmatch(r"encoder\.layers\.\d+\.final_layer_norm\.(weight|bias)", hf_name):
    return hf_name
  if re.fullmatch(r"encoder\.layer_norm\.(weight|bias)", hf_name):
    return hf_name
  raise KeyError(f"no fairseq name for {hf_name}")


def fairseq_model_state(model: MERTModel, *, cqt_head: bool = True) -> dict[str, torch.Tensor]:
  """The fairseq ``model`` state dict of ``model`` (backbone + heads + nnAudio buffers)."""
  cfg = model.cfg
  out: dict[str, torch.Tensor] = collections.OrderedDict()
  for k, v in convert.backbone_to_hf_state_dict(model).items():
    if k.startswith("feature_projection.projection.") and cfg.conv_dim == cfg.hidden_size:
      # fairseq builds no post_extract_proj when the widths agree.
      assert np.array_equal(v, np.eye(cfg.hidden_size) if v.ndim == 2 else np.zeros_like(v)), (
        "a fairseq model with conv width == model width has an identity projection"
      )
      continue
    out[_fairseq_name(k, cfg.extractor_mode)] = torch.from_numpy(np.array(v))
  heads = convert.heads_to_state_dict(model)
  out["label_embs_concat"] = torch.from_numpy(np.array(heads["label_embs_concat"]))
  out["final_proj.weight"] = torch.from_numpy(np.array(heads["final_proj.weight"]))
  out["final_proj.bias"] = torch.from_numpy(np.array(heads["final_proj.bias"]))
  if cqt_head:
    out["encoder_cqt_model.fc.weight"] = torch.from_numpy(np.array(heads["cqt_head.weight"]))
    out["encoder_cqt_model.fc.bias"] = torch.from_numpy(np.array(heads["cqt_head.bias"]))
    # nnAudio CQT1992v2 kernels (bins, 1, n_fft); tiny dummies, the importer must skip them.
    out["encoder_cqt_model.spec_layer.cqt_kernels_real"] = torch.ones(cfg.cqt_bins, 1, 4)
    out["encoder_cqt_model.spec_layer.cqt_kernels_imag"] = torch.zeros(cfg.cqt_bins, 1, 4)
  return out


def fairseq_cfg(cfg: ModelConfig, *, cqt_head: bool = True) -> dict[str, Any]:
  """The ``cfg`` entry (plain dicts) of a MERT run with ``cfg``'s architecture."""
  label_rate = cfg.sample_rate // cfg.frame_stride
  labels = [f"encodec_{k}" for k in range(cfg.num_codebooks)]
  model = {
    "_name": "mert",
    "label_rate": label_rate,
    "extractor_mode": cfg.extractor_mode,
    "encoder_layers": cfg.num_layers,
    "encoder_embed_dim": cfg.hidden_size,
    "encoder_ffn_embed_dim": cfg.ffn_size,
    "encoder_attention_heads": cfg.num_heads,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": cfg.dropout,
    "attention_dropout": cfg.attention_dropout,
    "activation_dropout": cfg.activation_dropout,
    "encoder_layerdrop": cfg.layerdrop,
    "dropout_input": cfg.dropout_input,
    "dropout_features": 0.1,
    "final_dim": cfg.final_dim,
    "untie_final_proj": True,
    "layer_norm_first": cfg.layer_norm_first,
    "audio_extract_type": "w2v_conv",
    "music_conv_nmel": 80,
    "music_conv_hoplen": 40,
    "conv_feature_layers": conv_layers_string(cfg.conv_layers),
    "conv_bias": cfg.conv_bias,
    "logit_temp": 0.1,
    "target_glu": False,
    "feature_grad_mult": cfg.feature_grad_mult,
    "conv_pos": cfg.pos_conv_kernel,
    "conv_pos_groups": cfg.pos_conv_groups,
    "pos_conv_depth": 1,
    "mask_length": 5,
    "mask_prob": 0.8,
    "mask_dynamic_prob_step": "[]",
    "mask_dynamic_prob": "[]",
    "mask_dynamic_len_step": "[]",
    "mask_dynamic_len": "[]",
    "mask_selection": "static",
    "mask_other": 0.0,
    "no_mask_overlap": False,
    "mask_min_space": 1,
    "mask_replace": 0.0,
    "mask_replace_type": "in_sample",
    "mask_origin": 0.0,
    "mask_channel_length": 10,
    "mask_channel_prob": 0.0,
    "mask_channel_selection": "static",
    "mask_channel_other": 0.0,
    "no_mask_channel_overlap": False,
    "mask_channel_min_space": 1,
    "latent_temp": [2.0, 0.5, 0.999995],
    "skip_masked": False,
    "skip_nomask": True,
    "checkpoint_activations": False,
    "required_seq_len_multiple": 2,
    "depthwise_conv_kernel_size": 31,
    "attn_type": "",
    "pos_enc_type": "abs",
    "fp16": True,
    "audio_cqt_loss_m": cqt_head,
    "audio_cqt_bins": cfg.cqt_bins,
    "audio_mel_loss_m": False,
    "audio_mel_bins": 84,
    "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 84,
    "mixture_prob": 0.5,
    "inbatch_noise_augment_len_range": "[12000, 24000]",
    "inbatch_noise_augment_number_range": "[1, 3]",
    "inbatch_noise_augment_volume": 1.0,
    "learnable_temp": False,
    "learnable_temp_init": 0.1,
    "learnable_temp_max": 100.0,
    "chunk_nce_cal": -1,
    "pretrained_weights": "",
    "random_codebook": -1,
    "deepnorm": False,
    "subln": False,
    "emb_grad_mult": 1.0,
    "attention_relax": cfg.attention_relax,
    "do_cnn_feat_stable_layernorm": False,
    "wav_normalize": False,
  }
  task = {
    "_name": "mert_pretraining",
    "data": "/data/music4all/manifests",
    "fine_tuning": False,
    "labels": labels,
    "label_dir": "/data/music4all/encodec_labels",
    "label_rate": label_rate,
    "sample_rate": cfg.sample_rate,
    "normalize": False,
    "enable_padding": False,
    "max_keep_size": None,
    "max_sample_size": 120000,
    "min_sample_size": 72000,
    "single_target": False,
    "random_crop": True,
    "pad_audio": False,
    "store_labels": True,
    "sharding_data": -1,
    "load_random_data_shard": True,
  }
  return {
    "_name": None,
    "common": {
      "_name": None,
      "fp16": True,
      "log_format": "json",
      "log_interval": 200,
      "seed": 1337,
    },
    "checkpoint": {"_name": None, "save_interval_updates": 25000, "no_epoch_checkpoints": True},
    "distributed_training": {"_name": None, "distributed_world_size": 64, "ddp_backend": "no_c10d"},
    "dataset": {"_name": None, "max_tokens": 2000000, "num_workers": 6},
    "optimization": {"_name": None, "max_update": 400000, "lr": [0.0005], "clip_norm": 10.0},
    "model": model,
    "task": task,
    "criterion": {"_name": "hubert", "pred_masked_weight": 1.0, "loss_weights": [10, 1]},
    "optimizer": {"_name": "adam", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06},
    "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": 32000},
  }


class Dictionary:
  """Pickled as ``fairseq.data.dictionary.Dictionary`` (its ``__dict__`` as fairseq sets it)."""

  def __init__(self, num_codes: int):
    self.bos_word, self.unk_word, self.pad_word, self.eos_word = "<s>", "<unk>", "<pad>", "</s>"
    self.symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [str(c) for c in range(num_codes)]
    self.count = [1] * 4 + [100] * num_codes
    self.indices = {s: i for i, s in enumerate(self.symbols)}
    self.bos_index, self.pad_index, self.eos_index, self.unk_index = 0, 1, 2, 3
    self.nspecial = 4


@contextlib.contextmanager
def _pickled_as_fairseq():
  """While saving, make ``Dictionary`` importable as ``fairseq.data.dictionary.Dictionary`` (pickle
  stores classes by that path) without fairseq installed; restores sys.modules after."""
  names = ["fairseq", "fairseq.data", "fairseq.data.dictionary"]
  if any(n in sys.modules for n in names):
    raise RuntimeError("a real fairseq is imported; build task_state dictionaries with it instead")
  mods = {n: types.ModuleType(n) for n in names}
  mods["fairseq"].data = mods["fairseq.data"]
  mods["fairseq.data"].dictionary = mods["fairseq.data.dictionary"]
  mods["fairseq.data.dictionary"].Dictionary = Dictionary
  old = (Dictionary.__module__, Dictionary.__qualname__)
  Dictionary.__module__, Dictionary.__qualname__ = "fairseq.data.dictionary", "Dictionary"
  sys.modules.update(mods)
  try:
    yield
  finally:
    for n in names:
      sys.modules.pop(n, None)
    Dictionary.__module__, Dictionary.__qualname__ = old


def write_fairseq_checkpoint(
  path: str | os.PathLike,
  model: MERTModel,
  *,
  cqt_head: bool = True,
  model_cfg: dict[str, Any] | None = None,
  state: dict[str, torch.Tensor] | None = None,
  extra_state: dict[str, Any] | None = None,
  task_dictionaries: bool = True,
  legacy_args: bool = False,
) -> str:
  """Write a fairseq-format checkpoint of ``model`` to ``path``.

  model_cfg: entries merged into ``cfg["model"]``; state: entries merged into the ``model`` state
  dict (None values delete); extra_state: entries merged into ``extra_state``; legacy_args: store
  the config as a pre-hydra ``args`` Namespace (model and task fields in one) with ``cfg`` None.
  """
  cfg = fairseq_cfg(model.cfg, cqt_head=cqt_head)
  cfg["model"].update(model_cfg or {})
  sd = fairseq_model_state(model, cqt_head=cqt_head)
  for k, v in (state or {}).items():
    if v is None:
      sd.pop(k, None)
    else:
      sd[k] = v
  first = next(iter(sd.values()))
  ckpt: dict[str, Any] = {
    "args": None,
    "cfg": cfg,
    "model": sd,
    "criterion": None,
    "optimizer_history": [
      {
        "criterion_name": "HubertCriterion",
        "optimizer_name": "FairseqAdam",
        "lr_scheduler_state": {"best": np.float64(2.345)},
        "num_updates": 400000,
      }
    ],
    "task_state": {},
    "extra_state": {
      "metrics": collections.OrderedDict(
        default=[(0, "loss", "AverageMeter", {"val": 2.5, "sum": 25.0, "count": 10, "round": 3})]
      ),
      "previous_training_time": 86400.5,
      "train_iterator": {"epoch": 12, "iterations_in_epoch": 0, "shuffle": True},
      "val_loss": np.float64(2.345),
      "best": np.float64(2.301),
      **(extra_state or {}),
    },
    "last_optimizer_state": {
      "state": {0: {"step": 400000, "exp_avg": torch.zeros_like(first)}},
      "param_groups": [{"lr": [0.0005], "betas": (0.9, 0.98), "params": [0]}],
      "loss_scale": 128.0,
    },
  }
  if legacy_args:
    flat = {k: v for k, v in {**cfg["task"], **cfg["model"]}.items() if k != "_name"}
    ckpt["args"] = argparse.Namespace(**flat, arch="mert", task="mert_pretraining")
    ckpt["cfg"] = None
  if task_dictionaries:
    ckpt["task_state"] = {
      "dictionaries": [Dictionary(model.cfg.codebook_size) for _ in range(model.cfg.num_codebooks)]
    }
    with _pickled_as_fairseq():
      torch.save(ckpt, path)
  else:
    torch.save(ckpt, path)
  return os.fspath(path)
