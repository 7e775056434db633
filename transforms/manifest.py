"""The dataset manifest: counts that reconcile, every shard with its checksum, written last and atomically."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from dataformat import manifest as manifest_format
from dataformat.format import FORMAT_VERSION, ITEM_SHARDS, TRAIN_SHARDS, train_shard_pattern
from transforms import storage
from transforms.reconcile import ReconciliationError, check_summaries, reconcile

__all__ = ["ReconciliationError", "build_manifest", "read_version_manifest", "reconcile", "write_manifest"]

CREATED_BY = "videorec-pipeline 0.1.0"


def content_hash(document: Mapping) -> str:
    """sha256 of the canonical JSON of ``document`` (the dataset version when none is given)."""
    return hashlib.sha256(
        json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")
    ).hexdigest()


def build_manifest(
    *,
    config: Mapping,
    sampler: Mapping | None,
    num_items: int,
    num_users: int,
    max_seq_len: int,
    train_frames: str,
    item_shards: list[dict],
    train_shards: list[dict],
    tables: Mapping[str, list[dict]],
    counts: Mapping,
    failures: list[dict],
    dataset_version: str | None = None,
) -> dict:
    """The manifest document (see docs/FORMAT.md); checks the counts and the shard and part summaries
    first (:mod:`transforms.reconcile`).

    ``tables`` maps a table name to the summaries of its parts, ``failures`` lists the summaries of
    the failures parts; both are listed in path order.
    """
    reconcile(counts)
    check_summaries(item_shards, train_shards, tables, failures, train_shard_pattern(train_frames))
    document = {
        "format_version": FORMAT_VERSION,
        "created_by": CREATED_BY,
        "config": dict(config),
        "sampler": dict(sampler) if sampler else None,
        "has_frames": bool(item_shards),
        "num_items": num_items,
        "num_users": num_users,
        "max_seq_len": max_seq_len,
        "train_frames": train_frames,
        "tables": {name: sorted(p["path"] for p in parts) for name, parts in tables.items()},
        "table_files": {
            name: _by_path(parts, ("path", "rows", "bytes", "sha256")) for name, parts in tables.items()
        },
        "shards": {
            ITEM_SHARDS: sorted(item_shards, key=lambda s: s["path"]),
            TRAIN_SHARDS: sorted(train_shards, key=lambda s: s["path"]),
        },
        "counts": dict(counts),
        "failures": sorted(p["path"] for p in failures),
        "failure_files": _by_path(failures, ("path", "records", "bytes", "sha256")),
    }
    return {"dataset_version": dataset_version or content_hash(document)[:16], **document}


def _by_path(parts: list[dict], fields: tuple[str, ...]) -> list[dict]:
    return [{field: part[field] for field in fields} for part in sorted(parts, key=lambda p: p["path"])]


def encode_manifest(manifest: Mapping) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_manifest(dataset_dir: str, manifest: Mapping) -> str:
    """Atomically write ``dataset_dir/manifest.json``; return its path."""
    path = manifest_format.manifest_location(dataset_dir)
    storage.write_bytes(path, encode_manifest(manifest))
    return path


def read_version_manifest(dataset_dir: str) -> dict:
    """The checked manifest of the dataset at ``dataset_dir`` (a folder, or the manifest.json itself),
    read through Beam's file systems (:func:`dataformat.manifest.read_manifest`)."""
    return manifest_format.read_manifest(dataset_dir, storage.read_whole_file)
