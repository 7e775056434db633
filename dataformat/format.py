"""The dataset format contract (docs/FORMAT.md), shared by the writers, ``videorec inspect`` and the trainer.

File names, sample keys and member names and table schemas live here and nowhere else; the
manifest's reading and checks are :mod:`dataformat.manifest`. No Beam and no torch.
``tests/test_format.py`` checks that docs/FORMAT.md states what this module says.
"""

from __future__ import annotations

import re

import pyarrow as pa

FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (2, 3)
"""Format versions this code reads: 2 (train samples always embed their frames) and 3 (``train_frames``)."""

TRAIN_FRAMES_REFERENCE = "reference"
"""Train samples hold the user's window of item indices only; frames live in the item shards alone."""
TRAIN_FRAMES_EMBEDDED = "embedded"
"""Train samples also hold the frames of each distinct item in the window (the layout of version 2)."""
TRAIN_FRAMES_LAYOUTS = (TRAIN_FRAMES_REFERENCE, TRAIN_FRAMES_EMBEDDED)
DEFAULT_TRAIN_FRAMES = TRAIN_FRAMES_REFERENCE
"""``videorec ingest --train-frames`` default: frames live only in the item shards."""

MANIFEST_FILE = "manifest.json"
RUN_STATS_FILE = "run_stats.json"
LATEST_FILE = "LATEST"
VERSIONS_DIR = "versions"
ITEM_SHARD_PATTERN = "items/items-{:06d}.tar"
TRAIN_SHARD_PATTERN = "train/train-{:06d}.tar"
COMPRESSED_TRAIN_SHARD_PATTERN = "train/train-{:06d}.tar.gz"
"""Train shards of the ``reference`` layout: JSON-only tars, gzip-compressed (:func:`train_shard_pattern`)."""
TABLE_PART_PATTERN = "tables/{table}/part-{bucket:05d}.parquet"
FAILURE_PART_PATTERN = "failures/part-{:05d}.jsonl"

ITEMS_TABLE = "items"
SEQUENCES_TABLE = "sequences"
ITEM_FAILURES_TABLE = "item_failures"
"""Videos a ``--dataset-root`` run tried and failed (new in version 3; a version-2 manifest has none)."""
TABLES = (ITEMS_TABLE, SEQUENCES_TABLE, ITEM_FAILURES_TABLE)

ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("item_index", pa.int32()),
        ("title", pa.string()),
        ("popularity", pa.int64()),
        ("shard", pa.string()),
        ("offset", pa.int64()),
        ("size", pa.int64()),
        ("fingerprint", pa.string()),
        ("status", pa.string()),
    ]
)
SEQUENCES_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("user_index", pa.int32()),
        ("item_indices", pa.list_(pa.int32())),
        ("item_ids", pa.list_(pa.string())),
        ("timestamps", pa.list_(pa.int64())),
    ]
)
ITEM_FAILURES_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("fingerprint", pa.string()),
        ("reason", pa.string()),
        ("attempts", pa.int32()),
    ]
)
SCHEMAS = {
    ITEMS_TABLE: ITEMS_SCHEMA,
    SEQUENCES_TABLE: SEQUENCES_SCHEMA,
    ITEM_FAILURES_TABLE: ITEM_FAILURES_SCHEMA,
}


ITEM_SHARDS = "items"
TRAIN_SHARDS = "train"
SHARD_KINDS = (ITEM_SHARDS, TRAIN_SHARDS)
"""The manifest's ``shards`` lists: item shards (one sample per item) and train shards (one per user)."""


EARLIER_VERSION_PREFIX = "../"
"""How a manifest path of a ``--dataset-root`` version names a file of an earlier version of the same
root: ``../<version_id>/items/items-NNNNNN.tar``, an item shard whose samples it reuses in place."""


def is_earlier_version_path(path: str) -> bool:
    """Whether a manifest path names a file in an earlier version's folder
    (:data:`EARLIER_VERSION_PREFIX`)."""
    return path.startswith(EARLIER_VERSION_PREFIX)


def item_shard_number(path: str) -> int:
    """``n`` of the item shard path ``ITEM_SHARD_PATTERN.format(n)``; ``ValueError`` for any other path."""
    prefix, suffix = ITEM_SHARD_PATTERN.split("{:06d}")
    number = path.removeprefix(prefix).removesuffix(suffix)
    if not (path.startswith(prefix) and path.endswith(suffix) and number.isdigit()):
        raise ValueError(f"not an item shard path: {path!r}")
    return int(number)


def table_part_path(table: str, bucket: int) -> str:
    return TABLE_PART_PATTERN.format(table=table, bucket=bucket)


def version_manifest_path(version_id: str) -> str:
    """Where a dataset root keeps a version's manifest, relative to the root."""
    return f"{VERSIONS_DIR}/{version_id}/{MANIFEST_FILE}"


