"""Test setup: 8 fake CPU devices (set before JAX starts), a persistent XLA compilation cache,
and shared fixtures."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same train step (a straight run, then the resumed run; one per xdist
# worker; subprocesses inherit the variable). JAX's persistent cache serves a program compiled
# once to every later compile of the identical program: the same executable, so no result
# changes, only minutes of compile time saved. Keys include the program, devices, flags and
# versions, so an entry of other code is never used.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mert_jax_test_xla_cache")
)
# Every compile, however small: JAX caches only compiles over 1 s by default, but the first
# checkpoint save of a sharded state compiles ~145 tiny slicing programs (orbax's replica-slice
# transfer, ~0.05 s each) in every process: 10.8 s for the tiny state on 8 devices, 4.3 s with
# them cached (measured 2026-12-02; each subprocess test and xdist worker pays it).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from data_pipeline import example_audio  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  """The modules marked ``long`` (tests of tens of seconds: trainer runs, subprocesses, Beam) go
  first, each module kept whole (its module-scoped fixtures are built once): pytest-xdist hands
  tests out in this order, so two workers end together instead of one finishing a minute-long
  test alone (by collection order tests/train/ came last). Otherwise the order is unchanged."""
  modules: dict[str, list[pytest.Item]] = {}
  for item in items:
    modules.setdefault(item.nodeid.split("::")[0], []).append(item)
  long_first = sorted(
    modules.values(), key=lambda group: not any(i.get_closest_marker("long") for i in group)
  )
  items[:] = [item for group in long_first for item in group]


@pytest.fixture(scope="session")
def music() -> np.ndarray:
  """About 8 s of real music (24 kHz mono float32); see data_pipeline/example_audio.py."""
  return example_audio.music_clip(seconds=8.0)


@pytest.fixture(scope="session")
def music_file(tmp_path_factory) -> str:
  """Path of a real music file in its original format (ogg), or a synthesised wav fallback."""
  return example_audio.music_file(tmp_path_factory.mktemp("music"))


@pytest.fixture(scope="session")
def default_data(tmp_path_factory, worker_id: str) -> str:
  """The embedded default corpus (tiny variant's teacher: 8 x 64 codes), prepared once per test
  session: under pytest-xdist the workers share one copy (the first prepares it under a file
  lock, the others wait and reuse it; ensure_default_corpus reuses a corpus whose manifest
  matches), so its decode, k-means fit and shards are paid once, not once per worker."""
  import fcntl

  from data_pipeline import default_corpus

  if worker_id == "master":  # no xdist: this session's own folder
    root = tmp_path_factory.mktemp("corpus")
  else:  # the session's temporary root, shared by its workers (one per pytest run)
    root = tmp_path_factory.getbasetemp().parent / "shared_corpus"
  root.parent.mkdir(parents=True, exist_ok=True)
  with open(str(root) + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    return default_corpus.ensure_default_corpus(
      str(root), num_codebooks=8, codebook_size=64, minutes=6.0
    )


@pytest.fixture(scope="session")
def tiny_run(default_data, tmp_path_factory) -> tuple[str, str, dict]:
  """One 4-step tiny run on a fake clock, shared by the console, TensorBoard and plot tests:
  (workdir, printed text, train's result); see tests/train/helpers.fake_clock_run."""
  from tests.train.helpers import fake_clock_run

  wd = str(tmp_path_factory.mktemp("tiny_run") / "run")
  text, result = fake_clock_run(default_data, wd)
  return wd, text, result


@pytest.fixture(scope="session")
def trained_workdir(default_data: str, tmp_path_factory) -> tuple[str, dict]:
  """A tiny training workdir with checkpoints at steps 1 and 2, and the final trained params."""
  from configs import mert as mert_configs
  from mert_jax.train.loop import train

  c = mert_configs.get_config("tiny")
  c.data.dir, c.total_steps, c.checkpoint_every = default_data, 2, 1
  c.log_every, c.eval_every, c.data.shuffle_window = 1, 0, 16
  wd = str(tmp_path_factory.mktemp("workdir") / "run")
  state = train(c, wd)["state"]
  return wd, state["params"]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> None:
  """The Hugging Face Hub offline (HF_HUB_OFFLINE=1) with an empty cache, in this process."""
  huggingface_hub = pytest.importorskip("huggingface_hub")
  pytest.importorskip("huggingface_hub.constants")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
  # huggingface_hub read these at import; make this process honour them as a fresh one would.
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_home/hub"))


# The gs:// tests: a local GCS emulator (once per session) and a fresh bucket per test with the
# environment pointed at it (tests/gcs_emulator.py).
from tests.gcs_emulator import gcs, gcs_emulator  # noqa: E402, F401
