"""A small, test-only writer of the dataset format in docs/FORMAT.md.

The trainer's tests use it to build exact, hand-controlled datasets (and corrupt ones)
without running the Beam ingest job. It follows the format contract field by field.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from dataformat.format import sanitize_key

FrameMaker = Callable[[str], list[np.ndarray]]


def solid_frames(size: int = 16, num_frames: int = 2) -> FrameMaker:
    """Frames whose colour is a hash of the item id (distinct items look distinct)."""

    def make(item_id: str) -> list[np.ndarray]:
        digest = hashlib.sha256(item_id.encode()).digest()
        colour = np.frombuffer(digest[:3], dtype=np.uint8)
        return [np.broadcast_to(colour, (size, size, 3)).copy() for _ in range(num_frames)]

    return make


def jpeg(frame: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_shards(
    folder: Path, kind: str, samples: list[list[tuple[str, bytes]]], per_shard: int
) -> list[dict]:
    (folder / kind).mkdir(parents=True, exist_ok=True)
    shards = []
    for number, start in enumerate(range(0, len(samples), per_shard)):
        relative = f"{kind}/{kind}-{number:06d}.tar"
        with tarfile.open(folder / relative, "w", format=tarfile.USTAR_FORMAT) as tar:
            for members in samples[start : start + per_shard]:
                for name, data in members:
                    _add(tar, name, data)
        content = (folder / relative).read_bytes()
        shards.append(
            {
                "path": relative,
                "samples": len(samples[start : start + per_shard]),
                "bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        )
    return shards


def write_dataset(
    folder: Path,
    sequences: dict[str, list[str]],
    *,
    frames: FrameMaker | None = None,
    max_seq_len: int = 10,
    per_shard: int = 8,
    version: str = "test-v1",
) -> Path:
    """Write a FORMAT.md dataset for full, time-ordered ``sequences`` (user id -> item ids); returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    item_ids = sorted(
        {i for seq in sequences.values() for i in seq}, key=lambda i: (int(i), i) if i.isdigit() else (0, i)
    )
    index = {item: n + 1 for n, item in enumerate(item_ids)}
    users = sorted(sequences, key=lambda u: (int(u), u) if u.isdigit() else (0, u))
    popularity = dict.fromkeys(item_ids, 0)
    for seq in sequences.values():
        for item in seq[:-2]:
            popularity[item] += 1
    item_frames = {item: frames(item) for item in item_ids} if frames else {}

    item_samples = []
    for item in item_ids if frames else []:
        key = sanitize_key(item)
        meta = {
            "item_id": item,
            "item_index": index[item],
            "title": None,
            "frames": len(item_frames[item]),
            "sampler": {},
        }
        item_samples.append(
            [(f"{key}.json", json.dumps(meta).encode())]
            + [(f"{key}.{j}.jpg", jpeg(f)) for j, f in enumerate(item_frames[item])]
        )
    train_samples = []
    for user_index, user in enumerate(users):
        window = sequences[user][:-2][-(max_seq_len + 1) :]
        if len(window) < 2:
            continue
        key = sanitize_key(user)
        meta = {
            "user_id": user,
            "user_index": user_index,
            "item_ids": window,
            "item_indices": [index[i] for i in window],
            "timestamps": list(range(len(window))),
        }
        members = [(f"{key}.json", json.dumps(meta).encode())]
        for item in dict.fromkeys(window) if frames else []:
            members += [(f"{key}.{index[item]}.{j}.jpg", jpeg(f)) for j, f in enumerate(item_frames[item])]
        train_samples.append(members)

    pq.write_table(
        pa.table(
            {
                "item_id": pa.array(item_ids, pa.string()),
                "item_index": pa.array([index[i] for i in item_ids], pa.int32()),
                "popularity": pa.array([popularity[i] for i in item_ids], pa.int64()),
                "shard": pa.array([None] * len(item_ids), pa.string()),
                "offset": pa.array([None] * len(item_ids), pa.int64()),
                "size": pa.array([None] * len(item_ids), pa.int64()),
                "status": pa.array(["ok"] * len(item_ids), pa.string()),
            }
        ),
        _table_part(folder, "items"),
    )
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(users, pa.string()),
                "user_index": pa.array(range(len(users)), pa.int32()),
                "item_indices": pa.array(
                    [[index[i] for i in sequences[u]] for u in users], pa.list_(pa.int32())
                ),
                "item_ids": pa.array([sequences[u] for u in users], pa.list_(pa.string())),
            }
        ),
        _table_part(folder, "sequences"),
    )
    first = next(iter(item_frames.values()), [])
    sampler = {"num_frames": len(first)} | ({"size": list(first[0].shape[:2])} if first else {})
    manifest = {
        "format_version": 2,
        "dataset_version": version,
        "created_by": "tests/fixtures_dataset.py",
        "sampler": sampler,
        "has_frames": bool(frames),
        "num_items": len(item_ids),
        "num_users": len(users),
        "max_seq_len": max_seq_len,
        "tables": {name: [TABLE_PART.format(name)] for name in ("items", "sequences")},
        "counts": {
            "rows_read": sum(len(s) for s in sequences.values()),
            "rows_used": sum(len(s) for s in sequences.values()),
            "rows_dropped": {},
            "items_seen": len(item_ids),
            "items_encoded": len(item_ids),
            "items_failed": {},
            "users_seen": len(users),
            "users_kept": len(users),
            "users_dropped": {},
        },
        "failures": [],
        "shards": {
            "items": _write_shards(folder, "items", item_samples, per_shard),
            "train": _write_shards(folder, "train", train_samples, per_shard),
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    index_item_shards(folder)
    return folder


def index_item_shards(folder: Path) -> None:
    """Fill the items table's ``shard``, ``offset`` and ``size`` (docs/FORMAT.md) from the item shards
    as they are: each item sample's first header byte and the bytes of all its members."""
    manifest = json.loads((folder / "manifest.json").read_text())
    placed = {}
    for entry in manifest["shards"]["items"]:
        with tarfile.open(folder / entry["path"]) as tar:
            for member in tar.getmembers():
                key = member.name.partition(".")[0]
                end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                start = placed[key][1] if key in placed else member.offset
                placed[key] = (entry["path"], start, end - start)
    path = _table_part(folder, "items")
    table = pq.read_table(path)
    where = [placed.get(sanitize_key(item)) for item in table.column("item_id").to_pylist()]
    for position, (name, kind) in enumerate(
        (("shard", pa.string()), ("offset", pa.int64()), ("size", pa.int64()))
    ):
        column = pa.array([w[position] if w else None for w in where], kind)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    pq.write_table(table, path)


TABLE_PART = "tables/{}/part-00000.parquet"


def _table_part(folder: Path, name: str) -> Path:
    path = folder / TABLE_PART.format(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def rewrite_shard(folder: Path, relative: str, change: Callable[[str, bytes], bytes]) -> None:
    """Rewrite the shard ``relative`` member by member (``change(name, content)`` gives the new content)
    and record its new size and sha256 in the manifest: a dataset written with damaged samples, whose
    shards are exactly what its manifest says."""
    path = folder / relative
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, content in members:
            content = change(member.name, content)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    data = path.read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["shards"]["items"] + manifest["shards"]["train"]:
        if entry["path"] == relative:
            entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    index_item_shards(folder)
