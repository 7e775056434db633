"""Byte ranges of a local file or ``gs://`` object, moving about as many bytes as were asked.

:func:`read_ranges` plans coalesced requests (:func:`coalesce`) for the ranges of one file;
:class:`GcsRangeReader` is a seekable reader over one ``gs://`` object with a growing readahead (the
decoder reads ``gs://`` videos through it). On ``gs://`` every request is one ranged download
(:func:`blobstore.gcs.download_range`), so a read of N bytes moves about N bytes; Beam's reader
would fetch a whole 16 MiB buffer for each.
"""

from __future__ import annotations

import contextlib
import io

from blobstore.gcs import download_range, gcs_client, read_retry, split_gcs_url
from blobstore.urls import local_path, scheme_of

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
    download, retried with bounded backoff on transient errors; a local path (or ``file://``) is
    read with seek+read. Bytes moved: the sum of the sizes plus at most ``COALESCE_GAP`` per join.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        EOFError: the file ends before the end of a range.
        ValueError: ``path`` is neither local nor ``gs://``.
    """
    plan = coalesce(ranges)
    out: list[bytes] = [b""] * len(ranges)
    with contextlib.ExitStack() as stack:
        if path.startswith("gs://"):
            bucket, name = split_gcs_url(path)
            blob = gcs_client().bucket(bucket).blob(name)

            def fetch(start: int, end: int) -> bytes:
                return download_range(blob, start, end, path)
        elif scheme_of(path) in ("", "file"):
            handle = stack.enter_context(open(local_path(path), "rb"))

            def fetch(start: int, end: int) -> bytes:
                handle.seek(start)
                return handle.read(end - start)
        else:
            raise ValueError(f"cannot read byte ranges of {path}: only local paths and gs:// are supported")

        for start, end, indices in plan:
            data = fetch(start, end) if end > start else b""
            if len(data) != end - start:
                raise EOFError(f"{path} ends before byte {end}: got {len(data)} of bytes [{start}, {end})")
            view = memoryview(data)
            for index in indices:
                offset, size = ranges[index]
                out[index] = bytes(view[offset - start : offset - start + size])
    return out


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
        found = bucket.get_blob(name, retry=read_retry())
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
        data = download_range(self._blob, start, end, self.url)
        self.requests += 1
        self.bytes_downloaded += len(data)
        if len(data) != end - start:
            raise EOFError(
                f"{self.url} gave {len(data)} bytes for [{start}, {end}) of a {self.size}-byte object"
            )
        return data
