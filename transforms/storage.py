"""Local and ``gs://`` file access through Beam's ``FileSystems``: paths, listing, reads, atomic writes.

Every path the ingest job touches goes through these helpers, so the same code runs on a laptop
and on Dataflow. Writes are atomic: a local file is written to a temporary sibling and renamed; a
GCS object only becomes visible when its upload is finalised, so it is written in place, and a write
that fails cancels its upload (:func:`_abort_upload`) rather than finalising a truncated object. Byte ranges
are read by :mod:`blobstore.ranged_reads`; what Beam does not expose (GCS object metadata,
generations, conditional writes, ranged downloads) goes through the blob store's client
(:mod:`blobstore.gcs`).

Storage emulator: when ``STORAGE_EMULATOR_HOST`` is set (:func:`blobstore.gcs.emulator_host`), Beam
is told there are no credentials, so its GCS client connects anonymously at once instead of
retrying the credential lookup for ~25 s. Nothing changes when the variable is unset.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from blobstore.gcs import emulator_host

_EMULATOR_LOCK = threading.Lock()
_emulator_configured = False


def use_emulator_credentials_if_configured() -> None:
    """Make Beam's GCS client anonymous when ``STORAGE_EMULATOR_HOST`` points at an emulator."""
    global _emulator_configured
    if _emulator_configured or not emulator_host():
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


def path_exists(path: str) -> bool:
    """Whether a file or folder is at a local path or ``gs://`` URL (Beam's ``FileSystems``)."""
    use_emulator_credentials_if_configured()
    return FileSystems.exists(path)


def match(pattern: str) -> list[str]:
    """Sorted paths matching a file, a glob, or every file under a folder (a path ending in ``/``)."""
    use_emulator_credentials_if_configured()
    if pattern.endswith("/"):
        pattern += "**"
    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


def file_sizes(folder: str) -> dict[str, int]:
    """``relative path -> bytes`` of every file under ``folder`` (local or ``gs://``); empty if none."""
    use_emulator_credentials_if_configured()
    base = folder.rstrip("/") + "/"
    found = {}
    for metadata in FileSystems.match([base + "**"])[0].metadata_list:
        path = metadata.path
        relative = path[len(base) :] if path.startswith(base) else os.path.relpath(path, folder)
        found[relative.replace(os.sep, "/")] = metadata.size_in_bytes
    return found


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


def read_whole_file(path: str) -> bytes:
    """The whole content of a local file or ``gs://`` object (Beam's ``FileSystems``)."""
    with open_read(path) as reader:
        return reader.read()


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


TEMPORARY_INFIX = ".tmp-"
"""A local atomic write goes to ``<path>.tmp-<pid>-<thread>`` first (:func:`atomic_writer`)."""
_TEMPORARY = re.compile(r"^(?P<target>.+)" + re.escape(TEMPORARY_INFIX) + r"\d+-\d+$")


def temporary_target(path: str) -> str | None:
    """The path an :func:`atomic_writer` temporary file ``path`` was writing, or None if it is not one."""
    found = _TEMPORARY.match(path)
    return found["target"] if found else None


@contextlib.contextmanager
def atomic_writer(path: str) -> Iterator[HashingWriter]:
    """Write ``path`` so readers see either nothing or the complete file; yields a :class:`HashingWriter`.

    On an exception the partial output is removed and ``path`` is left as it was.
    """
    use_emulator_credentials_if_configured()
    if is_remote(path):
        raw = FileSystems.create(
            path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
        )
        try:
            yield HashingWriter(raw)
        except BaseException:
            _abort_upload(raw)
            raise
        raw.close()
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}{TEMPORARY_INFIX}{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "wb") as raw:
            yield HashingWriter(raw)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _abort_upload(raw: BinaryIO) -> None:
    """Cancel an unfinished object upload so that nothing appears at its path.

    GCS publishes an object only when its resumable upload is finalised, but the client's writer
    finalises on ``close()``, which also runs when the writer is garbage-collected: a writer merely
    dropped after an exception would publish the bytes written so far. ``terminate()`` deletes the
    upload session and closes the writer's buffer; if the delete itself fails (the network is what
    failed), the buffer is still closed, so the writer can never finalise and the unfinished session
    expires on the server (a killed process leaves such a session too).
    """
    terminate = getattr(raw, "terminate", None)
    if terminate is None:  # not a resumable-upload writer: the best left is not to finalise it
        return
    try:
        terminate()
    except Exception:  # noqa: BLE001 - the original exception is the one to report
        buffer = getattr(raw, "_buffer", None)
        if buffer is not None and not buffer.closed:
            buffer.close()


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
