"""Model and objective configuration: frozen dataclasses, one documented default per field.

The numbers here are MERT's (``../shared/spec/MERT.md`` §1.1, §2.4, §2.6, §1.10); the size table
``MODEL_SIZES`` holds the per-size differences. ``configs/mert.py`` turns these into
ml_collections ConfigDicts for the command line (``mert_jax/recipe.py`` converts back); code
receives these dataclasses. The audio contract (24 kHz, a label every 320 samples) is the data
pipeline's (``data_pipeline/audio_format.py``), and the model's defaults are taken from it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from data_pipeline.audio_format import SAMPLE_RATE

# (out_channels, kernel, stride) of the 7-layer waveform extractor: total stride 320 samples
# (data_pipeline.audio_format.HOP, checked in tests), receptive field 400 samples, 75 Hz frames at
# 24 kHz (spec §1.2).
MERT_CONV_LAYERS: tuple[tuple[int, int, int], ...] = (
  ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
)


# Attention implementations (mert_jax/model/attention.py).
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "manual", "blockwise")

# What a rematerialised encoder layer keeps from its forward pass (jax.checkpoint policies by name).
REMAT_POLICIES = ("full", "dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The MERT network: HuBERT backbone plus the pretraining heads."""

  # --- waveform front end (spec §1.2) ---
  conv_layers: tuple[tuple[int, int, int], ...] = (
    MERT_CONV_LAYERS  # waveform conv layers (channels, kernel, stride); strides multiply to 320
  )
  extractor_mode: str = (
    "default"  # "default": GroupNorm(C groups) on layer 0 only; "layer_norm": LN on every layer
  )
  conv_bias: bool = False  # biases in the waveform convolutions (MERT: none)
  feature_grad_mult: float = (
    0.1  # gradient into the extractor is multiplied by this (95M 0.1, 330M 1.0)
  )
  sample_rate: int = (
    SAMPLE_RATE  # Hz; the model's label rate is sample_rate / prod(strides) = 75 Hz
  )
  # --- transformer (spec §1.4-1.5) ---
  hidden_size: int = 768  # D
  num_layers: int = 12  # N
  num_heads: int = 12  # H (head dim D/H)
  ffn_size: int = 3072  # F
  layer_norm_first: bool = False  # False: post-LN (95M); True: pre-LN (330M)
  pos_conv_kernel: int = 128  # convolutional positional embedding kernel (frames)
  pos_conv_groups: int = 16  # groups of the positional convolution (divides hidden_size)
  layer_norm_eps: float = 1e-5  # every LayerNorm and the extractor GroupNorm
  attention_relax: float = (
    -1.0
  )  # >0 enables the 330M "relaxation" formula; identical softmax (see attention.py)
  # --- regularisation (spec §1.1) ---
  dropout: float = 0.1  # residual-branch dropout and dropout after the pos-conv
  attention_dropout: float = 0.1  # on attention probabilities
  activation_dropout: float = 0.0  # after the FFN GELU
  dropout_input: float = 0.1  # on the projected features, before masking
  layerdrop: float = 0.05  # probability of skipping a whole encoder layer in training
  # --- pretraining heads (spec §1.8-1.9) ---
  num_codebooks: int = 8  # K RVQ codebooks of the acoustic teacher
  codebook_size: int = 1024  # codes per codebook
  num_special_labels: int = (
    4  # fairseq dictionary specials (<s>,<pad>,</s>,<unk>); label = code + 4 [U in spec]
  )
  final_dim: int = 64  # per-codebook projection width (95M 64, 330M 128)
  cqt_bins: int = 336  # CQT regression head width
  # --- numerics / performance ---
  dtype: str = "bfloat16"  # compute dtype; parameters are always float32 (master weights)
  # "auto" | "xla" (jax.nn.dot_product_attention) | "cudnn" | "manual" | "blockwise" (exact, memory
  # linear in length: blockwise_attention.py); auto: blockwise from attention_blockwise_from frames
  # (cuDNN's flash kernel instead on a GPU in half precision), else cuDNN/XLA, manual with dropout
  attention_impl: str = "auto"
  attention_block: int = 512  # frames per query and key block of the blockwise path
  attention_blockwise_from: int = 4096  # frames (55 s at 75 Hz) from which auto goes blockwise
  pos_conv_impl: str = (
    "auto"  # positional-conv kernel gradient: "auto" | "einsum" | "xla" (pos_conv.py)
  )
  remat: bool = False  # rematerialise each encoder layer in the backward pass
  # with remat: "full" (recompute the layer) | "dots" (keep matmul outputs, recompute the rest)
  remat_policy: str = "full"

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def conv_dim(self) -> int:
    return self.conv_layers[-1][0]

  @property
  def num_labels(self) -> int:
    """Rows of one codebook's label-embedding block (C_k = codes + specials)."""
    return self.codebook_size + self.num_special_labels

  @property
  def frame_stride(self) -> int:
    """Samples per feature frame (320 for MERT)."""
    s = 1
    for _, _, st in self.conv_layers:
      s *= st
    return s

  def replace(self, **kw: Any) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def validate(self) -> None:
    if self.hidden_size % self.num_heads:
      raise ValueError(
        f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}"
      )
    if self.hidden_size % self.pos_conv_groups:
      raise ValueError(
        f"model.hidden_size={self.hidden_size} is not divisible by "
        f"model.pos_conv_groups={self.pos_conv_groups}"
      )
    if self.extractor_mode not in ("default", "layer_norm"):
      raise ValueError(
        f"model.extractor_mode must be 'default' or 'layer_norm', got {self.extractor_mode!r}"
      )
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
        f"model.attention_impl must be {'/'.join(ATTENTION_IMPLS)}, got {self.attention_impl!r}"
      )
    if self.attention_block < 1 or self.attention_blockwise_from < 1:
      raise ValueError(
        f"model.attention_block={self.attention_block} and model.attention_blockwise_from="
        f"{self.attention_blockwise_from}: both must be >= 1 (frames)"
      )
    if self.pos_conv_impl not in ("auto", "einsum", "xla"):
      raise ValueError(f"model.pos_conv_impl must be auto/einsum/xla, got {self.pos_conv_impl!r}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
        f"model.remat_policy must be one of {sorted(REMAT_POLICIES)}, got {self.remat_policy!r}"
      )
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"model.dtype must be float32/bfloat16/float16, got {self.dtype!r}")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    d = dict(d)
    if "conv_layers" in d:
      d["conv_layers"] = tuple(tuple(int(v) for v in layer) for layer in d["conv_layers"])
    return _from_dict(cls, d, "model")


