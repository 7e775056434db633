"""Resolve ``--data`` to one dataset version and load its manifest and tables.

Everything is found through ``manifest.json`` (see docs/FORMAT.md); the trainer never
guesses shard paths. A dataset root holding ``LATEST`` is resolved once, at start, so
a nightly ingest that moves ``LATEST`` mid-run cannot mix two versions.

The manifest is read and checked by :mod:`dataformat.manifest`, which also gives the stored frames'
settings (``sampler``: frame count and size, :attr:`DatasetInfo.frames`).

A dataset that cannot be used raises :class:`~trainer.errors.DatasetError` naming the problem and
the fix: no manifest, an unsound one (``dataformat.manifest.manifest_problems``), table parts that
are missing, unreadable or disagree with it, or local shards whose size is not the manifest's
(:func:`check_local_shards`; remote shards and every checksum are checked as they are streamed,
``trainer.shard_reader``).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dataformat import manifest as manifest_format
from dataformat.format import (
    ITEMS_TABLE,
    LATEST_FILE,
    MANIFEST_FILE,
    SEQUENCES_TABLE,
    is_manifest_path,
    version_manifest_path,
)
from dataformat.manifest import FrameSettings, ManifestError, frame_settings
from trainer import storage
from trainer.errors import REINGEST, DatasetError

log = logging.getLogger(__name__)


@dataclass
class UserSequences:
    """Every user's full time-ordered item sequence (leave-one-out splits are taken from it)."""

    user_index: np.ndarray
    """int64 [num_users]."""
    offsets: np.ndarray
    """int64 [num_users + 1]: user u's items are ``items[offsets[u]:offsets[u + 1]]``."""
    items: np.ndarray
    """int64 [total interactions]: item indices, concatenated."""

    def __len__(self) -> int:
        return len(self.user_index)

    def sequence(self, row: int) -> np.ndarray:
        return self.items[self.offsets[row] : self.offsets[row + 1]]


@dataclass(frozen=True)
class TablePart:
    """One part of a table: its URL, its rows and the table row it starts at (parts in manifest order)."""

    url: str
    rows: int
    first_row: int


@dataclass
class DatasetInfo:
    """One resolved dataset version.

    The sequences table is not held: evaluation reads each rank's rows from the parts that hold them
    (``trainer.eval_cases``); :attr:`sequences` loads the whole table, for the callers that need every
    user (``--source sequences`` windows, the experiment's oracle).
    """

    root: str
    """Folder URL holding manifest.json."""
    manifest: dict
    popularity: np.ndarray
    """int64 [num_items + 1]: training interactions per item index (index 0 = padding = 0)."""
    sequence_parts: list[TablePart]
    """The sequences table's parts, with their row counts (sum = ``num_users``)."""
    _sequences: UserSequences | None = None

    @property
    def sequences(self) -> UserSequences:
        """Every user's sequence (the whole table, loaded on first use)."""
        if self._sequences is None:
            table = _read_table(self.root, self.manifest, SEQUENCES_TABLE, ["user_index", "item_indices"])
            column = table.column("item_indices").combine_chunks()
            self._sequences = UserSequences(
                user_index=table.column("user_index").to_numpy().astype(np.int64),
                offsets=column.offsets.to_numpy().astype(np.int64) - int(column.offsets[0].as_py()),
                items=column.flatten().to_numpy().astype(np.int64),
            )
        return self._sequences

    @property
    def num_users(self) -> int:
        return int(self.manifest["num_users"])

    @property
    def version(self) -> str:
        return str(self.manifest.get("dataset_version", ""))

    @property
    def num_items(self) -> int:
        return int(self.manifest["num_items"])

    @property
    def has_frames(self) -> bool:
        return bool(self.manifest.get("has_frames"))

    @property
    def frames(self) -> FrameSettings | None:
        """How the ingest stored each item's frames (count and size), None without frames."""
        return frame_settings(self.manifest)  # checked by load_manifest: no error here

    @property
    def num_frames(self) -> int:
        return self.frames.num_frames if self.frames else 0

    @property
    def max_seq_len(self) -> int:
        return int(self.manifest["max_seq_len"])

    def rare_items(self) -> torch.Tensor:
        """Bool ``[num_items + 1]``: items at or below the median training popularity (the long tail)."""
        counts = self.popularity[1:]
        rare = np.zeros(self.num_items + 1, dtype=bool)
        rare[1:] = counts <= np.median(counts) if len(counts) else False
        return torch.from_numpy(rare)

    def shard_urls(self, kind: str) -> list[str]:
        return [storage.join_url(self.root, shard["path"]) for shard in self.manifest["shards"].get(kind, [])]

    def shard_entries(self, kind: str) -> dict[str, dict]:
        """URL -> the manifest's entry (``path``, ``samples``, ``bytes``, ``sha256``) of each ``kind`` shard."""
        return {storage.join_url(self.root, s["path"]): s for s in self.manifest["shards"].get(kind, [])}

    def shard_samples(self, kind: str) -> int:
        return sum(int(shard["samples"]) for shard in self.manifest["shards"].get(kind, []))


