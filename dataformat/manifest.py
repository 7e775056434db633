"""The manifest, read in one place: locate, parse, check, verify the files it lists, frame settings.

Every reader of ``manifest.json`` goes through this module: the ingest (``transforms.manifest``,
``transforms.reuse``), ``videorec inspect``, the dataset roots (``pipeline.versions``) and the
trainer. How the bytes are fetched is the caller's (``read``: Beam's file systems in the ingest,
a version folder in a dataset root, :mod:`blobstore` by default); what they mean is decided here.
``tests/test_format.py`` fails if another module opens the manifest or parses its fields itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from blobstore import streams, urls
from dataformat.format import (
    EARLIER_VERSION_PREFIX,
    ITEM_FAILURES_TABLE,
    MANIFEST_FILE,
    READABLE_FORMAT_VERSIONS,
    SHARD_KINDS,
    TABLES,
    TRAIN_FRAMES_EMBEDDED,
    TRAIN_FRAMES_LAYOUTS,
    is_manifest_path,
)

COUNT_CHECKS = (
    ("rows", "rows_read", "rows_used", "rows_dropped"),
    ("items", "items_seen", "items_encoded", "items_failed"),
    ("users", "users_seen", "users_kept", "users_dropped"),
)
"""``(what, total, kept, dropped-by-reason)`` of the manifest's ``counts``: total = kept + dropped."""


class ManifestError(ValueError):
    """A manifest that is missing, not JSON, or unsound; the message is one line naming every problem."""


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def manifest_location(dataset: str) -> str:
    """The manifest of ``dataset``: a dataset folder (local path or URL), or the manifest itself."""
    return dataset if is_manifest_path(dataset) else urls.join_url(dataset, MANIFEST_FILE)


def read_manifest(
    dataset: str, read: Callable[[str], bytes | None] = streams.read_bytes, *, checked: bool = True
) -> dict:
    """The manifest of ``dataset`` (a folder or the manifest itself), fetched with ``read`` (a location
    -> its bytes, ``None`` when absent); :func:`parse_manifest` when ``checked``, else only decoded
    (``videorec inspect`` reports the problems of an unsound one itself).

    Raises:
        ManifestError: it is absent, not JSON, or (``checked``) unsound.
    """
    where = manifest_location(dataset)
    data = read(where)
    if data is None:
        raise ManifestError(f"{where} is missing")
    return parse_manifest(data, where) if checked else decode_manifest(data, where)


def read_folder_manifest(
    read_file: Callable[[str], bytes | None], where: str, *, checked: bool = True
) -> dict | None:
    """The manifest of a dataset folder whose files ``read_file`` fetches (a path relative to the
    folder -> its bytes, ``None`` when absent), or ``None`` when it has none (an unfinished version).

    Raises:
        ManifestError: it is not JSON or (``checked``) unsound.
    """
    data = read_file(MANIFEST_FILE)
    if data is None:
        return None
    where = urls.join_url(where, MANIFEST_FILE)
    return parse_manifest(data, where) if checked else decode_manifest(data, where)


