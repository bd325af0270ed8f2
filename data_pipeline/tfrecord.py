"""TFRecord files without TensorFlow: a CRC-checked reader and an atomic writer, local or remote.

Why our own: grain's ``TFRecordIterDataset`` skips both CRCs (its source says "TODO: Add CRC
check") and opens files with the built-in ``open``, so it cannot read ``gs://``. This module
verifies the masked CRC-32C of every length header and payload (``google-crc32c``) and opens
paths through ``fsspec`` (local paths, ``gs://`` with gcsfs, ``memory://`` in tests).

Record framing (TFRecord): uint64 length, uint32 masked_crc(length bytes), payload,
uint32 masked_crc(payload). ``TFRecordWriter`` writes through ``atomic.atomic_open``: the shard
appears under its name only when closed without an exception, so a crash mid-write never leaves a
shard that looks whole.

A shard can also be whole and CRC-clean yet not the one its manifest describes (emptied, cut at a
record boundary, a record swapped for another): given a ``ShardExpectation`` the reader checks, at
the shard's end, its record count and size and, on a pass read from byte 0, a digest of its records'
CRCs (``record_crcs_sha256``: sha256 over each record's 12-byte header and 4-byte payload CRC, 16
bytes a record, so it costs nothing next to the payload CRCs that already cover every payload byte)
or, for older manifests without it, the sha256 of the whole file. A mismatch raises
``ShardMismatchError``.

The grain dataset over many shards is ``reader.ShardChainIterDataset`` (there, not here, so that
prepare's worker processes need not import grain: 1.3 s each).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import struct
from typing import Any, Iterator

import fsspec
import google_crc32c

from mert_jax.files.atomic import atomic_open

_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class CorruptRecordError(ValueError):
  """A TFRecord shard whose framing or checksums are wrong; ``detail``: what is wrong, without the
  path and the advice."""

  def __init__(self, message: str, detail: str = ""):
    super().__init__(message)
    self.detail = detail or message


class ShardMismatchError(CorruptRecordError):
  """A shard that is not the one its manifest describes: another size, record count or digest
  (emptied, truncated at a record boundary, or records replaced after it was written)."""


REBUILD_HINT = (
  "re-run `python -m data_pipeline.prepare` with the same --input, --output and options: it "
  "verifies every shard and rebuilds the bad ones"
)


@dataclasses.dataclass(frozen=True)
class ShardExpectation:
  """What a shard's manifest entry says it holds; None where the manifest does not record it
  (manifests written before ``num_bytes`` / ``record_crcs_sha256`` existed)."""

  num_records: int
  num_bytes: int | None = None
  record_crcs_sha256: str | None = None
  sha256: str | None = None


def masked_crc(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
  header = _LEN.pack(len(payload))
  return header + _CRC.pack(masked_crc(header)) + payload + _CRC.pack(masked_crc(payload))


class TFRecordWriter:
  """Context manager writing records to ``path`` atomically (``atomic.atomic_open``); creates the
  folder if needed."""

  def __init__(self, path: str):
    self.path = path
    fs, fs_path = fsspec.core.url_to_fs(path)
    fs.makedirs(os.path.dirname(fs_path) or ".", exist_ok=True)
    self._stack = contextlib.ExitStack()
    self._file = self._stack.enter_context(atomic_open(path, "wb"))
    self.num_records = 0

  def write(self, payload: bytes) -> None:
    self._file.write(frame_record(payload))
    self.num_records += 1

  def __enter__(self) -> "TFRecordWriter":
    return self

  def __exit__(self, exc_type, exc, tb) -> bool:
    return bool(self._stack.__exit__(exc_type, exc, tb))


class TFRecordReader:
  """Sequential CRC-checked reader with byte-offset state.

  ``expect``: the shard's manifest entry, checked when the end of the file is reached (record
  count from ``index``, size from the end offset; both hold for a reader resumed mid-file, whose
  ``index`` is restored). Digests need the whole file, so they are only kept when reading starts
  at byte 0: ``hash_crcs`` (``record_crcs_sha256``) and ``hash_bytes`` (the file's sha256);
  checked against ``expect`` where it records them, and readable afterwards from ``digests()``."""

  def __init__(
    self,
    path: str,
    offset: int = 0,
    index: int = 0,
    *,
    expect: ShardExpectation | None = None,
    hash_crcs: bool = False,
    hash_bytes: bool = False,
  ):
    self.path = path
    self._file = fsspec.open(path, "rb").open()
    self._file.seek(offset)
    self.index = index  # number of the next record in the file (for error messages)
    self._expect = expect
    self._crcs = hashlib.sha256() if hash_crcs and offset == 0 else None
    self._sha = hashlib.sha256() if hash_bytes and offset == 0 else None

  def tell(self) -> int:
    return self._file.tell()

  def close(self) -> None:
    self._file.close()

  def digests(self) -> dict[str, str | None]:
    """{"record_crcs_sha256", "sha256"} of what was read so far (None: not hashed)."""
    return {
      "record_crcs_sha256": self._crcs.hexdigest() if self._crcs is not None else None,
      "sha256": self._sha.hexdigest() if self._sha is not None else None,
    }

  @property
  def hashed_bytes(self) -> bool:
    """Whether this pass hashes the whole file (it started at byte 0 with ``hash_bytes``)."""
    return self._sha is not None

  def _fail(self, what: str, offset: int) -> CorruptRecordError:
    detail = f"record {self.index} (byte offset {offset}): {what}"
    return CorruptRecordError(f"corrupt shard {self.path}: {detail}; {REBUILD_HINT}", detail)

  def _check_end(self, end: int) -> None:
    """At the end of the file: compare with ``expect``."""
    e = self._expect
    if e is None:
      return
    wrong = []
    if self.index != e.num_records:
      wrong.append(f"{self.index} records where the manifest lists {e.num_records}")
    if e.num_bytes is not None and end != e.num_bytes:
      wrong.append(f"{end} bytes where the manifest lists {e.num_bytes}")
    got = self.digests()
    for key in ("record_crcs_sha256", "sha256"):
      want = getattr(e, key)
      if not wrong and got[key] is not None and want is not None and got[key] != want:
        wrong.append(f"its {key} is {got[key][:12]}... where the manifest lists {want[:12]}...")
    if wrong:
      raise ShardMismatchError(
        f"shard {self.path} is not the one its manifest describes: {'; '.join(wrong)} (the shard "
        f"or the manifest changed after prepare wrote them); {REBUILD_HINT}",
        "; ".join(wrong),
      )

  def __iter__(self) -> Iterator[bytes]:
    return self

  def __next__(self) -> bytes:
    offset = self._file.tell()
    head = self._file.read(_LEN.size + _CRC.size)
    if not head:
      self._check_end(offset)
      raise StopIteration
    if len(head) != _LEN.size + _CRC.size:
      raise self._fail(f"truncated header ({len(head)} of 12 bytes)", offset)
    (length,), (crc,) = _LEN.unpack(head[:8]), _CRC.unpack(head[8:])
    if masked_crc(head[:8]) != crc:
      raise self._fail("length CRC mismatch", offset)
    payload = self._file.read(length)  # payload and CRC read separately: no slice copy
    tail = self._file.read(_CRC.size)
    if len(payload) != length or len(tail) != _CRC.size:
      raise self._fail(
        f"truncated payload ({len(payload) + len(tail)} of {length + 4} bytes)", offset
      )
    (crc,) = _CRC.unpack(tail)
    if masked_crc(payload) != crc:
      raise self._fail("data CRC mismatch", offset)
    if self._crcs is not None:
      self._crcs.update(head)
      self._crcs.update(tail)
    if self._sha is not None:
      self._sha.update(head)
      self._sha.update(payload)
      self._sha.update(tail)
    self.index += 1
    return payload


def read_records(path: str, expect: ShardExpectation | None = None) -> Iterator[bytes]:
  """The payloads of ``path``, CRC-checked (and checked against ``expect`` at the end)."""
  reader = TFRecordReader(
    path,
    expect=expect,
    hash_crcs=expect is not None and expect.record_crcs_sha256 is not None,
    hash_bytes=expect is not None and expect.sha256 is not None,
  )
  try:
    yield from reader
  finally:
    reader.close()


def scan_shard(path: str) -> dict[str, Any]:
  """Read a whole shard (CRC-checked): {"num_records", "num_bytes", "record_crcs_sha256",
  "sha256"}. Raises ``CorruptRecordError`` when its framing or a checksum is wrong."""
  reader = TFRecordReader(path, hash_crcs=True, hash_bytes=True)
  try:
    for _ in reader:
      pass
    return {"num_records": reader.index, "num_bytes": reader.tell(), **reader.digests()}
  finally:
    reader.close()
