"""Open dataset files by URL: local paths, ``gs://`` and ``http(s)://``.

webdataset 1.0.2 opens ``gs://`` through a ``gsutil`` pipe (which ignores
``STORAGE_EMULATOR_HOST`` and retries forever) and ``http(s)://`` through ``curl``.
:func:`register_webdataset_openers` replaces both with in-process readers:
google-cloud-storage for ``gs://`` and urllib for ``http(s)://``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from functools import cache
from typing import BinaryIO

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


def open_url(url: str) -> BinaryIO:
    """A readable binary stream for ``url`` (local path, ``file://``, ``gs://`` or ``http(s)://``)."""
    scheme = scheme_of(url)
    if scheme == "gs":
        bucket, name = _split_gs(url)
        return _gcs_client().bucket(bucket).blob(name).open("rb")
    if scheme in ("http", "https"):
        return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - the scheme is checked above
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
        return _gcs_client().bucket(bucket).blob(name).exists()
    if scheme in ("http", "https"):
        try:
            with open_url(url):
                return True
        except OSError:
            return False
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
