"""fail_fast's one-process parts: each error's line and exit status (the multi-process routes are
tests/train/test_multihost_faults.py)."""

from __future__ import annotations

import os

import jax
import pytest

from data_pipeline.tfrecord import CorruptRecordError
from mert_jax.cli.train import ONE_LINE_ERRORS
from mert_jax.train import fail_fast, workdir_lock


@pytest.mark.parametrize(
  "error,status,words",
  [
    (CorruptRecordError("corrupt shard s.tfrecord: record 2\nmore"), 1, "corrupt shard s.tfrecord"),
    (workdir_lock.WorkdirLockLost("lock.json now names another trainer"), 5, "now names another"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (jax.errors.JaxRuntimeError("Gloo AllGather failed: reset by peer"), 4, "lost contact with"),
    (jax.errors.JaxRuntimeError("UNAVAILABLE: gs://b/x: 503"), 1, "JaxRuntimeError: UNAVAILABLE"),
  ],
)
def test_each_error_has_one_line_and_its_own_status(error, status, words):
  cause, got = fail_fast.describe(error, ONE_LINE_ERRORS)
  assert got == status and words in cause and "\n" not in cause


def test_an_unexpected_error_is_one_line_naming_its_traceback_file():
  def broken():
    raise ZeroDivisionError("division by zero")

  try:
    broken()
  except ZeroDivisionError as e:
    cause, status = fail_fast.describe(e, ONE_LINE_ERRORS)
  assert status == fail_fast.EXIT_ERROR
  assert cause.startswith("ZeroDivisionError: division by zero (traceback: ")
  path = cause.split("(traceback: ")[1].rstrip(")")
  assert "in broken" in open(path).read()
  os.remove(path)


def test_exit_statuses_are_distinct():
  statuses = [
    fail_fast.EXIT_ERROR,
    fail_fast.EXIT_PEER_FAILED,
    fail_fast.EXIT_PEER_LOST,
    fail_fast.EXIT_LOCK_LOST,
    fail_fast.EXIT_INTERRUPTED,
  ]
  assert len(set(statuses)) == len(statuses) and 0 not in statuses and 2 not in statuses
