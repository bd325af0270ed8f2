"""Slice names -> topologies and chip facts (pure: no libtpu)."""

import pytest

from mert_jax import tpu_topology


@pytest.mark.parametrize(
  "name, topology, chips",
  [
    ("v4-8", "v4:2x2x1", 4),
    ("v4-32", "v4:2x2x4", 16),
    ("v4-64", "v4:2x4x4", 32),
    ("V4-128", "v4:4x4x4", 64),
    ("v5litepod-16", "v5e:4x4", 16),
    ("v5litepod-1", "v5e:1x1", 1),
    ("v4:1x1x1", "v4:1x1x1", 1),
    ("v4:2x2x4", "v4:2x2x4", 16),
  ],
)
def test_names_map_to_topologies(name: str, topology: str, chips: int) -> None:
  s = tpu_topology.parse(name)
  assert (s.topology, s.chips) == (topology, chips)


def test_v4_names_count_cores_two_per_chip() -> None:
  for n, shape in tpu_topology.CHIPS["v4"].slices.items():
    s = tpu_topology.parse(f"v4-{n}")
    assert s.chips * s.chip.cores_per_chip == n, shape
    assert s.accelerator_type == f"v4-{n}"
  assert tpu_topology.parse("v4:1x1x1").accelerator_type is None  # a single chip: no Cloud name


def test_chip_facts() -> None:
  assert tpu_topology.parse("v4-8").chip.hbm_bytes == 32 * 2**30
  assert tpu_topology.parse("v5litepod-8").chip.hbm_bytes == 16 * 2**30


@pytest.mark.parametrize(
  "name, closest",
  [("v4-30", "v4-32"), ("v4-6", "v4-64"), ("v5lite-16", "v5litepod-16"), ("v4:2x2", None)],
)
def test_unknown_names_are_one_line_with_the_closest(name: str, closest: str | None) -> None:
  with pytest.raises(tpu_topology.TopologyError) as e:
    tpu_topology.parse(name)
  message = str(e.value)
  assert "\n" not in message and name in message
  if closest:
    assert f"did you mean {closest}?" in message