def resolve_manifest_url(data: str) -> str:
    """The manifest URL for ``data``: a manifest, a dataset folder, or a root with ``LATEST``.

    Raises:
        DatasetError: ``data`` is empty, names no manifest or root, or its ``LATEST`` names no version.
    """
    if not data:
        raise DatasetError(
            "--data is required: a dataset folder, its manifest.json, or a root holding LATEST"
        )
    if is_manifest_path(data):
        if not storage.exists(data):
            raise DatasetError(
                f"--data {data} does not exist; give a dataset's manifest.json, folder or root"
            )
        return data
    latest = storage.join_url(data, LATEST_FILE)
    if storage.exists(latest):
        version = storage.read_bytes(latest).decode("utf-8").strip()
        if not version or "/" in version or version.startswith("."):
            raise DatasetError(
                f"{latest} does not name a dataset version ({version!r}); publish one with "
                "videorec ingest --dataset-root, or give a version's folder as --data"
            )
        log.info("%s -> version %s", latest, version)
        return storage.join_url(data, version_manifest_path(version))
    manifest = manifest_format.manifest_location(data)
    if not storage.exists(manifest):
        what = (
            "does not exist"
            if not _exists_at_all(data)
            else f"holds neither {MANIFEST_FILE} nor {LATEST_FILE}"
        )
        raise DatasetError(
            f"--data {data} {what}; give a dataset folder written by videorec ingest, its "
            f"{MANIFEST_FILE}, or a dataset root holding {LATEST_FILE}"
        )
    return manifest


def _exists_at_all(data: str) -> bool:
    """Whether a local ``data`` exists as anything (remote locations are assumed to: no listing)."""
    return bool(storage.scheme_of(data)) or os.path.exists(data)


def load_manifest(manifest_url: str) -> dict:
    """The parsed, sound manifest at ``manifest_url``.

    Raises:
        DatasetError: it is not JSON or unsound (``dataformat.manifest.manifest_problems``, every problem
            named), or its ``sampler`` does not give the frames' count and size.
    """
    try:
        manifest = manifest_format.read_manifest(manifest_url)
        frame_settings(manifest)
    except ManifestError as err:
        raise DatasetError(f"{err}; this is not a sound dataset version: {REINGEST}") from None
    return manifest


def explain_frame_size(dataset: DatasetInfo, frame_size: int, squash: bool) -> tuple[str, bool] | None:
    """``(line, upscaled)``: how the stored frames become the encoder's ``frame_size`` square (logged
    at start; a warning when ``upscaled``), or None for a dataset without frames.

    ``--frame-size`` is the encoder's input side, a model choice kept apart from the stored size on
    purpose (``trainer.frames``: resize, then a crop of ``frame_size``, as 256 -> 224); a side above
    the stored frames' short side upscales them, which adds no detail."""
    frames = dataset.frames
    if frames is None:
        return None
    how = "squashed" if squash else "resized and cropped"
    line = (
        f"frames stored at {frames.height}x{frames.width} (the manifest's sampler.size, {frames.num_frames} "
        f"per item) are {how} to {frame_size}x{frame_size} (--frame-size)"
    )
    if frame_size > frames.short_side:
        return (
            f"{line}: upscaled, which adds no detail; pass --frame-size {frames.short_side} or less, "
            f"or ingest with --frame-size {frame_size}",
            True,
        )
    return line, False


