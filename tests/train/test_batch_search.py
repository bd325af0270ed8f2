"""The max-batch search against fake compiles (pure: no compiler)."""

import pytest

from mert_jax.train.batch_search import (
  DepthModel,
  Probe,
  find_max_batch,
  fit_depth_model,
  predict,
)

CAPACITY = 1000


def affine(fixed: int, per_clip: int, calls: list[int]):
  """A fake compile whose bytes are exactly affine in the batch."""

  def measure(b: int) -> Probe:
    calls.append(b)
    used = fixed + per_clip * b
    return Probe(b, used, used <= CAPACITY)

  return measure


@pytest.mark.parametrize("fixed, per_clip", [(100, 30), (0, 1), (500, 7), (990, 3), (999, 1)])
def test_affine_memory_is_found_in_four_compiles(fixed: int, per_clip: int) -> None:
  calls = []
  r = find_max_batch(affine(fixed, per_clip, calls), CAPACITY, (8, 16))
  assert r.max_batch == (CAPACITY - fixed) // per_clip
  assert r.exact and len(calls) <= 4 and len(set(calls)) == len(calls)


def test_nothing_fits() -> None:
  calls = []
  r = find_max_batch(affine(1200, 10, calls), CAPACITY, (8, 16))
  assert r.max_batch == 0 and r.exact and 1 in calls and len(calls) == 3


def test_a_bent_line_is_bracketed_and_bisected() -> None:
  # Memory grows faster above 40 clips (XLA changes its plan): the line through 8 and 16 predicts
  # too far; the verifications close the bracket anyway.
  def measure(b: int) -> Probe:
    used = 100 + 10 * b + (60 * (b - 40) if b > 40 else 0)
    return Probe(b, used, used <= CAPACITY)

  r = find_max_batch(measure, CAPACITY, (8, 16))
  assert r.max_batch == 47 and r.exact and len(r.probes) <= 8, r.probes


def test_unknown_bytes_fall_back_to_bisection() -> None:
  r = find_max_batch(lambda b: Probe(b, None, b <= 37), CAPACITY, (8, 16), max_compiles=20)
  assert r.max_batch == 37 and r.exact


def test_the_compile_budget_is_kept() -> None:
  r = find_max_batch(lambda b: Probe(b, None, b <= 1000), CAPACITY, (1, 2), max_compiles=5)
  assert len(r.probes) == 5 and not r.exact and r.max_batch == 16


def test_predict() -> None:
  assert predict(Probe(1, 110, True), Probe(2, 120, True), 200) == 10
  assert predict(Probe(1, 110, True), Probe(2, 110, True), 200) is None  # flat: no prediction
  assert predict(Probe(1, None, True), Probe(2, 120, True), 200) is None


def test_depth_model_recovers_a_bilinear_memory_and_its_max_batch() -> None:
  truth = DepthModel(c0=2e9, c1=1.3e8, c2=4e8, c3=8e7)
  points = {(l, b): int(truth.bytes(l, b)) for l in (1, 2) for b in (8, 16)}
  fit = fit_depth_model(points)
  assert fit.bytes(12, 30) == pytest.approx(truth.bytes(12, 30), rel=1e-6)
  assert fit.max_batch(12, 32 * 2**30) == truth.max_batch(12, 32 * 2**30) == 22
  with pytest.raises(ValueError, match="two depths x two batches"):
    fit_depth_model({(1, 8): 1, (1, 16): 2, (2, 8): 3})
