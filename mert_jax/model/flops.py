"""Analytic FLOP count of a MERT training step (for throughput and MFU reports).

Counted: every matmul and convolution, 2 FLOPs per multiply-accumulate, for one clip:
the 7 extractor convolutions, the feature projection, the positional convolution, per layer the
q/k/v/out projections (4 * 2TD^2), attention scores and weighted sum (2 * 2T^2 D) and the FFN
(2 * 2TDF), and the heads (final_proj, the K x C_k cosine logits, the CQT head). The backward
pass is counted as twice the forward (input and weight gradients), so a step is 3x forward.
Elementwise work (norms, GELU, softmax, masking, mixup) and the CQT target are not counted.
For MERT-95M on 5 s clips this gives 330.6 GFLOP per clip, the figure the project's H100
reference uses (~331).
"""

from __future__ import annotations

from mert_jax.config import ModelConfig
from mert_jax.model.conv_extractor import num_frames


def forward_flops_per_clip(cfg: ModelConfig, num_samples: int) -> dict[str, float]:
  """Forward FLOPs per clip of ``num_samples`` samples, by component."""
  conv, n, in_ch = 0.0, num_samples, 1
  for out_ch, kernel, stride in cfg.conv_layers:
    n = (n - kernel) // stride + 1
    conv += 2.0 * n * in_ch * kernel * out_ch
    in_ch = out_ch
  t = num_frames(num_samples, cfg.conv_layers)
  d, f = cfg.hidden_size, cfg.ffn_size
  per_layer = 4 * 2.0 * t * d * d + 2 * 2.0 * t * t * d + 2 * 2.0 * t * d * f
  return {
    "conv_extractor": conv,
    "feature_projection": 2.0 * t * cfg.conv_dim * d,
    "pos_conv": 2.0 * t * d * (d // cfg.pos_conv_groups) * cfg.pos_conv_kernel,
    "encoder": cfg.num_layers * per_layer,
    "heads": (
      2.0 * t * d * cfg.final_dim * cfg.num_codebooks
      + 2.0 * t * cfg.num_codebooks * cfg.num_labels * cfg.final_dim
      + 2.0 * t * d * cfg.cqt_bins
    ),
  }


def train_flops_per_clip(cfg: ModelConfig, num_samples: int) -> float:
  """Forward + backward FLOPs per clip (3x forward)."""
  return 3.0 * sum(forward_flops_per_clip(cfg, num_samples).values())
