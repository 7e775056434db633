"""Local and ``gs://`` file access through Beam's ``FileSystems``: open, list, join, atomic write.

``gcs_client`` and ``split_gcs_url`` serve the callers that need what Beam does not expose: GCS
object metadata (generations, MD5s, conditional writes: fingerprints and dataset-root pointers) and
ranged downloads. Byte ranges of a ``gs://`` object (:func:`read_range`, :func:`read_ranges`,
:class:`GcsRangeReader`) are fetched with the client's ranged download, so a read of N bytes moves
about N bytes; Beam's reader would fetch a whole 16 MiB buffer for each.

Every path the ingest job touches goes through these helpers, so the same code runs on a laptop
and on Dataflow. Writes are atomic: a local file is written to a temporary sibling and renamed; a
GCS object only becomes visible when its upload completes, so it is written in place.

Storage emulator: when ``STORAGE_EMULATOR_HOST`` is set (the documented convention of the Google
Cloud client libraries for talking to an emulator), Beam is told there are no credentials, so its
GCS client connects anonymously at once instead of retrying the credential lookup for ~25 s.
Nothing changes when the variable is unset.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import threading
from collections.abc import Iterator
from typing import BinaryIO

from apache_beam.io.filesystems import FileSystems

_EMULATOR_LOCK = threading.Lock()
_emulator_configured = False

COALESCE_GAP = 64 * 1024
""":func:`read_ranges` joins two ranges into one request when at most this many unrequested bytes
lie between them. A GCS request costs tens of milliseconds before its first byte; 64 KiB takes
well under a millisecond to stream, so reading through such a gap is cheaper than a second request."""

MAX_COALESCED = 32 * 1024 * 1024
""":func:`read_ranges` stops growing a joined request at this span (a single larger range is still
one request), so the memory a call holds stays bounded whatever the layout of the ranges."""

READAHEAD_MIN = 64 * 1024
READAHEAD_MAX = 1024 * 1024
""":class:`GcsRangeReader` fetches at least ``READAHEAD_MIN`` bytes per request after a seek, and
doubles that, up to ``READAHEAD_MAX``, while reads continue where the last request ended: a demuxer's
32 KiB reads around a keyframe cost few requests and little over-read, and a long sequential read
costs one request per MiB."""


def use_emulator_credentials_if_configured() -> None:
    """Make Beam's GCS client anonymous when ``STORAGE_EMULATOR_HOST`` points at an emulator."""
    global _emulator_configured
    if _emulator_configured or not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    from apache_beam.internal.gcp import auth

    with _EMULATOR_LOCK, auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True
        _emulator_configured = True


def is_remote(path: str) -> bool:
    """True for object-store paths (``gs://``...), false for local paths."""
    return "://" in path


def join(base: str, *parts: str) -> str:
    """Join path components for local paths and ``gs://`` URLs alike."""
    use_emulator_credentials_if_configured()
    return FileSystems.join(base, *parts)


def exists(path: str) -> bool:
    use_emulator_credentials_if_configured()
    return FileSystems.exists(path)


def match(pattern: str) -> list[str]:
    """Sorted paths matching a file, a glob, or every file under a folder (a path ending in ``/``)."""
    use_emulator_credentials_if_configured()
    if pattern.endswith("/"):
        pattern += "**"
    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


def size(path: str) -> int:
    """Size in bytes of a local file or ``gs://`` object."""
    use_emulator_credentials_if_configured()
    results = FileSystems.match([path])[0].metadata_list
    if not results:
        raise FileNotFoundError(f"{path} does not exist")
    return results[0].size_in_bytes


def open_read(path: str) -> BinaryIO:
    """A seekable binary reader for a local path or ``gs://`` object."""
    use_emulator_credentials_if_configured()
    return FileSystems.open(path, compression_type="uncompressed")


def read_bytes(path: str) -> bytes:
    with open_read(path) as reader:
        return reader.read()


def read_range(path: str, offset: int, size: int) -> bytes:
    """Exactly ``size`` bytes of ``path`` starting at byte ``offset``.

    On ``gs://`` this is one ranged download of those bytes (no metadata request).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        EOFError: the file ends before ``offset + size``.
    """
    return read_ranges(path, [(offset, size)])[0]


