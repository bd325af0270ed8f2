"""The 7-layer convolutional waveform front end (fairseq ConvFeatureExtractionModel, spec §1.2).

Audio (B, L) at 24 kHz -> features (B, T, C) with T = floor((L - 400) / 320) + 1 for the MERT
layer spec. Convolutions are "valid", channels-last (NWC), without bias. In ``default`` mode
layer 0 is followed by GroupNorm with one group per channel (normalises every channel over
*time*, so layer 0 depends on the whole clip), in ``layer_norm`` mode every layer is followed by
LayerNorm over channels. Norm statistics are float32; the convolutions run in the compute dtype.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax import sharding as ax
from mert_jax.config import ModelConfig
from mert_jax.model import layers


def num_frames(num_samples: int, conv_layers: Sequence[tuple[int, int, int]]) -> int:
  """Frames produced for ``num_samples`` input samples (0 when the input is too short)."""
  n = int(num_samples)
  for _, kernel, stride in conv_layers:
    if n < kernel:
      return 0
    n = (n - kernel) // stride + 1
  return n


def receptive_field(conv_layers: Sequence[tuple[int, int, int]]) -> int:
  """Input samples seen by one output frame (400 for MERT): the minimum clip length."""
  field, jump = 1, 1
  for _, kernel, stride in conv_layers:
    field += (kernel - 1) * jump
    jump *= stride
  return field


def samples_for(frames: int, conv_layers: Sequence[tuple[int, int, int]]) -> int:
  """The fewest samples that make exactly ``frames`` frames (the inverse of ``num_frames``):
  ``frames - 1`` total strides plus the receptive field."""
  stride = int(np.prod([s for _, _, s in conv_layers]))
  return (frames - 1) * stride + receptive_field(conv_layers)


class ConvLayer(nnx.Module):
  """conv -> [norm] -> GELU. HF names: ``conv`` (kernel (k, in, out)) and ``layer_norm``."""

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int,
    *,
    norm: str | None,
    cfg: ModelConfig,
    rngs: nnx.Rngs,
  ):
    std = float(np.sqrt(2.0 / (in_ch * kernel)))  # Kaiming-normal, fan_in, gain sqrt(2)
    self.conv = nnx.Dict(
      kernel=layers.param(
        rngs, layers.normal(std), (kernel, in_ch, out_ch), (ax.CONV_KERNEL, ax.CONV_IN, ax.CONV_OUT)
      )
    )
    if cfg.conv_bias:
      self.conv["bias"] = layers.param(rngs, layers.zeros, (out_ch,), (ax.CONV_OUT,))
    self.layer_norm = (
      nnx.Dict(
        scale=layers.param(rngs, layers.ones, (out_ch,), (ax.CONV_OUT,)),
        bias=layers.param(rngs, layers.zeros, (out_ch,), (ax.CONV_OUT,)),
      )
      if norm
      else None
    )
    self.norm = norm
    self.stride = stride
    self.eps = cfg.layer_norm_eps
    self.dtype = jnp.dtype(cfg.dtype)

  def convolve(self, x: jax.Array) -> jax.Array:
    """The convolution (and bias) alone: (B, L, in) -> (B, (L - kernel) // stride + 1, out)."""
    y = jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      self.conv["kernel"][...].astype(self.dtype),
      window_strides=(self.stride,),
      padding="VALID",
      dimension_numbers=("NWC", "WIO", "NWC"),
      preferred_element_type=jnp.float32,  # see layers.matmul
    ).astype(self.dtype)
    if "bias" in self.conv:
      y = y + self.conv["bias"][...].astype(self.dtype)
    return y

  def normalise_with(self, y: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    """GroupNorm (groups == channels) with given statistics over time (B, 1, C), then GELU: the
    clip's own (``__call__``), or a long clip's for one chunk of it (whole_file.py)."""
    y = layers.standardise(y, mean, var, self.eps)
    y = y * self.layer_norm["scale"][...] + self.layer_norm["bias"][...]
    return layers.gelu(y).astype(self.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.convolve(x)
    if self.norm == "group":
      return self.normalise_with(y, *layers.moments(y, axes=1))  # per channel, over time
    if self.norm == "layer":
      y = layers.layer_norm(
        y, self.layer_norm["scale"][...], self.layer_norm["bias"][...], self.eps
      )
    return layers.gelu(y.astype(jnp.float32)).astype(self.dtype)


class ConvFeatureExtractor(nnx.Module):
  """(B, L) waveform -> (B, T, C) features. HF name: ``feature_extractor.conv_layers[i]``."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    convs = []
    in_ch = 1
    for i, (out_ch, kernel, stride) in enumerate(cfg.conv_layers):
      if cfg.extractor_mode == "layer_norm":
        norm = "layer"
      else:
        norm = "group" if i == 0 else None
      convs.append(ConvLayer(in_ch, out_ch, kernel, stride, norm=norm, cfg=cfg, rngs=rngs))
      in_ch = out_ch
    self.conv_layers = nnx.List(convs)

  def __call__(self, audio: jax.Array) -> jax.Array:
    x = audio[:, :, None]
    for layer in self.conv_layers:
      x = layer(x)
    return x
