"""The MERT network: the HuBERT backbone (what ``transformers.HubertModel`` holds) and the
pretraining heads. Module and parameter names mirror HF so the conversion table is trivial.

Shapes: B batch, L samples (24 kHz), T frames (75 Hz), C conv channels, D width, K codebooks.

Parameter counts per module: ``python -m mert_jax.cli.params --size=95m``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax import sharding as ax
from mert_jax.config import ModelConfig
from mert_jax.model import layers
from mert_jax.model.conv_extractor import ConvFeatureExtractor, num_frames, receptive_field
from mert_jax.model.encoder import Encoder


@dataclasses.dataclass
class BackboneOutput:
  last_hidden_state: jax.Array  # (B, T, D)
  hidden_states: tuple[jax.Array, ...] | None  # N + 1 entries of (B, T, D), HF semantics
  features_pen: jax.Array  # scalar float32: mean(conv features^2)
  frame_padding: jax.Array | None  # (B, T) bool, True = padded frame


jax.tree_util.register_dataclass(
  BackboneOutput,
  data_fields=["last_hidden_state", "hidden_states", "features_pen", "frame_padding"],
  meta_fields=[],
)


def frames_padding(sample_padding: jax.Array, n_frames: int) -> jax.Array:
  """fairseq's reduction of a (B, L) sample padding mask to (B, T) frames: drop the last L mod T
  samples, reshape to (T, L // T) chunks, a frame is padding iff all its samples are (spec §6.1)."""
  b, length = sample_padding.shape
  extra = length % n_frames
  if extra:
    sample_padding = sample_padding[:, :-extra]
  return jnp.all(sample_padding.reshape(b, n_frames, -1), axis=-1)


def check_audio(audio: Any, cfg: ModelConfig, *, name: str = "audio") -> None:
  """Static checks of a (B, L) waveform batch (shape and dtype); safe under jit."""
  shape = getattr(audio, "shape", None)
  dtype = getattr(audio, "dtype", None)
  if shape is None or len(shape) != 2:
    raise ValueError(
      f"{name} must be a (batch, samples) array of mono {cfg.sample_rate} Hz audio; "
      f"got shape {shape}. Downmix and batch it first (data_pipeline.audio.load_audio)."
    )
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
      f"{name} must be floating point in [-1, 1]; got dtype {dtype}. "
      f"Convert integer PCM with x / 32768."
    )
  min_len = receptive_field(cfg.conv_layers)
  if shape[1] < min_len:
    raise ValueError(
      f"{name} has {shape[1]} samples; the model needs at least {min_len} "
      f"({min_len / cfg.sample_rate * 1000:.1f} ms at {cfg.sample_rate} Hz) for one frame."
    )


def check_finite(audio: np.ndarray, *, name: str = "audio") -> None:
  """Host-side check that audio holds no NaN/inf (call before device_put; never inside a step)."""
  bad = ~np.isfinite(np.asarray(audio))
  if bad.any():
    rows = sorted(set(np.nonzero(bad)[0].tolist())) if bad.ndim > 1 else [0]
    raise ValueError(
      f"{name} contains {int(bad.sum())} non-finite samples (NaN or inf) in row(s) "
      f"{rows[:10]}; fix or drop those clips."
    )


class FeatureProjection(nnx.Module):
  """HF ``feature_projection``: LayerNorm(C) then Linear(C -> D)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    c, dt = cfg.conv_dim, jnp.dtype(cfg.dtype)
    self.layer_norm = layers.LayerNorm(
      c, axis_name=ax.CONV_OUT, eps=cfg.layer_norm_eps, dtype=dt, rngs=rngs
    )
    self.projection = layers.Dense(
      c,
      cfg.hidden_size,
      axes=(ax.CONV_OUT, ax.EMBED),
      kernel_init=layers.torch_linear_init(c),
      bias_init=layers.torch_linear_init(c),
      dtype=dt,
      rngs=rngs,
    )

  def __call__(self, features: jax.Array) -> jax.Array:
    return self.projection(self.layer_norm(features))


class Backbone(nnx.Module):
  """Exactly the parameters of ``transformers.HubertModel`` (names mirror it)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    self.feature_extractor = ConvFeatureExtractor(cfg, rngs)
    self.feature_projection = FeatureProjection(cfg, rngs)
    self.masked_spec_embed = layers.param(
      rngs, layers.uniform(0.0, 1.0), (cfg.hidden_size,), (ax.EMBED,)
    )
    self.encoder = Encoder(cfg, rngs)

  def num_frames(self, num_samples: int) -> int:
    return num_frames(num_samples, self.cfg.conv_layers)

  def __call__(
    self,
    audio: jax.Array,
    *,
    mask: jax.Array | None = None,
    padding_mask: jax.Array | None = None,
    deterministic: bool = True,
    key: jax.Array | None = None,
    output_hidden_states: bool = False,
  ) -> BackboneOutput:
    """audio (B, L) float -> BackboneOutput.

    mask: (B, T) bool, frames replaced by ``masked_spec_embed`` (None: no masking).
    padding_mask: (B, L) bool, True = padded sample (None: no padding).
    key: dropout/layerdrop key, required when ``deterministic=False``.
    """
    cfg = self.cfg
    check_audio(audio, cfg)
    if not deterministic and key is None:
      raise ValueError("Backbone needs key= when deterministic=False (dropout and layerdrop)")
    keys = layers.KeySeq(key)
    feats = self.feature_extractor(audio)  # (B, T, C)
    feats = (
      layers.grad_multiply(feats, cfg.feature_grad_mult) if cfg.feature_grad_mult != 1.0 else feats
    )
    features_pen = jnp.mean(jnp.square(feats.astype(jnp.float32)))
    t = feats.shape[1]
    if mask is not None and mask.shape != (audio.shape[0], t):
      raise ValueError(
        f"mask has shape {mask.shape}; expected (batch, frames) = {(audio.shape[0], t)} "
        f"for {audio.shape[1]} samples"
      )
    frame_padding = None
    if padding_mask is not None:
      if padding_mask.shape != audio.shape:
        raise ValueError(
          f"padding_mask has shape {padding_mask.shape}; expected the audio's {audio.shape}"
        )
      frame_padding = frames_padding(padding_mask, t)
    x = self.feature_projection(feats)  # (B, T, D)
    x = layers.dropout(x, cfg.dropout_input, keys(), deterministic)
    if mask is not None:
      x = jnp.where(mask[..., None], self.masked_spec_embed[...].astype(x.dtype), x)
    x, hidden = self.encoder(
      x,
      frame_padding,
      deterministic=deterministic,
      key=keys(),
      output_hidden_states=output_hidden_states,
    )
    return BackboneOutput(x, hidden, features_pen, frame_padding)


