"""Whole objects by URL: local paths, ``file://``, ``gs://`` and ``http(s)://``, read front to back.

Remote reads are retried with backoff (:func:`blobstore.retries.with_retries`): a failed open is
repeated, and a stream that breaks mid-read is reopened at the byte it reached (HTTP ``Range``, GCS
ranged reads), so a read survives transient errors without losing or repeating bytes. Errors that
retrying cannot fix (404, 403, ...) are raised at once.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import BinaryIO

from blobstore.gcs import blob_exists, open_blob_at
from blobstore.retries import is_transient, with_retries
from blobstore.urls import scheme_of


class ResumingReader(io.RawIOBase):
    """A remote object read front to back; a read that fails transiently, or ends before the object's
    size, reopens the object at the byte reached and goes on (with :func:`with_retries`).

    ``open_at(offset)`` returns (a stream starting at ``offset``, the object's size or None).
    """

    def __init__(self, url: str, open_at: Callable[[int], tuple[BinaryIO, int | None]]):
        super().__init__()
        self.url, self._position = url, 0
        self._stream, self._size = with_retries(f"opening {url}", lambda: open_at(0))
        self._open_at = lambda offset: open_at(offset)[0]

    @property
    def size(self) -> int | None:
        """The object's size in bytes, as its first open reported it (None when it did not)."""
        return self._size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        def attempt() -> int:
            if self._stream is None:  # the previous attempt broke: start again at the same byte
                self._stream = self._open_at(self._position)
            try:
                count = self._stream.readinto(buffer)
                if not count and len(buffer) and self._size is not None and self._position < self._size:
                    raise http.client.IncompleteRead(b"", self._size - self._position)  # cut short
            except Exception as exn:
                if is_transient(exn):
                    broken, self._stream = self._stream, None
                    with contextlib.suppress(Exception):
                        broken.close()
                raise
            self._position += count
            return count

        return with_retries(f"reading {self.url} at byte {self._position}", attempt)

    def close(self) -> None:
        if not self.closed and self._stream is not None:
            self._stream.close()
        super().close()


def open_http_at(url: str, offset: int) -> tuple[BinaryIO, int | None]:
    """A stream of the ``http(s)://`` resource ``url`` from byte ``offset`` (a ``Range`` request; a
    server that ignores it is read up to ``offset``), and the resource's size when the server says."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    response = urllib.request.urlopen(request, timeout=60)  # noqa: S310 - callers check the scheme
    length = response.headers.get("Content-Length")
    if offset and response.status != 206:  # the server ignored Range: skip to the offset
        skipped = 0
        while skipped < offset:
            chunk = response.read(min(1 << 20, offset - skipped))
            if not chunk:
                raise http.client.IncompleteRead(b"", offset - skipped)
            skipped += len(chunk)
        return response, int(length) if length is not None else None
    return response, offset + int(length) if length is not None else None


def open_url(url: str) -> BinaryIO:
    """A readable binary stream for ``url`` (local path, ``file://``, ``gs://`` or ``http(s)://``;
    remote reads retried, see the module docstring)."""
    scheme = scheme_of(url)
    if scheme == "gs":
        return io.BufferedReader(ResumingReader(url, lambda offset: open_blob_at(url, offset)), 1 << 20)
    if scheme in ("http", "https"):
        return io.BufferedReader(ResumingReader(url, lambda offset: open_http_at(url, offset)), 1 << 20)
    if scheme == "file":
        url = urllib.parse.urlparse(url).path
    return open(url, "rb")


def read_bytes(url: str) -> bytes:
    """The whole content of ``url``."""
    with open_url(url) as stream:
        return stream.read()


def exists(url: str) -> bool:
    """Whether ``url`` names an existing file."""
    scheme = scheme_of(url)
    if scheme == "gs":
        return with_retries(f"checking {url}", lambda: blob_exists(url))
    if scheme in ("http", "https"):
        try:
            with open_url(url):
                return True
        except urllib.error.HTTPError as exn:
            if exn.code == 404:
                return False
            raise
    return os.path.isfile(url)


def local_copy(url: str) -> tuple[str, bool]:
    """A local path with ``url``'s content and whether it is a temporary copy the caller must delete."""
    if not scheme_of(url) or scheme_of(url) == "file":
        return urllib.parse.urlparse(url).path if scheme_of(url) else url, False
    handle, path = tempfile.mkstemp(suffix=os.path.splitext(url)[1])
    with os.fdopen(handle, "wb") as out, open_url(url) as stream:
        shutil.copyfileobj(stream, out)
    return path, True