def decode_manifest(data: bytes, where: str) -> dict:
    """The JSON object in ``data`` (read from ``where``), unchecked; ``ManifestError`` if it is not one."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{where}: not a JSON manifest ({err})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: the manifest is not a JSON object")
    return manifest


def parse_manifest(data: bytes, where: str) -> dict:
    """The manifest in ``data`` (read from ``where``); ``ManifestError`` naming every problem if it is unsound."""
    manifest = decode_manifest(data, where)
    problems = manifest_problems(manifest)
    if problems:
        raise ManifestError(f"{where}: " + "; ".join(problems))
    return manifest


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def manifest_problems(manifest: Mapping) -> list[str]:
    """Everything wrong with the shape and counts of a manifest document (empty: it is sound).

    Files are not opened here: :func:`listed_files` and :func:`file_problems` verify sizes and hashes.
    """
    problems = _unreadable(manifest)
    if problems:
        return problems
    problems = _part_problems(manifest)
    counts = manifest["counts"]
    for name, total, kept, dropped in COUNT_CHECKS:
        try:
            accounted = counts[kept] + sum(counts[dropped].values())
        except (KeyError, AttributeError, TypeError):
            problems.append(f"counts for {name} are incomplete")
            continue
        if counts[total] != accounted:
            problems.append(f"{name}: {counts[total]} seen != {accounted} accounted for")
    return problems


def manifest_shape_problems(manifest) -> list[str]:
    """What makes ``manifest`` not a manifest this code can read at all (its counts aside): not an
    object, a format version not in :data:`READABLE_FORMAT_VERSIONS`, a version-3 manifest without a
    known ``train_frames``, a field missing, or ``tables`` / ``shards`` / ``counts`` /
    ``failures`` not of their type (``tables: []``, ``shards: null``...)."""
    return _unreadable(manifest) or _part_problems(manifest)


def format_version_of(manifest: Mapping) -> int:
    """The format version a readable manifest was written in."""
    return int(manifest["format_version"])


def train_frames_of(manifest: Mapping) -> str:
    """The train-sample layout of a readable manifest: its ``train_frames`` (version 3), or
    :data:`TRAIN_FRAMES_EMBEDDED` for version 2, which had no other layout."""
    if manifest.get("format_version") == 2:
        return TRAIN_FRAMES_EMBEDDED
    return manifest["train_frames"]


def _unreadable(manifest) -> list[str]:
    if not isinstance(manifest, Mapping):
        return ["the manifest is not a JSON object"]
    version = manifest.get("format_version")
    if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
        readable = " and ".join(map(str, READABLE_FORMAT_VERSIONS))
        return [f"format_version is {version!r}, this code reads {readable}"]
    if version >= 3 and manifest.get("train_frames") not in TRAIN_FRAMES_LAYOUTS:
        return [
            f"train_frames is {manifest.get('train_frames')!r}, not one of {', '.join(TRAIN_FRAMES_LAYOUTS)}"
        ]
    problems = [
        f"{field} is missing"
        for field in ("dataset_version", "num_items", "num_users", "tables", "shards", "counts", "failures")
        if field not in manifest
    ]
    if problems:
        return problems
    for field in ("num_items", "num_users"):
        value = manifest[field]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{field} is not a count ({value!r})")
    for field, what in (
        ("tables", "table names to part paths"),
        ("shards", "shard kinds to lists"),
        ("counts", ""),
    ):
        if not isinstance(manifest[field], Mapping):
            kind = type(manifest[field]).__name__
            problems.append(f"{field} is not an object{f' mapping {what}' if what else ''} ({kind})")
    return problems


def _part_problems(manifest: Mapping) -> list[str]:
    problems = []
    for table in TABLES:
        if table == ITEM_FAILURES_TABLE and table not in manifest["tables"]:
            continue  # version 2 kept no failed videos apart: read as none
        parts = manifest["tables"].get(table)
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            problems.append(f"tables.{table} is not a list of part paths")
    for kind in SHARD_KINDS:
        shards = manifest["shards"].get(kind)
        if not isinstance(shards, list):
            problems.append(f"shards.{kind} is not a list")
        elif not all(isinstance(s, Mapping) for s in shards):
            problems.append(f"shards.{kind} holds an entry that is not an object")
    if not isinstance(manifest["failures"], list) or not all(
        isinstance(p, str) for p in manifest["failures"]
    ):
        problems.append("failures is not a list of part paths")
    return problems


# --------------------------------------------------------------------------------------------------
# The files it lists
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedFile:
    """One file the manifest records with a size and a checksum."""

    what: str
    """``items shard``, ``train shard``, ``table`` or ``failures file``."""
    entry: Mapping
    """Its manifest entry: ``path``, ``bytes``, ``sha256`` (and ``samples`` / ``rows`` / ``records``)."""

    @property
    def path(self) -> str:
        return str(self.entry.get("path", ""))


def listed_files(manifest: Mapping) -> list[ListedFile]:
    """Every file ``manifest`` records with a size and sha256: shards, ``table_files``, ``failure_files``
    (entries that are not objects are skipped: :func:`manifest_shape_problems` names them)."""
    shards = manifest.get("shards") if isinstance(manifest.get("shards"), Mapping) else {}
    tables = manifest.get("table_files") if isinstance(manifest.get("table_files"), Mapping) else {}
    failures = manifest.get("failure_files") if isinstance(manifest.get("failure_files"), list) else []
    listed = [(f"{kind} shard", entry) for kind, entries in shards.items() for entry in entries or []]
    listed += [("table", entry) for parts in tables.values() if isinstance(parts, list) for entry in parts]
    listed += [("failures file", entry) for entry in failures]
    return [ListedFile(what, entry) for what, entry in listed if isinstance(entry, Mapping)]


def named_parts(manifest: Mapping) -> list[str]:
    """The table parts and failures parts ``manifest`` names by path (``tables``, ``failures``)."""
    tables = manifest.get("tables") if isinstance(manifest.get("tables"), Mapping) else {}
    return [path for parts in tables.values() for path in parts or []] + list(manifest.get("failures") or [])


def size_problem(path: str, size: int, entry: Mapping) -> str | None:
    """Why a listed file of ``size`` bytes is not the one ``entry`` records, or None."""
    recorded = entry.get("bytes")
    return None if size == recorded else f"{path}: {size} bytes, manifest says {recorded}"


def sha256_problem(path: str, digest: str, entry: Mapping) -> str | None:
    """Why a listed file whose sha256 is ``digest`` is not the one ``entry`` records, or None."""
    return None if digest == entry.get("sha256") else f"{path}: sha256 differs from the manifest"


def content_problems(path: str, data: bytes, entry: Mapping) -> list[str]:
    """Size and sha256 of a listed file's whole content ``data`` against its manifest ``entry``."""
    found = (
        size_problem(path, len(data), entry),
        sha256_problem(path, hashlib.sha256(data).hexdigest(), entry),
    )
    return [problem for problem in found if problem]


