"""Dataset roots: immutable versions and the ``LATEST`` pointer; ids, locations and validation.

Layout of a dataset root (a local folder or ``gs://bucket/prefix``)::

    ROOT/versions/<version_id>/   one complete dataset in the docs/FORMAT.md layout, never modified once published
    ROOT/LATEST                   one line: the version id trainers should read
    ROOT/RUN.lock                 JSON lease of the ingest run currently writing this root (absent when idle)

The pointer files change only by compare-and-swap (:mod:`pipeline.versions.folders`); publishing is
:mod:`pipeline.versions.publishing`, the run lease :mod:`pipeline.versions.lease`, pruning
:mod:`pipeline.versions.pruning`.
"""

from __future__ import annotations

import posixpath
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from dataformat.format import LATEST_FILE, MANIFEST_FILE, VERSIONS_DIR
from dataformat.manifest import (
    ManifestError,
    listed_files,
    named_parts,
    read_folder_manifest,
    sha256_problem,
    size_problem,
)
from pipeline.versions.errors import InvalidVersion
from pipeline.versions.folders import folder_at

LATEST = LATEST_FILE
VERSIONS = VERSIONS_DIR
MANIFEST = MANIFEST_FILE


def new_version_id() -> str:
    """A unique id that sorts by creation time: UTC timestamp to the microsecond + random suffix."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{secrets.token_hex(4)}"


_VERSION_ID = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}$")


def is_version_id(name: str) -> bool:
    """True for a name :func:`new_version_id` makes: only such folders are ever pruned."""
    return bool(_VERSION_ID.match(name))


def _check_version_id(version_id: str) -> str:
    if not version_id or "/" in version_id or version_id.startswith(".") or version_id != version_id.strip():
        raise ValueError(f"bad version id {version_id!r}")
    return version_id


def version_url(root: str | Path, version_id: str) -> str:
    """Where version ``version_id`` of ``root`` lives (a local path or a gs:// URL)."""
    return folder_at(root).child(f"{VERSIONS}/{_check_version_id(version_id)}").url


def list_versions(root: str | Path) -> list[str]:
    """Ids of every version folder under ``root``, oldest first (complete or not)."""
    return folder_at(root).child(VERSIONS).subfolders()


def latest_version_id(root: str | Path) -> str | None:
    """The id ``ROOT/LATEST`` names, or None when nothing was ever published."""
    text, _ = folder_at(root).read_pointer(LATEST)
    return text.strip() if text else None


def resolve_latest(root: str | Path) -> str | None:
    """The published version's location (read ``LATEST`` once, at start), or None if none was published."""
    version_id = latest_version_id(root)
    return None if version_id is None else version_url(root, version_id)


def validate_manifest(version: str | Path, *, verify_sha256: bool = True) -> dict:
    """Check a dataset version folder against its ``manifest.json``; return the parsed manifest.

    Checks: the manifest exists and is sound (:func:`dataformat.manifest.read_folder_manifest`: format
    version, shape, counts), the tables and failure files it names exist, and every file it records
    with a size (shards, ``table_files``, ``failure_files``) exists with that byte size and (when
    ``verify_sha256``) sha256. Sizes come from one listing per folder; hashing reads every such
    file. Deeper checks (tar sample counts, table row counts) are ``videorec inspect``'s.

    Raises ``InvalidVersion`` listing every problem found.
    """
    folder = folder_at(version)
    try:
        manifest = read_folder_manifest(folder.read_bytes, folder.url)
    except ManifestError as err:
        raise InvalidVersion(folder.url, [str(err)]) from None
    if manifest is None:
        raise InvalidVersion(folder.url, [f"{MANIFEST} is missing"])
    files = _ManifestFiles(folder)
    named = named_parts(manifest)
    problems = [f"{path} is missing" for path in named if files.size(path) is None]
    for listed in listed_files(manifest):
        size = files.size(listed.path)
        if size is None:
            if listed.path not in named:
                problems.append(f"{listed.what} {listed.path} is missing")
            continue
        problem = size_problem(listed.path, size, listed.entry) or (
            verify_sha256 and sha256_problem(listed.path, files.sha256(listed.path), listed.entry)
        )
        if problem:
            problems.append(f"{listed.what} {problem}")
    if problems:
        raise InvalidVersion(folder.url, problems)
    return manifest


class _ManifestFiles:
    """Sizes and hashes of the files a manifest names: in its folder, or ``../<version_id>/...`` in a
    sibling version (shards reused from an earlier version). One listing per folder."""

    def __init__(self, folder):
        self.folder = folder
        self._sizes: dict[str, dict[str, int]] = {}

    def _locate(self, path: str):
        path = posixpath.normpath(path)
        if path.startswith("../"):
            _, sibling, rest = path.split("/", 2)
            return sibling, self.folder.sibling(sibling), rest
        if path.startswith("/") or path == "..":
            raise ValueError(path)
        return "", self.folder, path

    def size(self, path: str) -> int | None:
        try:
            key, folder, rel = self._locate(path)
        except ValueError:
            return None
        if key not in self._sizes:
            self._sizes[key] = folder.sizes()
        return self._sizes[key].get(rel)

    def sha256(self, path: str) -> str:
        _, folder, rel = self._locate(path)
        return folder.sha256(rel)
