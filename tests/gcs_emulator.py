"""A local Google Cloud Storage for the gs:// tests: gcp-storage-emulator served by a thread of the
test process (one per session, so one per xdist worker), a fresh bucket per test, and the
environment every client needs pointed at it, inherited by the subprocesses a test starts.

What points each client at the emulator:

* gcsfs (fsspec's gs://: the data pipeline, epath, plot, export): ``STORAGE_EMULATOR_HOST``, and
  ``FSSPEC_GS_TOKEN=anon`` (no credential search, which would ask a metadata server);
* tensorstore (orbax's checkpoint writer): ``TENSORSTORE_GCS_HTTP_URL``, and
  ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` (a fixed token instead of the credential search, which logs an
  error when there are none);
* google-cloud-storage (tensorboardX's gs:// event files): ``STORAGE_EMULATOR_HOST``.

gcsfs >= 2025.x first asks for a bucket's layout over gRPC (hierarchical namespace,
``get_storage_layout``), which the emulator does not serve: a 60 s stall per bucket.
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` (read when gcsfs is imported: subprocesses) and gcsfs's
plain ``GCSFileSystem`` registered for gs:// (this process, whenever it imported gcsfs) avoid it.
Test-only: a real bucket answers that request.

Three additions to the emulator: a bucket made with ``read_only=True`` refuses every write with
GCS's 403, as a bucket does that the credentials may only read; ``ifGenerationMatch`` on an upload
named in its query or on a delete is honoured with GCS's 412 (the workdir lock's conditional
writes; requests are served one at a time, so check and write are atomic); and a media download
carries the
object's generation in ``x-goog-generation``, as GCS's do (tensorstore reads it back for its
conditional reads: without it, orbax's second save of a run fails with "Malformed
StorageGeneration"). And one patch of tensorboardX (see ``gcs_emulator``).
"""

from __future__ import annotations

import dataclasses
import http.server
import itertools
import json
import logging
import posixpath
import re
import sys
import threading
from functools import partial
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlparse

import pytest

HOST = "127.0.0.1"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
_BUCKET_IN_PATH = re.compile(r"/b/([^/?]+)")
_OBJECT_IN_PATH = re.compile(r"/b/[^/?]+/o/([^?]+)")
_MEDIA_DOWNLOAD = re.compile(r"/b/([^/?]+)/o/([^?]+)\?(?:.*&)?alt=media")
PRECONDITION_FAILED = {
  "code": 412,
  "message": "At least one of the pre-conditions you specified did not hold.",
}
# The bucket that refuses writes answers as GCS does.
FORBIDDEN = {
  "code": 403,
  "message": "test@example.com does not have storage.objects.create access to the Google Cloud "
  "Storage object. Permission 'storage.objects.create' denied on resource (or it may not exist).",
}


def _handler_class() -> type:
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top

  class Handler(server.RequestHandler):
    """The emulator's handler, with writes to read-only buckets refused and the generation of a
    downloaded object in its headers."""

    def end_headers(self):
      m = _MEDIA_DOWNLOAD.search(self.path) if self.command == "GET" else None
      obj = None
      if m:
        try:
          obj = self.storage.get_file_obj(m.group(1), unquote(m.group(2)))
        except Exception:  # noqa: BLE001 - a missing object: the emulator answers 404 itself
          obj = None
      if obj:
        self.send_header("x-goog-generation", str(obj["generation"]))
        self.send_header("x-goog-metageneration", str(obj["metageneration"]))
      super().end_headers()

    def _refused(self) -> bool:
      m = _BUCKET_IN_PATH.search(self.path)
      if self.command not in WRITES or not m or m.group(1) not in self.server.read_only:
        return False
      self.rfile.read(int(self.headers.get("Content-Length") or 0))
      self._answer(403, FORBIDDEN)
      return True

    def _precondition_failed(self) -> bool:
      """GCS's ``ifGenerationMatch`` on an upload (``name=`` in the query) or a delete: 412
      unless the object's generation is the one named (0: the object must not exist)."""
      query = parse_qs(urlparse(self.path).query)
      bucket, obj = _BUCKET_IN_PATH.search(self.path), _OBJECT_IN_PATH.search(self.path)
      name = query.get("name", [None])[0] or (unquote(obj.group(1)) if obj else None)
      if "ifGenerationMatch" not in query or not bucket or not name:
        return False
      try:
        generation = str(self.storage.get_file_obj(bucket.group(1), name)["generation"])
      except Exception:  # noqa: BLE001 - the emulator's NotFound: no object, generation 0
        generation = "0"
      if generation == query["ifGenerationMatch"][0]:
        return False
      self.rfile.read(int(self.headers.get("Content-Length") or 0))
      self._answer(412, PRECONDITION_FAILED)
      return True

    def _answer(self, status: int, error: dict[str, Any]) -> None:
      body = json.dumps({"error": {**error, "errors": [error]}}).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def do_POST(self):
      if not self._refused() and not self._precondition_failed():
        super().do_POST()

    def do_PUT(self):
      if not self._refused():
        super().do_PUT()

    def do_PATCH(self):
      if not self._refused():
        super().do_PATCH()

    def do_DELETE(self):
      if not self._refused() and not self._precondition_failed():
        super().do_DELETE()

  return Handler


