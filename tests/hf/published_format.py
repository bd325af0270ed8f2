"""Folders in the exact layout of the published m-a-p MERT-v1 models, built from random weights.

The published folders (m-a-p/MERT-v1-95M, -330M) are not stock Hubert folders: ``config.json`` has
``model_type: "mert_model"``, ``architectures: ["MERTModel"]``, an ``auto_map`` to remote code and
MERT-only fields; the weights are ``pytorch_model.bin`` saved by transformers 4.24, with the legacy
weight-norm names ``weight_g`` / ``weight_v``; ``preprocessor_config.json`` is a
Wav2Vec2FeatureExtractor at 24 kHz without normalisation. Needs torch and transformers.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import transformers

from mert_jax.config import ModelConfig
from mert_jax.hf import convert

# The MERT-only config.json fields of the published folders, with their published values.
PUBLISHED_MERT_FIELDS = {
  "model_type": "mert_model",
  "architectures": ["MERTModel"],
  "auto_map": {
    "AutoConfig": "configuration_MERT.MERTConfig",
    "AutoModel": "modeling_MERT.MERTModel",
  },
  "attention_relax": -1.0,
  "deepnorm": False,
  "feature_extractor_cqt": False,
  "feature_extractor_cqt_bins": 336,
  "sample_rate": 24000,
  "transformers_version": "4.24.0",
  "torch_dtype": "float32",
}
PUBLISHED_PREPROCESSOR = {
  "do_normalize": False,
  "feature_extractor_type": "Wav2Vec2FeatureExtractor",
  "feature_size": 1,
  "padding_side": "right",
  "padding_value": 0.0,
  "return_attention_mask": True,
  "sampling_rate": 24000,
}


def random_hf_model(cfg: ModelConfig, seed: int = 0) -> transformers.HubertModel:
  """A randomly initialised HubertModel of ``cfg``'s backbone, LayerNorm affine terms and the
  weight-norm gain perturbed so that no parameter is left at its identity value."""
  torch.manual_seed(seed)
  hf = transformers.HubertModel(transformers.HubertConfig(**convert.hf_config_dict(cfg))).eval()
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if "layer_norm" in name or name.endswith("original0") or "masked_spec" in name:
        p.add_(0.1 * torch.randn_like(p))
  return hf


def legacy_state_dict(hf: transformers.HubertModel) -> dict[str, torch.Tensor]:
  """The state dict with transformers-4.24 weight-norm names (``weight_g`` / ``weight_v``)."""
  out = {}
  for k, v in hf.state_dict().items():
    k = k.replace("parametrizations.weight.original0", "weight_g")
    k = k.replace("parametrizations.weight.original1", "weight_v")
    out[k] = v.clone()
  return out


def write_published_folder(
  path: str | os.PathLike, cfg: ModelConfig, seed: int = 0, **config_fields
) -> transformers.HubertModel:
  """Writes a published-format MERT folder of random weights into ``path``; returns the HF model
  holding the same weights (the reference for parity checks). ``config_fields`` override
  config.json entries (e.g. ``deepnorm=True``)."""
  os.makedirs(path, exist_ok=True)
  hf = random_hf_model(cfg, seed)
  torch.save(legacy_state_dict(hf), os.path.join(path, "pytorch_model.bin"))
  config = {**json.loads(hf.config.to_json_string()), **PUBLISHED_MERT_FIELDS, **config_fields}
  for stock_only in ("conv_pos_batch_norm", "_attn_implementation_autoset"):
    config.pop(stock_only, None)  # fields transformers 4.24 did not write
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
    json.dump(PUBLISHED_PREPROCESSOR, f, indent=2)
  return hf


def hidden_states_of(hf: transformers.PreTrainedModel, audio: np.ndarray) -> list[np.ndarray]:
  """Every hidden state (embeddings output, then each layer) of one clip, float32 numpy."""
  with torch.no_grad():
    out = hf(torch.from_numpy(np.asarray(audio, np.float32)[None]), output_hidden_states=True)
  return [h[0].numpy() for h in out.hidden_states]