def _read_table(root: str, manifest: dict, name: str, columns: list[str]) -> pa.Table:
    """Every part of table ``name``, concatenated in the manifest's order (docs/FORMAT.md)."""
    parts = manifest["tables"][name]  # a list of paths: checked by parse_manifest
    tables = []
    for path in parts:
        url = storage.join_url(root, path)
        if not storage.exists(url):
            raise DatasetError(
                f"{url}, a part of the {name} table listed in the manifest, is missing; {REINGEST}"
            )
        try:
            tables.append(pq.read_table(io.BytesIO(storage.read_bytes(url)), columns=columns))
        except (pa.ArrowException, OSError) as err:
            raise part_problem(url, name, err) from None
    return pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.int64()) for c in columns})


def check_local_shards(dataset: DatasetInfo, kind: str) -> None:
    """Every local ``kind`` shard exists and has the manifest's size (one ``stat`` each, no reads).

    Raises:
        DatasetError: naming the first shard that is missing or of another size.
    """
    for url, entry in dataset.shard_entries(kind).items():
        if storage.scheme_of(url):
            continue  # remote: checked when opened (trainer.shard_reader)
        try:
            size = os.path.getsize(url)
        except OSError:
            raise DatasetError(f"shard {url}, listed in the manifest, is missing; {REINGEST}") from None
        if "bytes" in entry and size != int(entry["bytes"]):
            raise DatasetError(
                f"shard {url} has {size} bytes, the manifest says {entry['bytes']}: it changed after it was "
                f"written; {REINGEST}"
            )


def load_dataset(data: str) -> DatasetInfo:
    """Load manifest, item popularity and user sequences of the dataset named by ``data``.

    Raises:
        DatasetError: the dataset cannot be used (see the module docstring).
    """
    manifest_url = resolve_manifest_url(data)
    manifest = load_manifest(manifest_url)
    root = storage.parent_url(manifest_url)
    num_items = int(manifest["num_items"])

    items = _read_table(root, manifest, ITEMS_TABLE, ["item_index", "popularity"])
    popularity = np.zeros(num_items + 1, dtype=np.int64)
    indices = items.column("item_index").to_numpy().astype(np.int64)
    if len(indices) and (indices.min() < 1 or indices.max() > num_items):
        raise DatasetError(
            f"{root}: the items table has item_index outside 1..{num_items}, the manifest's num_items; {REINGEST}"
        )
    popularity[indices] = items.column("popularity").to_numpy()

    parts = sequence_parts(root, manifest)
    rows = sum(part.rows for part in parts)
    if rows == 0:
        raise DatasetError(f"{root}: the dataset has no users; ingest interactions with at least 3 per user")
    if rows != int(manifest["num_users"]):
        raise DatasetError(
            f"{root}: the sequences table has {rows} users, the manifest says "
            f"{manifest['num_users']}; {REINGEST}"
        )
    return DatasetInfo(root=root, manifest=manifest, popularity=popularity, sequence_parts=parts)


def part_problem(url: str, name: str, err: Exception) -> DatasetError:
    """The error for a table part that cannot be read."""
    reason = " ".join(str(err).split())[:160]
    return DatasetError(f"{url} is not a readable part of the {name} table ({reason}); {REINGEST}")


def sequence_parts(root: str, manifest: dict) -> list[TablePart]:
    """The sequences table's parts and their rows: a local part's from its Parquet footer (no data
    read), a remote part's from the manifest's ``table_files`` (checked when the part is read), or
    from its footer when the manifest has none."""
    listed = {
        entry["path"]: int(entry["rows"])
        for entry in (manifest.get("table_files") or {}).get(SEQUENCES_TABLE, [])
    }
    parts, first = [], 0
    for path in manifest["tables"][SEQUENCES_TABLE]:
        url = storage.join_url(root, path)
        remote = storage.scheme_of(url) not in ("", "file")
        if remote and path in listed:
            rows = listed[path]
        else:
            if not storage.exists(url):
                raise DatasetError(
                    f"{url}, a part of the {SEQUENCES_TABLE} table listed in the manifest, is missing; {REINGEST}"
                )
            try:
                source = io.BytesIO(storage.read_bytes(url)) if remote else storage.local_copy(url)[0]
                rows = pq.read_metadata(source).num_rows
            except (pa.ArrowException, OSError) as err:
                raise part_problem(url, SEQUENCES_TABLE, err) from None
        parts.append(TablePart(url, rows, first))
        first += rows
    return parts
