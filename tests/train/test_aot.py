"""The pure parts of the ahead-of-time compile report (the compile itself is tested by
tests/cli/test_compile_check.py)."""

import types

import pytest

from configs import mert as mert_configs
from mert_jax.train import aot, run_config

GIB = 2**30


def test_memory_total_is_what_the_chip_holds() -> None:
  stats = types.SimpleNamespace(
    argument_size_in_bytes=100,
    output_size_in_bytes=90,
    temp_size_in_bytes=500,
    alias_size_in_bytes=80,
    generated_code_size_in_bytes=30,
    peak_memory_in_bytes=0,
  )
  m = aot.memory_of(stats)
  assert (m.total, m.peak) == (100 + 90 + 500 - 80 + 30, None)
  assert (
    aot.memory_of(types.SimpleNamespace(**{**vars(stats), "peak_memory_in_bytes": 900})).total
    == 900
  )


def test_a_compile_refused_for_memory_says_what_it_used() -> None:
  m = aot.oom_memory(
    "RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used 34.52G of 30.75G hbm. "
    "Exceeded hbm capacity by 3.77G."
  )
  assert m.total == int(34.52 * GIB) and m.arguments is None
  assert aot.oom_memory("INTERNAL: something else") is None
  # temporaries alone over the chip: their bytes, a lower bound of the plan
  m = aot.oom_memory(
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
    "temporaries (97.36G) exceeds available HBM (30.75G)."
  )
  assert m.total == m.temporaries == int(97.36 * GIB)


@pytest.mark.parametrize(
  "seconds, expected",
  [(-5.0, None), (0.0, None), (float("inf"), None), (1e-6, None), (0.5, 0.5), (None, None)],
)
def test_cost_model_step_times_are_reported_only_where_sane(seconds, expected) -> None:
  # 1e12 FLOPs on a 275 TFLOP/s chip cannot take less than 3.6 ms.
  assert aot.sane_seconds(seconds, 1e12, 275e12) == expected


def test_per_chip_batch_sets_the_global_batch() -> None:
  c = run_config.from_config_dict(mert_configs.get_config("330m"))  # 8 micro-batches per update
  c2 = aot.with_per_chip_batch(c, 14, 32)
  assert c2.batch_size == 14 * 32 * 8 and c.batch_size == 3584
  assert aot.per_chip_batch_of(c2, 32) == 14
  assert c2.recorded["batch_size"] == 14 * 32 * 8  # what a workdir's config.json would record


def test_cost_analysis_shapes() -> None:
  assert aot.cost_of([{"flops": 2.0, "optimal_seconds": 1.0}]) == aot.Cost(2.0, 1.0)
  assert aot.cost_of(None) == aot.Cost(None, None)