def earlier_versions(manifest: Mapping) -> set[str]:
    """Ids of the earlier versions of a dataset root whose item shards ``manifest`` reuses in place
    (``../<version_id>/...`` paths)."""
    referenced = set()
    for shards in (manifest.get("shards") or {}).values():
        for shard in shards:
            parts = str(shard.get("path", "")).split("/")
            if len(parts) > 2 and f"{parts[0]}/" == EARLIER_VERSION_PREFIX:
                referenced.add(parts[1])
    return referenced


# --------------------------------------------------------------------------------------------------
# Frame settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSettings:
    """How the ingest sampled and stored each item's frames (the manifest's ``sampler``)."""

    num_frames: int
    """Frames per item."""
    height: int
    width: int
    """Every stored frame is ``height x width`` pixels (``sampler.size``)."""
    resize: str
    """How a video was fitted to that size: ``center-crop``, ``squash`` or ``pad``."""

    @property
    def short_side(self) -> int:
        return min(self.height, self.width)


def frame_settings(manifest: Mapping) -> FrameSettings | None:
    """The stored frames' settings, or None for a dataset without frames (no ``sampler``, or one of
    no frames: ``{"num_frames": 0}``).

    Raises:
        ManifestError: ``sampler`` is there but does not say the frame count and size.
    """
    sampler = manifest.get("sampler")
    if not sampler or (isinstance(sampler, Mapping) and sampler.get("num_frames") == 0):
        return None
    try:
        height, width = (int(side) for side in sampler["size"])
        config = sampler.get("config") or {}
        return FrameSettings(
            int(sampler["num_frames"]), height, width, str(config.get("resize", "center-crop"))
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ManifestError(
            f"sampler {sampler!r} does not give num_frames and size [height, width]"
        ) from None