class PretrainingHeads(nnx.Module):
  """MERT's heads: ``final_proj`` (D -> K * final_dim, untied per codebook), ``label_embs``
  (K * C_k rows of final_dim, block k for codebook k) and ``cqt_head`` (D -> cqt_bins)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d = cfg.hidden_size
    # Heads run in float32: their matmuls are <1% of the FLOPs and feed fp32 cosine logits / MSE.
    self.final_proj = layers.Dense(
      d,
      cfg.final_dim * cfg.num_codebooks,
      axes=(ax.EMBED, ax.FINAL_DIM),
      kernel_init=layers.torch_linear_init(d),
      bias_init=layers.torch_linear_init(d),
      rngs=rngs,
    )
    self.label_embs = layers.param(
      rngs,
      layers.uniform(0.0, 1.0),
      (cfg.num_codebooks * cfg.num_labels, cfg.final_dim),
      (ax.VOCAB, ax.FINAL_DIM),
    )
    self.cqt_head = layers.Dense(
      d,
      cfg.cqt_bins,
      axes=(ax.EMBED, ax.CQT_BINS),
      kernel_init=layers.torch_linear_init(d),
      bias_init=layers.torch_linear_init(d),
      rngs=rngs,
    )
    self.num_codebooks = cfg.num_codebooks
    self.num_labels = cfg.num_labels

  def codebook_projections(self, x: jax.Array) -> jax.Array:
    """x (B, T, D) -> (B, T, K, final_dim) float32; chunk k of final_proj is codebook k's."""
    z = self.final_proj(x.astype(jnp.float32))
    return z.reshape(*z.shape[:-1], self.num_codebooks, -1)

  def label_embeddings(self) -> jax.Array:
    """(K, C_k, final_dim) float32."""
    e = self.label_embs[...]
    return e.reshape(self.num_codebooks, self.num_labels, e.shape[-1])

  def cqt(self, x: jax.Array) -> jax.Array:
    """x (B, T, D) -> predicted CQT magnitudes (B, T, cqt_bins) float32."""
    return self.cqt_head(x.astype(jnp.float32))


class MERTModel(nnx.Module):
  """Backbone + pretraining heads."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.backbone = Backbone(cfg, rngs)
    self.heads = PretrainingHeads(cfg, rngs)

  def __call__(self, audio: jax.Array, **kw: Any) -> BackboneOutput:
    return self.backbone(audio, **kw)


def create_model(cfg: ModelConfig, seed: int = 0) -> MERTModel:
  """A MERTModel with unsharded parameters (no mesh needed). The trainer instead builds it
  abstractly and places it with the logical-axis rules."""
  with nnx.use_eager_sharding(False):
    return MERTModel(cfg, nnx.Rngs(seed))


def abstract_model(cfg: ModelConfig) -> MERTModel:
  """Shapes-only model (no memory): for parameter counts and sharding plans."""
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: MERTModel(cfg, nnx.Rngs(0)))


def tree_size(tree: Any) -> int:
  """Elements in the arrays (or shape structs) of a pytree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def count_params(module: nnx.Module) -> int:
  return tree_size(nnx.state(module, nnx.Param))


def param_table(cfg: ModelConfig) -> list[tuple[str, int]]:
  """(module path, parameter count) rows: backbone parts, heads, and totals."""
  m = abstract_model(cfg)
  b, h = m.backbone, m.heads
  enc = b.encoder
  rows = [
    ("backbone.feature_extractor", count_params(b.feature_extractor)),
    ("backbone.feature_projection", count_params(b.feature_projection)),
    ("backbone.masked_spec_embed", int(np.prod(b.masked_spec_embed.shape))),
    ("backbone.encoder.pos_conv_embed", count_params(enc.pos_conv_embed)),
    ("backbone.encoder.layer_norm", count_params(enc.layer_norm)),
    (
      f"backbone.encoder.layers (x{len(enc.layers)}, each {count_params(enc.layers[0])})",
      count_params(enc.layers),
    ),
    ("backbone (= transformers.HubertModel)", count_params(b)),
    ("heads.final_proj", count_params(h.final_proj)),
    ("heads.label_embs", int(np.prod(h.label_embs.shape))),
    ("heads.cqt_head", count_params(h.cqt_head)),
    ("heads", count_params(h)),
    ("total", count_params(m)),
  ]
  return rows
