"""Seekable, byte-counting file objects for videos on local disk or on any Beam filesystem (``gs://``).

The decoder reads through these, so only the byte ranges it asks for are fetched (a keyframe seek in
an indexed MP4 reads the index and one GOP, not the file); ``bytes_read`` reports how much that was.
"""

from __future__ import annotations

import io
import os


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


class CountingReader(io.RawIOBase):
    """Wraps a seekable binary file object and counts the bytes handed out by ``read``."""

    def __init__(self, raw, size: int):
        super().__init__()
        self._raw = raw
        self.size = size
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def open_video(uri: str) -> CountingReader:
    """Open ``uri`` for reading.

    Raises:
        FileNotFoundError: nothing exists at ``uri``.
    """
    if is_local(uri):
        path = local_path(uri)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such video file: {path}")
        return CountingReader(open(path, "rb", buffering=0), os.path.getsize(path))

    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from transforms.storage import use_emulator_credentials_if_configured

    use_emulator_credentials_if_configured()
    matches = FileSystems.match([uri])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no such video object: {uri}")
    raw = FileSystems.open(
        uri, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    )
    return CountingReader(raw, matches[0].size_in_bytes)
