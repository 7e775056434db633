"""The trainer's file access by URL: local paths, ``gs://`` and ``http(s)://``.

The readers themselves live in the blob store (:mod:`blobstore.streams`, :mod:`blobstore.urls`,
:mod:`blobstore.retries`; remote reads retried and resumed where they broke); the trainer imports
them from here, with what only the trainer needs: webdataset 1.0.2 opens ``gs://`` through a
``gsutil`` pipe (which ignores ``STORAGE_EMULATOR_HOST`` and retries forever) and ``http(s)://``
through ``curl``; :func:`register_webdataset_openers` replaces both with the blob store's
in-process readers.
"""

from __future__ import annotations

import importlib
from typing import BinaryIO

from blobstore.retries import with_retries
from blobstore.streams import ResumingReader, exists, local_copy, open_url, read_bytes
from blobstore.urls import REMOTE_SCHEMES, join_url, parent_url, scheme_of

__all__ = [
    "REMOTE_SCHEMES",
    "ResumingReader",
    "exists",
    "join_url",
    "local_copy",
    "open_url",
    "parent_url",
    "read_bytes",
    "register_webdataset_openers",
    "scheme_of",
    "with_retries",
]


def _webdataset_opener(url: str, mode: str = "rb", bufsize: int = 8192, **_: object) -> BinaryIO:
    if mode != "rb":
        raise ValueError(f"{url}: only reading is supported, not mode {mode!r}")
    return open_url(url)


def register_webdataset_openers() -> None:
    """Make webdataset's ``gopen`` read ``gs://`` and ``http(s)://`` in-process (idempotent)."""
    gopen = importlib.import_module("webdataset.gopen")  # the package re-exports a function of that name
    for scheme in REMOTE_SCHEMES:
        gopen.gopen_schemes[scheme] = _webdataset_opener
