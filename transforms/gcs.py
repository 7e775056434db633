"""The google-cloud-storage client, for what Beam's ``FileSystems`` does not expose.

GCS object metadata (generations, MD5s, conditional writes: fingerprints and dataset-root pointers)
and ranged downloads (:mod:`transforms.ranged_reads`) go through :func:`gcs_client`; the client is
anonymous when ``STORAGE_EMULATOR_HOST`` points at an emulator. :func:`download_range` is the one
ranged GET, retried on transient errors (:data:`READ_RETRY`).
"""

from __future__ import annotations

import os
import threading

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


def _retry_policy():
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.5, maximum=8.0, multiplier=2.0).with_timeout(60.0)


READ_RETRY = _retry_policy()
"""Transient GCS errors (429, 408, 5xx, dropped connections) are retried after 0.5 s, 1 s, 2 s, ...
(at most 8 s apart, with jitter), for at most 60 s; then the error is raised."""


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
            start=start, end=end - 1, raw_download=True, checksum=None, retry=READ_RETRY
        )
    except exceptions.NotFound as exc:
        raise FileNotFoundError(f"no such object: {url}") from exc
    except exceptions.RequestRangeNotSatisfiable as exc:
        raise EOFError(f"{url} ends before byte {start + 1}") from exc
