"""Logical axis names carried by every parameter, and the default rules mapping them onto the
(data, fsdp, tensor) device mesh.

Model code names only logical axes; which mesh axis shards which logical axis is data
(``DEFAULT_RULES``, overridable from the config), as in MaxText / T5X.
"""

from __future__ import annotations

from typing import Sequence

# Logical axes used by parameters and activations.
BATCH = "batch"          # activations: the batch axis
LENGTH = "length"        # activations: time frames / samples
EMBED = "embed"          # model width D
MLP = "mlp"              # FFN width F
HEADS = "heads"          # attention heads
KV = "kv"                # per-head width
CONV_IN = "conv_in"      # extractor conv input channels
CONV_OUT = "conv_out"    # extractor conv output channels
CONV_KERNEL = "conv_kernel"  # conv taps (never sharded)
FINAL_DIM = "final_dim"  # per-codebook projection width
VOCAB = "vocab"          # label-embedding rows (codebooks x labels)
CQT_BINS = "cqt_bins"    # CQT head outputs

AxisRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# FSDP shards the model width of every matrix; tensor parallelism splits heads and the MLP.
DEFAULT_RULES: AxisRules = (
    (BATCH, ("data", "fsdp")),
    (EMBED, "fsdp"),
    (MLP, "tensor"),
    (HEADS, "tensor"),
    (KV, None),
    (CONV_IN, None),
    (CONV_OUT, None),      # the extractor is 4.2M parameters: replicated (its cost is activations)
    (CONV_KERNEL, None),
    (FINAL_DIM, None),
    (VOCAB, None),
    (CQT_BINS, None),
    (LENGTH, None),
)