def is_manifest_path(path: str) -> bool:
    """Whether ``path`` names a manifest document (any ``*.json``, the extension of :data:`MANIFEST_FILE`)
    rather than a dataset folder or root."""
    return path.endswith(MANIFEST_FILE[MANIFEST_FILE.rindex(".") :])


# --------------------------------------------------------------------------------------------------
# Sample keys and member names
# --------------------------------------------------------------------------------------------------

_SAFE = re.compile(rb"[A-Za-z0-9-]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ESCAPE = re.compile(r"_([0-9a-f]{2})")


def sanitize_key(identifier: str) -> str:
    """A tar- and WebDataset-safe sample key for ``identifier`` (reversible, injective).

    WebDataset splits a member name at its first dot into key and extension, so a key holds only
    ``[A-Za-z0-9_-]``: no ``/``, no ``.``, no leading ``-``; every other byte (and ``_``) is
    escaped as ``_xx`` hex; the empty string maps to ``_``.
    """
    if isinstance(identifier, str) and _PLAIN_KEY.fullmatch(identifier):
        return identifier  # nothing to escape (most IDs): the same result, without the byte loop
    raw = str(identifier).encode("utf-8")
    out = []
    for i, byte in enumerate(raw):
        char = bytes([byte])
        if _SAFE.fullmatch(char) and not (i == 0 and char == b"-"):
            out.append(char.decode("ascii"))
        else:
            out.append(f"_{byte:02x}")
    return "".join(out) or "_"


def unsanitize_key(key: str) -> str:
    """Invert :func:`sanitize_key`."""
    if key == "_":
        return ""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), key).encode("latin-1").decode("utf-8")


METADATA_FIELD = "json"
"""The extension of a sample's JSON member, and so the field WebDataset hands it over as."""
FRAME_EXTENSION = "jpg"
ITEM_FRAME_PREFIX = ""
"""What an item sample's frame fields start with, once WebDataset strips the key (nothing)."""


def metadata_member(key: str) -> str:
    """A sample's JSON member (item and train samples alike)."""
    return f"{key}.{METADATA_FIELD}"


def is_metadata_member(name: str) -> bool:
    """Whether tar member ``name`` is a sample's JSON member."""
    return name.endswith(f".{METADATA_FIELD}")


def is_frame_member(name: str) -> bool:
    """Whether tar member ``name`` (or a field, once WebDataset strips the key) is a frame (a JPEG)."""
    return name.endswith(f".{FRAME_EXTENSION}")


def split_member(name: str) -> tuple[str, str]:
    """``(key, field)`` of tar member ``name``, split at its first dot as WebDataset splits it."""
    key, _, field = name.partition(".")
    return key, field


def frame_field(prefix: str, frame: int | str) -> str:
    """A frame member's name once WebDataset strips the key: ``{prefix}{frame}.jpg``, where
    ``prefix`` is :data:`ITEM_FRAME_PREFIX` or a :func:`train_frame_prefix`."""
    return f"{prefix}{frame}.{FRAME_EXTENSION}"


def frame_number(field: str, prefix: str) -> int | None:
    """The frame number of sample field ``field`` if it is a :func:`frame_field` of ``prefix``, else ``None``."""
    suffix = f".{FRAME_EXTENSION}"
    if not (field.startswith(prefix) and field.endswith(suffix)):
        return None
    number = field[len(prefix) : -len(suffix)]
    return int(number) if number.isdigit() else None


def item_frame_member(key: str, frame: int) -> str:
    """Frame ``frame`` of an item sample."""
    return f"{key}.{frame_field(ITEM_FRAME_PREFIX, frame)}"


def train_frame_member(key: str, item_index: int, frame: int) -> str:
    """Frame ``frame`` of item ``item_index`` in a user's train sample."""
    return f"{key}.{frame_field(train_frame_prefix(item_index), frame)}"


def train_frame_prefix(item_index: int) -> str:
    """What a train sample's frame fields of one item start with, once WebDataset strips the key."""
    return f"{item_index}."


def train_frame_of(field: str) -> tuple[int, int] | None:
    """``(item_index, frame)`` of a train sample's frame field (:func:`train_frame_prefix` +
    :func:`frame_field`), else ``None``."""
    index = field.partition(".")[0]
    if not index.isdigit():
        return None
    frame = frame_number(field, train_frame_prefix(int(index)))
    return None if frame is None else (int(index), frame)


def train_shard_pattern(train_frames: str) -> str:
    """The train shard file pattern of a layout: ``reference`` shards are gzip-compressed tars."""
    return COMPRESSED_TRAIN_SHARD_PATTERN if train_frames == TRAIN_FRAMES_REFERENCE else TRAIN_SHARD_PATTERN
