"""The Hugging Face Hub: a Hub id where a model folder is expected (``resolve_hf_dir``), and
uploading a finished export (``push_folder``).

Both need ``huggingface_hub`` (installed with the torch extra); it is imported only when a Hub id
is actually used, so importing this module needs neither it nor torch. A download fetches only
what ``import_hf`` reads (configs, weights, the mert_jax heads), never a repository's Python code.
Every failure is a ``HubError`` (or ``ImportError``) whose message is one line.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mert_jax.files import storage
from mert_jax.hf import export_files
from mert_jax.terminal.errors import one_line

# What a Hub model id looks like: owner/name, each [A-Za-z0-9._-], not starting with . or -.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# The files ``mert_jax.hf.convert.import_hf`` reads; remote code (*.py) is never downloaded.
DOWNLOAD_PATTERNS = (
  export_files.HF_CONFIG_FILE,
  export_files.PREPROCESSOR_FILE,
  export_files.HF_WEIGHTS,
  "model.safetensors.index.json",  # transformers' sharded weights: the index and its shards
  "model-*-of-*.safetensors",
  export_files.HF_BIN,
  export_files.HEADS_FILE,
  export_files.MERT_CONFIG_FILE,
)
EXTRA_HINT = "pip install -e '.[torch]'"
DEFAULT_COMMIT_MESSAGE = "Upload MERT model exported by mert_jax"


class HubError(ValueError):
  """The Hub could not serve a request (the message is one line). A ValueError, so the callers
  that report a bad input as one line (the command lines, ``init_from``) report this too."""


def looks_like_hub_id(path_or_id: str) -> bool:
  """``owner/name``, not an existing path and not a URL."""
  s = os.fspath(path_or_id)
  return bool(HUB_ID.match(s)) and not os.path.exists(s)


def _import_hub(what: str) -> Any:
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    import huggingface_hub.constants  # noqa: F401  (submodules of a lazily loaded package)
    import huggingface_hub.errors  # noqa: F401
  except ImportError as e:
    raise ImportError(
      f"{what} needs huggingface_hub, installed with the torch extra ({EXTRA_HINT})"
    ) from e
  return huggingface_hub


def _offline(hh: Any) -> bool:
  """``HF_HUB_OFFLINE`` as huggingface_hub read it at import, or as the environment says now."""
  env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
  return bool(hh.constants.HF_HUB_OFFLINE) or env.strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve_hf_dir(path_or_id: str | os.PathLike, revision: str | None = None) -> str:
  """A local folder (or remote path) is returned as is; an ``owner/name`` Hub id that is not an
  existing path is downloaded (config, preprocessor, weights and heads files only) into the
  Hugging Face cache, and the snapshot folder is returned. Offline, a cached snapshot is used."""
  s = os.fspath(path_or_id)
  if not looks_like_hub_id(s):
    if revision is not None:
      raise ValueError(f"--revision={revision} applies to a Hub id; {s} is a local path")
    return s
  hh = _import_hub(f"{s}: not a local folder; downloading it from the Hugging Face Hub")
  errors = hh.errors
  offline = _offline(hh)
  at = f"{s}" + (f" (revision {revision})" if revision else "")
  try:
    folder = hh.snapshot_download(
      s, revision=revision, allow_patterns=list(DOWNLOAD_PATTERNS), local_files_only=offline
    )
  except errors.RevisionNotFoundError as e:
    raise HubError(f"{at}: the Hub repository has no such revision") from e
  except errors.RepositoryNotFoundError as e:  # also gated / private without a token
    raise HubError(
      f"{s}: not a local folder, and not a model repository on the Hugging Face Hub (or it is "
      f"private or gated: log in with `hf auth login`)"
    ) from e
  except errors.HfHubHTTPError as e:  # an HTTP answer (an OSError too): the Hub is reachable
    raise HubError(f"{at}: the Hugging Face Hub refused the download ({one_line(e)})") from e
  except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, OSError) as e:
    if offline:
      reason = f"HF_HUB_OFFLINE is set and it is not in the cache {hh.constants.HF_HUB_CACHE}"
    else:
      cause = e.__cause__ or e.__context__ or e
      reason = one_line(cause)
    raise HubError(
      f"{at}: not a local folder, and the Hugging Face Hub cannot be reached (offline: "
      f"{reason}); download it with `hf download {s} --local-dir DIR` where the Hub is "
      f"reachable and pass --hf=DIR, or pass a local folder"
    ) from e
  except Exception as e:  # pylint: disable=broad-except  (e.g. a connection lost mid-download)
    raise HubError(f"{at}: downloading from the Hugging Face Hub failed ({one_line(e)})") from e
  if not os.path.exists(os.path.join(folder, export_files.HF_CONFIG_FILE)):
    raise HubError(f"{at}: the Hub repository has no config.json; not a Hugging Face model")
  return os.fspath(folder)


def check_repo_id(repo_id: str) -> None:
  """Refuses a ``--push-to-hub`` value that is not ``owner/name``."""
  if not HUB_ID.match(repo_id):
    raise ValueError(f"--push-to-hub={repo_id}: expected a Hub repository id such as owner/name")


def make_api() -> Any:
  """A ``huggingface_hub.HfApi`` (token from ``hf auth login`` or ``HF_TOKEN``)."""
  return _import_hub("--push-to-hub").HfApi()


def push_folder(
  folder: str | os.PathLike,
  repo_id: str,
  *,
  private: bool = False,
  commit_message: str | None = None,
  api: Any = None,
) -> str:
  """Creates the model repository ``repo_id`` if needed (``private`` only applies to a new one)
  and uploads ``folder``'s files (downloaded first from a bucket) in one commit; returns the
  commit (or repository) URL. ``api``: an ``HfApi``-like object (default ``make_api()``)."""
  check_repo_id(repo_id)
  api = api if api is not None else make_api()
  message = commit_message or DEFAULT_COMMIT_MESSAGE
  try:
    api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
    with storage.local_folder(folder) as local:  # a folder in a bucket is downloaded first
      commit = api.upload_folder(
        repo_id=repo_id, folder_path=local, repo_type="model", commit_message=message
      )
  except Exception as e:  # pylint: disable=broad-except  (network, auth, HTTP: one line each)
    raise HubError(
      f"pushing {folder} to {repo_id} failed ({one_line(e)}); the export itself is complete: "
      f"log in with `hf auth login` (or set HF_TOKEN) and upload it again"
    ) from e
  return str(getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}")
