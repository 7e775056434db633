"""Open dataset files by URL: local paths, ``gs://`` and ``http(s)://``.

webdataset 1.0.2 opens ``gs://`` through a ``gsutil`` pipe (which ignores
``STORAGE_EMULATOR_HOST`` and retries forever) and ``http(s)://`` through ``curl``.
:func:`register_webdataset_openers` replaces both with in-process readers:
google-cloud-storage for ``gs://`` and urllib for ``http(s)://``.

Remote reads are retried with exponential backoff (:data:`RETRIES` attempts after the
first, waits from :data:`BACKOFF_S` doubling to :data:`MAX_BACKOFF_S`): a failed open is
repeated, and a stream that breaks mid-read is reopened at the byte it reached (HTTP
``Range``, GCS ranged reads), so a shard read survives transient errors without losing
or repeating bytes. Errors that retrying cannot fix (404, 403, ...) are raised at once.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import io
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import cache
from typing import BinaryIO

log = logging.getLogger(__name__)

RETRIES = 5
"""Attempts after the first, for each remote open or read."""
BACKOFF_S = 0.5
"""First wait between attempts; it doubles up to :data:`MAX_BACKOFF_S`."""
MAX_BACKOFF_S = 8.0
RETRY_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

REMOTE_SCHEMES = ("gs", "http", "https")


def scheme_of(url: str) -> str:
    """The URL scheme (``""`` for local paths, including Windows-free ``file://``-less paths)."""
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme if len(parsed.scheme) > 1 else ""


def join_url(base: str, relative: str) -> str:
    """``base`` folder URL joined with a manifest-relative path."""
    if scheme_of(base):
        return base.rstrip("/") + "/" + relative.lstrip("/")
    return os.path.join(base, relative)


def parent_url(url: str) -> str:
    """The folder that holds ``url``."""
    if scheme_of(url):
        return url.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(url))


@cache
def _gcs_client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator")
        return storage.Client(project=project, credentials=AnonymousCredentials())
    return storage.Client()


def _split_gs(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


def is_transient(exn: BaseException) -> bool:
    """Whether retrying may fix ``exn`` (timeouts, dropped connections, 5xx / 429, GCS server errors)."""
    if isinstance(exn, urllib.error.HTTPError):
        return exn.code in RETRY_HTTP_STATUS
    if isinstance(exn, (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)):
        return True
    try:
        from google.api_core import exceptions as gcs_errors
        from google.auth import exceptions as auth_errors
        from requests import exceptions as requests_errors
    except ImportError:
        return False
    transient = (
        gcs_errors.TooManyRequests,
        gcs_errors.InternalServerError,
        gcs_errors.BadGateway,
        gcs_errors.ServiceUnavailable,
        gcs_errors.GatewayTimeout,
        auth_errors.TransportError,
        requests_errors.ConnectionError,
        requests_errors.Timeout,
        requests_errors.ChunkedEncodingError,
    )
    return isinstance(exn, transient)


def with_retries(what: str, action: Callable[[], object]):
    """``action()``, repeated with backoff while it fails transiently (see :func:`is_transient`)."""
    wait = BACKOFF_S
    for attempt in range(RETRIES + 1):
        try:
            return action()
        except Exception as exn:
            if attempt == RETRIES or not is_transient(exn):
                raise
            log.warning("%s failed (%r); retry %d/%d in %.1f s", what, exn, attempt + 1, RETRIES, wait)
            time.sleep(wait)
            wait = min(2 * wait, MAX_BACKOFF_S)
    raise AssertionError("unreachable")


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


def _open_http_at(url: str, offset: int) -> tuple[BinaryIO, int | None]:
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


def _open_gcs_at(url: str, offset: int) -> tuple[BinaryIO, int | None]:
    bucket, name = _split_gs(url)
    blob = _gcs_client().bucket(bucket).get_blob(name)
    if blob is None:
        from google.api_core.exceptions import NotFound

        raise NotFound(f"{url} does not exist")
    reader = blob.open("rb")
    if offset:
        reader.seek(offset)
    return reader, blob.size


def open_url(url: str) -> BinaryIO:
    """A readable binary stream for ``url`` (local path, ``file://``, ``gs://`` or ``http(s)://``;
    remote reads retried, see the module docstring)."""
    scheme = scheme_of(url)
    if scheme == "gs":
        return io.BufferedReader(ResumingReader(url, lambda offset: _open_gcs_at(url, offset)), 1 << 20)
    if scheme in ("http", "https"):
        return io.BufferedReader(ResumingReader(url, lambda offset: _open_http_at(url, offset)), 1 << 20)
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
        bucket, name = _split_gs(url)
        return with_retries(f"checking {url}", _gcs_client().bucket(bucket).blob(name).exists)
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


def _webdataset_opener(url: str, mode: str = "rb", bufsize: int = 8192, **_: object) -> BinaryIO:
    if mode != "rb":
        raise ValueError(f"{url}: only reading is supported, not mode {mode!r}")
    return open_url(url)


def register_webdataset_openers() -> None:
    """Make webdataset's ``gopen`` read ``gs://`` and ``http(s)://`` in-process (idempotent)."""
    gopen = importlib.import_module("webdataset.gopen")  # the package re-exports a function of that name
    for scheme in REMOTE_SCHEMES:
        gopen.gopen_schemes[scheme] = _webdataset_opener
