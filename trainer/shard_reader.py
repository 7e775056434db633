"""Tar shards read as the manifest describes them: size checked at open, sha256 checked at the end.

:func:`shard_samples` is webdataset's ``tarfile_samples`` with each shard opened through
:class:`CheckedShard`, which knows the manifest's ``bytes`` and ``sha256`` for it:

- **size, before streaming**: a local file's size comes from ``fstat``, a remote object's from the
  open itself (HTTP ``Content-Length``, the GCS object's metadata), so the check costs no request;
- **sha256, where the whole shard is read anyway**: every byte the tar reader takes is hashed, and
  when the reader is done with the shard the rest (tar padding) is read and the digest compared.
  A shard left part-way (the epoch ended) is not checked.

A mismatch is a :class:`ShardMismatch` (a :class:`~trainer.errors.DatasetError`) naming the shard.
It goes to the stream's error handler like any read error; :class:`ReadErrors` keeps it
apart as fatal, and the trainer stops the run with it (exit 2) instead of counting a lost read.
Shards the manifest does not list (``--train-shards``) are read unchecked.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator

import webdataset as wds

from trainer import storage
from trainer.errors import REINGEST, DatasetError

log = logging.getLogger(__name__)


class ShardMismatch(DatasetError):
    """A shard whose size or sha256 is not the manifest's."""


class ShardUnreadable(Exception):
    """A shard that could not be opened (after the storage layer's retries): an HTTP 404, a missing
    object or file. The message names the shard's URL and the cause."""


class ReadErrors:
    """A webdataset error handler that logs, counts and continues (the count travels in the batches).

    Shard opens and reads are already retried with backoff (``trainer.storage``); what reaches
    this handler is lost data, and it is counted, never dropped silently. A shard that is not the
    one the manifest describes (:class:`~trainer.shard_reader.ShardMismatch`) is kept apart in
    ``mismatched``: the trainer stops on it rather than count it. Where every reader reads the
    same stream (the global order), ``counting`` is true only in the reader whose batch is being
    cut, so each failure is counted once.
    """

    def __init__(self):
        self.count = 0
        self.counting = True
        self.mismatched: list[str] = []

    def handler(self, exn: Exception) -> bool:
        if isinstance(exn, ShardMismatch):  # the trainer reports it, once
            self.mismatched.append(str(exn.args[0]))
            return True
        if self.counting:
            described = str(exn) if isinstance(exn, ShardUnreadable) else repr(exn)
            log.warning("unreadable shard data (counted as a failed read): %s", described)
            self.count += 1
        return True

    def take(self) -> int:
        """Failed reads since the last call."""
        count, self.count = self.count, 0
        return count

    def take_mismatched(self) -> list[str]:
        """Messages of the shards found not to match the manifest since the last call."""
        found, self.mismatched = self.mismatched, []
        return found


def _size_of(stream) -> int | None:
    """The size of the object behind an :func:`trainer.storage.open_url` stream, if known without a request."""
    raw = getattr(stream, "raw", stream)
    if isinstance(raw, storage.ResumingReader):
        return raw.size
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


class CheckedShard(io.RawIOBase):
    """A shard stream that checks its size at open and hashes what is read (``entry``: the manifest's)."""

    def __init__(self, url: str, entry: dict):
        super().__init__()
        self.url, self.entry = url, entry
        self.expected_bytes = int(entry["bytes"]) if "bytes" in entry else None
        self._stream = storage.open_url(url)
        size = _size_of(self._stream)
        if self.expected_bytes is not None and size is not None and size != self.expected_bytes:
            self._stream.close()
            raise ShardMismatch(
                f"shard {url} has {size} bytes, the manifest says {self.expected_bytes}: it changed after "
                f"it was written; {REINGEST}"
            )
        self._hash = hashlib.sha256()
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._stream.readinto(buffer)
        if count:
            self._hash.update(memoryview(buffer)[:count])
            self._read += count
        return count

    def finish(self) -> None:
        """Read the rest of the shard and compare its size and sha256 with the manifest's.

        Raises:
            ShardMismatch: naming the shard.
        """
        while chunk := self._stream.read(1 << 20):
            self._hash.update(chunk)
            self._read += len(chunk)
        if self.expected_bytes is not None and self._read != self.expected_bytes:
            raise ShardMismatch(
                f"shard {self.url} has {self._read} bytes, the manifest says {self.expected_bytes}; {REINGEST}"
            )
        expected = self.entry.get("sha256")
        if expected and self._hash.hexdigest() != expected:
            raise ShardMismatch(
                f"shard {self.url}: its sha256 differs from the manifest's (damaged since it was written); "
                f"{REINGEST}"
            )

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def _opened(
    urls: Iterable[str], entries: dict[str, dict], handler: Callable[[Exception], bool]
) -> Iterator[dict]:
    """``{"url", "stream"}`` per shard for ``tar_file_expander``; a checked shard is finished (and its
    sha256 compared) when the expander asks for the next one, i.e. once it is done with it."""
    for url in urls:
        entry = entries.get(url)
        try:
            stream = CheckedShard(url, entry) if entry is not None else storage.open_url(url)
        except ShardMismatch as exn:
            if handler(exn):
                continue
            return
        except Exception as exn:  # noqa: BLE001 - handed to the stream's handler, as webdataset does
            if handler(ShardUnreadable(f"shard {url} could not be opened ({exn})")):
                continue
            return
        try:
            yield {"url": url, "stream": stream}
            if isinstance(stream, CheckedShard):
                stream.finish()
        except GeneratorExit:
            stream.close()
            raise
        except Exception as exn:  # noqa: BLE001 - handed to the stream's handler, as webdataset does
            if not handler(exn):
                stream.close()
                return
        stream.close()


def shard_samples(
    urls: Iterable[str],
    entries: dict[str, dict],
    handler: Callable[[Exception], bool],
    select_files: Callable[[str], bool] | None = None,
) -> Iterator[dict]:
    """Samples of the tar shards ``urls`` in order, as ``wds.tariterators.tarfile_samples`` yields them,
    each shard listed in ``entries`` (URL -> manifest entry) checked as the module docstring says."""
    files = wds.tariterators.tar_file_expander(
        _opened(urls, entries, handler), handler=handler, select_files=select_files
    )
    return wds.tariterators.group_by_keys(files, handler=handler)