class _Server(http.server.HTTPServer):
  """One request at a time, as the emulator's own server; a client that hangs up mid-answer (a
  cancelled read) is not an error of the test."""

  read_only: set[str]

  def handle_error(self, request: Any, client_address: Any) -> None:
    if not isinstance(sys.exc_info()[1], ConnectionError):
      super().handle_error(request, client_address)


@dataclasses.dataclass
class Emulator:
  """The running emulator: its URL, and new buckets on demand."""

  url: str
  server: _Server
  storage: Any
  _numbers: Iterator[int] = dataclasses.field(default_factory=itertools.count)

  def bucket(self, *, read_only: bool = False) -> str:
    """Creates a fresh bucket and returns its name."""
    from gcp_storage_emulator.handlers import buckets  # pylint: disable=g-import-not-at-top

    name = f"test-bucket-{next(self._numbers)}"
    buckets.create_bucket(name, self.storage)
    if read_only:
      self.server.read_only.add(name)
    return name

  def env(self) -> dict[str, str]:
    """The environment that points every client at the emulator (see the module docstring)."""
    return {
      "STORAGE_EMULATOR_HOST": self.url,
      "TENSORSTORE_GCS_HTTP_URL": self.url,
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
      "FSSPEC_GS_TOKEN": "anon",
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


@dataclasses.dataclass(frozen=True)
class Bucket:
  """A test's bucket: ``url`` is ``gs://NAME``; ``path("a", "b")`` is ``gs://NAME/a/b``."""

  name: str
  emulator: Emulator

  @property
  def url(self) -> str:
    return f"gs://{self.name}"

  def path(self, *parts: str) -> str:
    return posixpath.join(self.url, *parts)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
  """The emulator, started once per session (in memory) and stopped at its end."""
  import portpicker  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.storage import Storage  # pylint: disable=g-import-not-at-top
  from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top

  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # "Resource not found"
  # tensorboardX's gs:// event writer uploads its file once more when it is collected, even after
  # it was closed (which uploaded it), and its SummaryWriter's atexit hook keeps it alive until
  # the interpreter exits, after this emulator stopped: each would retry for 120 s. Not restored.
  record_writer.GCSRecordWriter.__del__ = lambda self: None
  storage = Storage(use_memory_fs=True)
  port = portpicker.pick_unused_port()
  server = _Server((HOST, port), partial(_handler_class(), storage))
  server.read_only = set()
  thread = threading.Thread(target=server.serve_forever, name="gcs-emulator", daemon=True)
  thread.start()
  try:
    yield Emulator(f"http://{HOST}:{port}", server, storage)
  finally:
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def gcs(gcs_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
  """A fresh bucket of the emulator, with the environment of this test (and of the subprocesses it
  starts) pointed at the emulator."""
  import fsspec  # pylint: disable=g-import-not-at-top
  import gcsfs.core  # pylint: disable=g-import-not-at-top

  for key, value in gcs_emulator.env().items():
    monkeypatch.setenv(key, value)
  monkeypatch.setitem(fsspec.config.conf, "gs", {"token": "anon"})  # read from env at import
  for protocol in ("gs", "gcs"):
    fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
  gcsfs.core.GCSFileSystem.clear_instance_cache()
  try:
    yield Bucket(gcs_emulator.bucket(), gcs_emulator)
  finally:
    gcsfs.core.GCSFileSystem.clear_instance_cache()