def coalesce(
    ranges: list[tuple[int, int]], gap: int = COALESCE_GAP, max_span: int = MAX_COALESCED
) -> list[tuple[int, int, list[int]]]:
    """Plan the requests that cover ``ranges``.

    Args:
        ranges: ``(offset, size)`` pairs, in any order; they may overlap or repeat.
        gap: ranges at most this many bytes apart share a request.
        max_span: a request is not grown past this many bytes (one larger range is still one request).

    Returns:
        ``(start, end, indices)`` per request, sorted by ``start``: the request reads bytes
        ``[start, end)`` and serves the ranges ``ranges[i]`` for each ``i`` in ``indices``.

    Raises:
        ValueError: a negative offset or size.
    """
    if any(offset < 0 or size < 0 for offset, size in ranges):
        raise ValueError(f"byte ranges need non-negative offsets and sizes: {ranges}")
    plan: list[tuple[int, int, list[int]]] = []
    for index in sorted(range(len(ranges)), key=lambda i: ranges[i]):
        offset, size = ranges[index]
        if plan:
            start, end, indices = plan[-1]
            grown = max(end, offset + size)
            if offset <= end + gap and grown - start <= max_span:
                plan[-1] = (start, grown, [*indices, index])
                continue
        plan.append((offset, offset + size, [index]))
    return plan


def read_ranges(path: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each ``(offset, size)`` range of ``path``, in the order the ranges were given.

    Ranges are sorted and those that touch, overlap or lie within :data:`COALESCE_GAP` bytes of each
    other are read with one request (:func:`coalesce`); on ``gs://`` each request is one ranged
    download, retried with bounded backoff on transient errors; a local file is read with
    seek+read, and another Beam filesystem through ``FileSystems.open``. Bytes moved: the sum of the
    sizes plus at most ``COALESCE_GAP`` per join.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        EOFError: the file ends before the end of a range.
    """
    plan = coalesce(ranges)
    out: list[bytes] = [b""] * len(ranges)
    with contextlib.ExitStack() as stack:
        if path.startswith("gs://"):
            bucket, name = split_gcs_url(path)
            blob = gcs_client().bucket(bucket).blob(name)

            def fetch(start: int, end: int) -> bytes:
                return _download(blob, start, end, path)
        else:
            if is_remote(path):
                handle = stack.enter_context(open_read(path))
            else:
                handle = stack.enter_context(open(path, "rb"))

            def fetch(start: int, end: int) -> bytes:
                handle.seek(start)
                return handle.read(end - start)

        for start, end, indices in plan:
            data = fetch(start, end) if end > start else b""
            if len(data) != end - start:
                raise EOFError(f"{path} ends before byte {end}: got {len(data)} of bytes [{start}, {end})")
            view = memoryview(data)
            for index in indices:
                offset, size = ranges[index]
                out[index] = bytes(view[offset - start : offset - start + size])
    return out


def _download(blob, start: int, end: int, url: str) -> bytes:
    """Bytes ``[start, end)`` of ``blob`` in one ranged GET (retried on transient errors).

    Raises:
        FileNotFoundError: no such object (or generation).
        EOFError: ``start`` lies at or past the end of the object (HTTP 416); a range that only runs
            past the end comes back short, for the caller to judge.
    """
    from google.api_core import exceptions

    try:
        return blob.download_as_bytes(
            start=start, end=end - 1, raw_download=True, checksum=None, retry=_READ_RETRY
        )
    except exceptions.NotFound as exc:
        raise FileNotFoundError(f"no such object: {url}") from exc
    except exceptions.RequestRangeNotSatisfiable as exc:
        raise EOFError(f"{url} ends before byte {start + 1}") from exc


def _retry_policy():
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.5, maximum=8.0, multiplier=2.0).with_timeout(60.0)


_READ_RETRY = _retry_policy()
"""Transient GCS errors (429, 408, 5xx, dropped connections) are retried after 0.5 s, 1 s, 2 s, ...
(at most 8 s apart, with jitter), for at most 60 s; then the error is raised."""


class GcsRangeReader(io.RawIOBase):
    """A seekable binary reader over one ``gs://`` object that downloads only the ranges it is asked for.

    Opening costs one metadata request (size and generation; reads are pinned to that generation,
    so a replaced object fails loudly instead of mixing versions). A read past the buffered bytes
    fetches what it asks or the readahead (:data:`READAHEAD_MIN`..:data:`READAHEAD_MAX`), whichever is
    more, in one ranged download. ``bytes_downloaded`` and ``requests`` count what was transferred,
    readahead included.

    Raises:
        FileNotFoundError: (on construction) no such object.
    """

    def __init__(self, url: str, min_readahead: int = READAHEAD_MIN, max_readahead: int = READAHEAD_MAX):
        super().__init__()
        bucket_name, name = split_gcs_url(url)
        bucket = gcs_client().bucket(bucket_name)
        found = bucket.get_blob(name, retry=_READ_RETRY)
        if found is None:
            raise FileNotFoundError(f"no such object: {url}")
        self.url = url
        self.size: int = found.size
        self.bytes_downloaded = 0
        self.requests = 0
        self._blob = bucket.blob(name, generation=found.generation)
        self._min_readahead = self._readahead = min_readahead
        self._max_readahead = max_readahead
        self._buffer = b""
        self._buffer_start = 0
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        want = max(0, min(len(buffer), self.size - self._pos))
        done = 0
        while done < want:
            position = self._pos + done
            skip = position - self._buffer_start
            if 0 <= skip < len(self._buffer):
                chunk = self._buffer[skip : skip + want - done]
                buffer[done : done + len(chunk)] = chunk
                done += len(chunk)
                continue
            sequential = bool(self._buffer) and position == self._buffer_start + len(self._buffer)
            self._readahead = (
                min(2 * self._readahead, self._max_readahead) if sequential else self._min_readahead
            )
            self._buffer = self._fetch(position, min(self.size, position + max(want - done, self._readahead)))
            self._buffer_start = position
        self._pos += done
        return done

    def _fetch(self, start: int, end: int) -> bytes:
        data = _download(self._blob, start, end, self.url)
        self.requests += 1
        self.bytes_downloaded += len(data)
        if len(data) != end - start:
            raise EOFError(
                f"{self.url} gave {len(data)} bytes for [{start}, {end}) of a {self.size}-byte object"
            )
        return data


class HashingWriter:
    """Wraps a binary writer; counts bytes and computes the sha256 of everything written."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._sha = hashlib.sha256()
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self._sha.update(data)
        self.bytes_written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.bytes_written

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


@contextlib.contextmanager
def atomic_writer(path: str) -> Iterator[HashingWriter]:
    """Write ``path`` so readers see either nothing or the complete file; yields a :class:`HashingWriter`.

    On an exception the partial output is removed and ``path`` is left as it was.
    """
    use_emulator_credentials_if_configured()
    if is_remote(path):
        raw = FileSystems.create(path, mime_type="application/octet-stream")
        # An exception leaves the upload unfinished, and GCS never publishes an unfinished object.
        yield HashingWriter(raw)
        raw.close()
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "wb") as raw:
            yield HashingWriter(raw)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes) -> str:
    """Atomically write ``data`` to ``path``; return its sha256."""
    with atomic_writer(path) as writer:
        writer.write(data)
    return writer.hexdigest()


