"""Seekable, byte-counting file objects for videos on local disk or ``gs://``.

The decoder reads through these, so only the byte ranges it asks for are fetched (a keyframe seek in
an indexed MP4 reads the index and one GOP, not the file); ``bytes_read`` reports how much that was.
A ``gs://`` video is read with ranged downloads (:class:`blobstore.ranged_reads.GcsRangeReader`), and
``bytes_read`` is what those transferred, readahead included.
"""

from __future__ import annotations

import errno
import io
import os
import stat

from blobstore.ranged_reads import GcsRangeReader
from blobstore.urls import is_local, local_path

IO_ERROR_MODULES = ("google.api_core", "google.auth", "google.resumable_media", "requests", "urllib3")
"""Packages whose exceptions mean storage or network trouble (the GCS client and its transport)."""


def is_io_error(exc: BaseException) -> bool:
    """True for storage and network errors: ``OSError`` (not a missing file), a short read, or an
    exception of the GCS client's libraries. Anything else reading raises is a bug."""
    if isinstance(exc, FileNotFoundError):
        return False
    if isinstance(exc, OSError | EOFError):
        return True
    return any(type(exc).__module__.startswith(module) for module in IO_ERROR_MODULES)


class CountingReader(io.RawIOBase):
    """Wraps a seekable binary file object and counts the bytes it fetched (``bytes_read``).

    That is the wrapped reader's own ``bytes_downloaded`` when it keeps one (the ranged ``gs://``
    reader, whose readahead ``read`` never hands out), else the bytes handed out by ``read``.
    ``read_error`` keeps the first exception a read or seek raised (the decoder sees only "end of
    data" or a failure), so the sampler can report a storage error as such.
    """

    def __init__(self, raw, size: int):
        super().__init__()
        self._raw = raw
        self.size = size
        self._handed_out = 0
        self.read_error: Exception | None = None

    @property
    def bytes_read(self) -> int:
        downloaded = getattr(self._raw, "bytes_downloaded", None)
        return self._handed_out if downloaded is None else downloaded

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(size)
        except Exception as exc:
            if is_io_error(exc):
                self.read_error = self.read_error or exc
            raise
        self._handed_out += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._raw.seek(offset, whence)
        except Exception as exc:
            if is_io_error(exc):
                self.read_error = self.read_error or exc
            raise

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_a_file(path: str) -> str:
    """Why no regular file can be read at the local ``path``, as one line: nothing there, a symbolic
    link loop or a dangling link, or another kind of file (a directory, a FIFO, a device...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{path} is a symbolic link loop, not a video file"
        if os.path.islink(path):
            return f"{path} is a symbolic link to {os.readlink(path)}, which does not exist"
        return f"no such video file: {path}"
    kind = next((name for test, name in NOT_REGULAR if test(mode)), "a special file")
    return f"{path} is {kind}, not a regular file"


def open_video(uri: str) -> CountingReader:
    """Open ``uri`` for reading.

    Raises:
        FileNotFoundError: nothing exists at ``uri``, or no regular file (:func:`not_a_file` says what),
            or ``uri`` is neither local nor ``gs://`` (no other store is read).
    """
    if is_local(uri):
        path = local_path(uri)
        if not os.path.isfile(path):
            raise FileNotFoundError(not_a_file(path))
        return CountingReader(open(path, "rb", buffering=0), os.path.getsize(path))

    if uri.startswith("gs://"):
        raw = GcsRangeReader(uri)
        return CountingReader(raw, raw.size)
    raise FileNotFoundError(f"cannot open {uri}: videos are read from local paths, file:// or gs:// only")