TARGETS = ("teacher", "bestrq")  # where the codes come from (ObjectiveConfig.targets)
BESTRQ_INPUTS = ("mel", "cqt")  # ObjectiveConfig.bestrq_input
BESTRQ_NORMS = ("corpus", "clip")  # ObjectiveConfig.bestrq_norm
CQT_TARGETS = ("raw", "log_standardised")  # ObjectiveConfig.cqt_target


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """MERT's masked-prediction objective (spec §1.8-1.10, §2.4, §2.6)."""

  mask_prob: float = 0.8  # expected fraction of frames covered by span starts x length
  mask_length: int = 5  # span length in frames ("static" spans)
  min_masks: int = 2  # at least this many spans per row
  logit_temp: float = 0.1  # cosine logits are divided by this
  feature_pen_weight: float = 10.0  # loss_weights[0]: weight of mean(features^2)
  cqt_weight: float = 1.0  # loss_weights[1]: weight of the CQT MSE
  # weight of the CQT squared error on the visible (unmasked, unpadded) frames, summed and divided
  # by the masked count like the masked term (fairseq HuBERT's pred_nomask_weight, applied to the
  # CQT head); MERT: 0, unmasked frames carry no loss (spec 2.5)
  cqt_unmasked_weight: float = 0.0
  # In-batch noise mixup. The reference mixes when U[0,1) > mixture_prob (an inverted test); this
  # field is the probability that a clip IS mixed, which equals 1 - mixture_prob = 0.5 for both
  # released models.
  mixup_prob: float = 0.5
  mixup_min_len: int = (
    SAMPLE_RATE // 2
  )  # samples (0.5 s); segment lengths drawn uniformly in [min, max]
  mixup_max_len: int = SAMPLE_RATE  # samples (95M 1.0 s, 330M 1.5 s = 36000)
  mixup_max_segments: int = 3  # 1..this many segments per mixed clip
  mixup_volume: float = 1.0  # segments are added at this gain, no rescaling or clipping
  # > 0: segment lengths are drawn in [crop_fraction / 2, crop_fraction] x the crop instead of
  # [mixup_min_len, mixup_max_len] (MERT-95M's 0.5-1.0 s of a 5 s crop is 0.2)
  mixup_crop_fraction: float = 0.0
  # --- targets (mert_jax/objective/targets.py) ---
  # "teacher": the codes of the data's offline teacher (k-means or EnCodec, data_pipeline.prepare);
  # "bestrq": random-projection quantizer codes of the clean audio, computed in the step
  # (mert_jax/objective/bestrq.py; the data's codes are then not read)
  targets: str = "teacher"
  bestrq_input: str = "mel"  # what BEST-RQ quantizes: "mel" (stacked log-mel) or "cqt" (log-CQT)
  # how BEST-RQ's input is standardised per dimension: "corpus" (target_stats; BEST-RQ's and
  # MusicFM's choice) or "clip" (over each clip's own frames: no statistics, but the codes lose the
  # clip's average spectrum, pitch included)
  bestrq_norm: str = "corpus"
  bestrq_dim: int = 16  # projection width of each random quantizer (BEST-RQ, MusicFM: 16)
  bestrq_seed: int = 0  # draws the frozen projections and codebooks (saved as WORKDIR/bestrq.npz)
  bestrq_mels: int = 128  # mel bands (MusicFM: 128)
  bestrq_n_fft: int = 2048  # mel window in samples (MusicFM: 2048 at 24 kHz)
  bestrq_stack: int = 2  # mel frames stacked per model frame (hop = frame stride / stack)
  # per-codebook weights of the codes' cross-entropy (empty: 1 for every codebook)
  codebook_weights: tuple[float, ...] = ()
  # CQT regression target (spec §3.1): nnAudio CQT1992v2 settings; bins = model.cqt_bins,
  # hop = the model's frame stride (320), sample rate = model.sample_rate.
  # How the CQT magnitudes become the regression target: "raw" (MERT's code) or "log_standardised"
  # (log, then each bin standardised with the corpus statistics of target_stats)
  cqt_target: str = "raw"
  # .npz of the corpus's log-CQT and log-mel mean and std per bin, written by
  # python -m mert_jax.objective.target_stats (needed by cqt_target="log_standardised" and by
  # BEST-RQ with bestrq_norm="corpus")
  target_stats: str = ""
  cqt_method: str = "fast"  # "fast" (multirate, ~1e-6 from exact) | "exact" (nnAudio's transform)
  cqt_fmin: float = 32.7  # Hz, lowest bin (C1)
  cqt_bins_per_octave: int = 48  # 336 bins = 7 octaves

  def replace(self, **kw: Any) -> "ObjectiveConfig":
    return dataclasses.replace(self, **kw)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ObjectiveConfig":
    d = dict(d)
    if "codebook_weights" in d:
      d["codebook_weights"] = tuple(float(w) for w in d["codebook_weights"])
    return _from_dict(cls, d, "objective")

  @property
  def target_stats_needed_by(self) -> tuple[str, ...]:
    """The settings that read the corpus statistics (``target_stats``); empty: none does."""
    needs = []
    if self.cqt_target == "log_standardised":
      needs.append("objective.cqt_target=log_standardised")
    if self.targets == "bestrq" and self.bestrq_norm == "corpus":
      needs.append("objective.targets=bestrq with bestrq_norm=corpus")
    return tuple(needs)

  def validate(self, mcfg: ModelConfig) -> None:
    """One ValueError line naming the field, for a choice the objective cannot run with."""
    if self.targets not in TARGETS:
      raise ValueError(f"objective.targets={self.targets!r}: choose one of {', '.join(TARGETS)}")
    if self.bestrq_input not in BESTRQ_INPUTS:
      raise ValueError(
        f"objective.bestrq_input={self.bestrq_input!r}: choose one of {', '.join(BESTRQ_INPUTS)}"
      )
    if self.targets == "bestrq" and (
      self.bestrq_stack < 1 or mcfg.frame_stride % self.bestrq_stack or self.bestrq_dim < 1
    ):
      raise ValueError(
        f"objective.bestrq_stack={self.bestrq_stack} must divide the frame stride "
        f"{mcfg.frame_stride}, and objective.bestrq_dim={self.bestrq_dim} must be >= 1"
      )
    if self.cqt_target not in CQT_TARGETS:
      raise ValueError(
        f"objective.cqt_target={self.cqt_target!r}: choose one of {', '.join(CQT_TARGETS)}"
      )
    if self.bestrq_norm not in BESTRQ_NORMS:
      raise ValueError(
        f"objective.bestrq_norm={self.bestrq_norm!r}: choose one of {', '.join(BESTRQ_NORMS)}"
      )
    needs = self.target_stats_needed_by
    if needs and not self.target_stats:
      raise ValueError(
        f"{' and '.join(needs)} needs objective.target_stats=FILE.npz (the corpus's log-CQT and "
        "log-mel mean and std per bin): write it with python -m mert_jax.objective.target_stats "
        "--data=DATA_DIR --output=FILE.npz"
      )
    if self.codebook_weights and (
      len(self.codebook_weights) != mcfg.num_codebooks or min(self.codebook_weights) < 0
    ):
      raise ValueError(
        f"objective.codebook_weights={list(self.codebook_weights)}: give {mcfg.num_codebooks} "
        "non-negative weights (model.num_codebooks), or none for all 1"
      )
    if self.cqt_unmasked_weight < 0:
      raise ValueError(
        f"objective.cqt_unmasked_weight={self.cqt_unmasked_weight}: must be >= 0 (0: MERT, "
        "unmasked frames carry no loss)"
      )
    if not 0 <= self.mixup_crop_fraction <= 1:
      raise ValueError(
        f"objective.mixup_crop_fraction={self.mixup_crop_fraction}: must be in [0, 1] (0: use "
        "mixup_min_len / mixup_max_len)"
      )


