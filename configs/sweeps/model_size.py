"""Model-size sweep: ``configs/sweeps/model_size.py:NAME`` for ``python -m mert_jax.cli.sweep``.

Each run is (run name, config variant, {field: value} overrides). ``full`` is the paper-scale
sweep (one TPU slice per run through launch_tpu.sh); ``tiny`` is a CPU-sized sweep over depth and
width used by the tests and for trying the machinery.
"""

from __future__ import annotations


def get_sweep(name: str = "full") -> list[tuple[str, str, dict]]:
  if name == "full":
    return [("95m", "95m", {}), ("330m", "330m", {}), ("1b", "1b", {})]
  if name == "tiny":
    steps = {
      "total_steps": 6,
      "log_every": 3,
      "eval_every": 0,
      "checkpoint_every": 100,
      "data.shuffle_window": 16,
    }
    return [
      ("tiny-2x32", "tiny", dict(steps)),
      ("tiny-4x32", "tiny", {**steps, "model.num_layers": 4}),
      ("tiny-2x64", "tiny", {**steps, "model.hidden_size": 64, "model.ffn_size": 128}),
    ]
  raise ValueError(f"unknown sweep {name!r}; choose full or tiny")