def delete_tree(path: str) -> None:
    """Delete a folder (or prefix) and everything under it; a missing one is fine."""
    use_emulator_credentials_if_configured()
    paths = match(path.rstrip("/") + "/")
    if paths:
        FileSystems.delete(paths)
    if not is_remote(path) and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


_CLIENT_LOCK = threading.Lock()
_client: tuple[tuple, object] | None = None


def gcs_client():
    """This process's google-cloud-storage client; anonymous against ``STORAGE_EMULATOR_HOST`` when set.

    One client (and so one HTTP connection pool) per process, shared by its threads (the client is
    thread-safe); a forked child or a changed ``STORAGE_EMULATOR_HOST``/``GOOGLE_CLOUD_PROJECT`` gets
    a new one.
    """
    global _client
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    key = (os.getpid(), emulator, os.environ.get("GOOGLE_CLOUD_PROJECT"))
    with _CLIENT_LOCK:
        if _client is None or _client[0] != key:
            from google.cloud import storage as gcs

            if emulator:
                from google.auth.credentials import AnonymousCredentials

                project = os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator")
                client = gcs.Client(project=project, credentials=AnonymousCredentials())
            else:
                client = gcs.Client()
            _client = (key, client)
        return _client[1]


def split_gcs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, prefix = url.removeprefix("gs://").partition("/")
    if not bucket:
        raise ValueError(f"not a gs:// URL with a bucket: {url!r}")
    return bucket, prefix.strip("/")