def _from_dict(cls: type, d: dict[str, Any], block: str) -> Any:
  """``cls(**d)``, refusing unknown fields with a message that names them and the known ones."""
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = set(d) - known
  if unknown:
    raise ValueError(f"unknown {block} config fields {sorted(unknown)}; known: {sorted(known)}")
  return cls(**d)


def _sizes() -> dict[str, ModelConfig]:
  base = ModelConfig()
  # The 330M's stability choices, which the 1B keeps: pre-LN, no dropout or layerdrop, the full
  # gradient into the extractor, 128-wide codebook projections.
  stable = dict(
    layer_norm_first=True,
    dropout=0.0,
    attention_dropout=0.0,
    dropout_input=0.0,
    layerdrop=0.0,
    feature_grad_mult=1.0,
    final_dim=128,
  )
  return {
    # Test size: the real conv strides (75 Hz frames) with narrow channels; 2 tiny layers.
    "tiny": base.replace(
      conv_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2,
      hidden_size=32,
      num_layers=2,
      num_heads=4,
      ffn_size=64,
      pos_conv_kernel=16,
      pos_conv_groups=4,
      final_dim=16,
    ),
    # CPU experiment size (docs/probing.md): the real strides with 128-channel convolutions and a
    # 4 x 256 encoder, about 3.5M backbone parameters, trainable for an hour on two CPU cores.
    # Pre-LN (the 330M's choice) so that a short warm-up is stable. [design choice, not MERT's]
    "small": base.replace(
      conv_layers=((128, 10, 5),) + ((128, 3, 2),) * 4 + ((128, 2, 2),) * 2,
      hidden_size=256,
      num_layers=4,
      num_heads=4,
      ffn_size=1024,
      pos_conv_kernel=32,
      pos_conv_groups=16,
      layer_norm_first=True,
      feature_grad_mult=1.0,
      final_dim=64,
    ),
    # MERT-v1-95M (spec §1.1): post-LN.
    "95m": base,
    # MERT-v1-330M: pre-LN, no dropout, feature_grad_mult 1, attention relaxation flag (a no-op).
    "330m": base.replace(
      hidden_size=1024, num_layers=24, num_heads=16, ffn_size=4096, attention_relax=32.0, **stable
    ),
    # ~1B: the HuBERT X-Large shape (48 x 1280, FFN 5120, 16 heads of 80), the proven 1B point of
    # this architecture family, trained with the 330M's stability choices (pre-LN, no dropout,
    # feature_grad_mult 1). Backbone 962,487,680 parameters (= HubertModel with this config,
    # checked in tests); 965.3M with the heads.
    "1b": base.replace(
      hidden_size=1280, num_layers=48, num_heads=16, ffn_size=5120, remat=True, **stable
    ),
  }


MODEL_SIZES: dict[str, ModelConfig] = _sizes()


def model_config(size: str, **overrides: Any) -> ModelConfig:
  """The ModelConfig of a named size (``tiny``, ``95m``, ``330m``, ``1b``) with field overrides."""
  key = size.lower()
  if key not in MODEL_SIZES:
    raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
  cfg = MODEL_SIZES[key].replace(**overrides)
  cfg.validate()
  return cfg
