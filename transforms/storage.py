"""Local and ``gs://`` file access through Beam's ``FileSystems``: open, list, join, atomic write.

``gcs_client`` and ``split_gcs_url`` serve the few callers that need GCS object metadata Beam does
not expose (generations, MD5s, conditional writes): fingerprints and dataset-root pointers.

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
import os
import shutil
import threading
from collections.abc import Iterator
from typing import BinaryIO

from apache_beam.io.filesystems import FileSystems

_EMULATOR_LOCK = threading.Lock()
_emulator_configured = False


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


def open_read(path: str) -> BinaryIO:
    """A seekable binary reader for a local path or ``gs://`` object."""
    use_emulator_credentials_if_configured()
    return FileSystems.open(path, compression_type="uncompressed")


def read_bytes(path: str) -> bytes:
    with open_read(path) as reader:
        return reader.read()


def read_range(path: str, offset: int, size: int) -> bytes:
    """``size`` bytes of ``path`` starting at byte ``offset``."""
    with open_read(path) as reader:
        reader.seek(offset)
        return reader.read(size)


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


def gcs_client():
    """A google-cloud-storage client; anonymous against ``STORAGE_EMULATOR_HOST`` when that is set."""
    from google.cloud import storage as gcs

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator")
        return gcs.Client(project=project, credentials=AnonymousCredentials())
    return gcs.Client()


def split_gcs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, prefix = url.removeprefix("gs://").partition("/")
    if not bucket:
        raise ValueError(f"not a gs:// URL with a bucket: {url!r}")
    return bucket, prefix.strip("/")
