"""Pruning a dataset root: delete old and abandoned versions, never one that is kept, leased or reused."""

from __future__ import annotations

import time
from pathlib import Path

from dataformat.manifest import ManifestError, earlier_versions, read_folder_manifest
from pipeline.versions.folders import folder_at
from pipeline.versions.lease import read_lease
from pipeline.versions.roots import MANIFEST, VERSIONS, is_version_id, latest_version_id, list_versions


def prune(root: str | Path, *, keep: int) -> list[str]:
    """Delete old and abandoned versions; return the ids deleted.

    Kept: ``LATEST``, the ``keep - 1`` newest complete versions older than it, every version a live
    lease names (base or being written), and every version whose files a kept manifest points into
    (``../<id>/...`` paths, e.g. reused item shards). Everything else is deleted, including versions
    newer than ``LATEST`` left by runs that died or lost a race. A folder under ``versions/`` whose
    name is not one the project gives a version (``is_version_id``) is never deleted. Each deletion removes
    ``manifest.json`` first, so an interrupted prune leaves an incomplete version, never a corrupt one.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    folder = folder_at(root)
    versions = list_versions(root)
    latest = latest_version_id(root)
    protected = set()
    lease = read_lease(root)
    if lease is not None and lease.expires_at > time.time():
        protected |= {lease.version_id, lease.base_version} - {None}
    if latest is not None:
        older_complete = [v for v in versions if v < latest and _is_complete(folder, v)]
        protected |= {latest, *older_complete[-(keep - 1) :]} if keep > 1 else {latest}
    protected |= _referenced_versions(folder, protected & set(versions))
    doomed = [v for v in versions if v not in protected and is_version_id(v)]
    for version_id in doomed:
        version = folder.child(f"{VERSIONS}/{version_id}")
        version.delete_file(MANIFEST)
        version.delete_tree()
    return doomed


def _version_manifest(folder, version_id: str) -> dict | None:
    """The (unchecked) manifest of version ``version_id``, None while it has none."""
    version = folder.child(f"{VERSIONS}/{version_id}")
    return read_folder_manifest(version.read_bytes, version.url, checked=False)


def _is_complete(folder, version_id: str) -> bool:
    """Whether the version has its manifest (written last): garbled or not, it was finished."""
    try:
        return _version_manifest(folder, version_id) is not None
    except ManifestError:
        return True


def _referenced_versions(folder, kept: set[str]) -> set[str]:
    """Versions that the manifests of ``kept`` versions point into with ``../<id>/`` paths."""
    referenced = set()
    for version_id in kept:
        manifest = _version_manifest(folder, version_id)
        if manifest is not None:
            referenced |= earlier_versions(manifest)
    return referenced
