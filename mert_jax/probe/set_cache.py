"""The rendered probe sets' cache: one .npz per set config, named after a hash of what determines
its bytes (the set's config and cache format, the SoundFont, the synthesiser's version), written
atomically (a crash never leaves a file that looks whole)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import os
from typing import Any

import numpy as np

from mert_jax.files.atomic import atomic_write_bytes
from mert_jax.probe import render


@functools.cache
def renderer_version() -> str:
  """The synthesiser's version (midirenderer): another version may render other bytes."""
  import midirenderer  # pylint: disable=g-import-not-at-top

  return getattr(midirenderer, "__version__", None) or importlib.metadata.version("midirenderer")


def path(cache_dir: str, prefix: str, *key: Any) -> str:
  """CACHE_DIR/PREFIX-<16 hex digits>.npz for a set whose bytes ``key`` (JSON-able) determines,
  with the SoundFont and the synthesiser's version."""
  text = json.dumps([*key, render.soundfont_sha256(), renderer_version()], sort_keys=True)
  return os.path.join(cache_dir, f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.npz")


def load(file: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
  """(arrays, info) of a cached set, or None when ``file`` does not exist."""
  if not os.path.exists(file):
    return None
  with np.load(file, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files if k != "info"}
    return arrays, json.loads(str(z["info"]))


def save(file: str, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
  """Writes the set's arrays and its info (JSON) to ``file``, atomically."""
  buf = io.BytesIO()
  np.savez(buf, **arrays, info=json.dumps(info))
  os.makedirs(os.path.dirname(file) or ".", exist_ok=True)
  atomic_write_bytes(file, buf.getvalue())
