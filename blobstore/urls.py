"""URLs of the blob store: the scheme, a folder joined with a relative path, the parent folder."""

from __future__ import annotations

import os
import urllib.parse

REMOTE_SCHEMES = ("gs", "http", "https")
"""Schemes read over the network (:mod:`blobstore.streams`); everything else is a local file."""


def scheme_of(url: str) -> str:
    """The URL scheme (``""`` for local paths, including Windows-free ``file://``-less paths)."""
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme if len(parsed.scheme) > 1 else ""


def is_local(url: str) -> bool:
    """Whether ``url`` names a file on this machine: a path, or a ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    """The path of a local ``url`` (:func:`is_local`): ``file://`` removed."""
    return url.removeprefix("file://")


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
