"""The google-cloud-storage client: the only module of the project that imports ``google.cloud.storage``.

:func:`gcs_client` is this process's client, anonymous when ``STORAGE_EMULATOR_HOST`` points at an
emulator (:func:`emulator_host`). Everything Beam's ``FileSystems`` does not expose goes through it:
object metadata (generations, MD5s, conditional writes: fingerprints and dataset-root pointers),
listings, ranged downloads (:func:`download_range`, retried with :func:`read_retry`) and the trainer's
``gs://`` streams (:func:`open_blob_at`). Google's libraries load on first use, not on import.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import BinaryIO

from blobstore.retries import BACKOFF_S, MAX_BACKOFF_S

EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
"""The Google Cloud client libraries' convention: when set, talk to the emulator at that address."""
CLIENT_RETRY_TIMEOUT_S = 60.0
"""The client-side retry policy (:func:`read_retry`) gives up after this many seconds."""

_CLIENT_LOCK = threading.Lock()
_client: tuple[tuple, object] | None = None


def emulator_host() -> str | None:
    """The storage emulator's address (``STORAGE_EMULATOR_HOST``), or None against real GCS."""
    return os.environ.get(EMULATOR_VARIABLE) or None


def gcs_client():
    """This process's google-cloud-storage client; anonymous against ``STORAGE_EMULATOR_HOST`` when set.

    One client (and so one HTTP connection pool) per process, shared by its threads (the client is
    thread-safe); a forked child or a changed ``STORAGE_EMULATOR_HOST``/``GOOGLE_CLOUD_PROJECT`` gets
    a new one.
    """
    global _client
    emulator = emulator_host()
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


@cache
def read_retry():
    """The client-side retry policy for reads: transient GCS errors (429, 408, 5xx, dropped
    connections) are retried after :data:`~blobstore.retries.BACKOFF_S`, doubling up to
    :data:`~blobstore.retries.MAX_BACKOFF_S` (with jitter), for at most :data:`CLIENT_RETRY_TIMEOUT_S`;
    then the error is raised."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=BACKOFF_S, maximum=MAX_BACKOFF_S, multiplier=2.0).with_timeout(
        CLIENT_RETRY_TIMEOUT_S
    )


def download_range(blob, start: int, end: int, url: str) -> bytes:
    """Bytes ``[start, end)`` of ``blob`` in one ranged GET (retried on transient errors).

    Raises:
        FileNotFoundError: no such object (or generation).
        EOFError: ``start`` lies at or past the end of the object (HTTP 416); a range that only runs
            past the end comes back short, for the caller to judge.
    """
    from google.api_core import exceptions

    try:
        return blob.download_as_bytes(
            start=start, end=end - 1, raw_download=True, checksum=None, retry=read_retry()
        )
    except exceptions.NotFound as exc:
        raise FileNotFoundError(f"no such object: {url}") from exc
    except exceptions.RequestRangeNotSatisfiable as exc:
        raise EOFError(f"{url} ends before byte {start + 1}") from exc


def open_blob_at(url: str, offset: int) -> tuple[BinaryIO, int | None]:
    """A stream of the ``gs://`` object ``url`` from byte ``offset``, and the object's size.

    Raises:
        google.api_core.exceptions.NotFound: no such object.
    """
    bucket, name = split_gcs_url(url)
    blob = gcs_client().bucket(bucket).get_blob(name)
    if blob is None:
        from google.api_core.exceptions import NotFound

        raise NotFound(f"{url} does not exist")
    reader = blob.open("rb")
    if offset:
        reader.seek(offset)
    return reader, blob.size


def blob_exists(url: str) -> bool:
    """Whether the ``gs://`` object ``url`` exists (one metadata request; not retried here)."""
    bucket, name = split_gcs_url(url)
    return gcs_client().bucket(bucket).blob(name).exists()
