"""The item store: item index -> that item's JPEG frames, read by offset from the item shards.

Frames live in the item shards (``items/items-NNNNNN.tar``, one sample per item). The items table
says where each item's sample is: ``shard`` (path in the dataset), ``offset`` (its first member's
header) and ``size`` (every byte of its members, headers and padding included; docs/FORMAT.md).
:meth:`ItemStore.open` reads only those columns and ``item_index`` into O(items) numpy arrays.

- A dataset on a local disk is read in place; a shard whose size is not the manifest's is refused.
- Remote item shards (``gs://``, ``http(s)://``) are fetched whole into the machine's item cache
  (:mod:`trainer.item_cache`: checked against the manifest's size and sha256, shared by every rank
  and loader worker, bounded, reused by later runs of the same dataset version).
- Each shard is memory-mapped once per process (at most :data:`OPEN_SHARDS` at a time); an item's
  bytes are its slice of the map, whose tar members are parsed here: the JSON member must name the
  item (in the version's own shards: an earlier version's shard, which a nightly ``reference``
  version indexes in place as ``../<version>/items/...``, holds that version's indices), and the
  frames are its ``N.jpg`` members.

An item that cannot be read (no index entry, a slice past the end of its shard, a shard missing,
cut short or not the manifest's, a slice that is not the item's sample) raises :class:`ItemLost`
with one line naming the item and its shard; a shard that failed is not tried again by this process.
The store is picklable (DataLoader workers open their own maps).
"""

from __future__ import annotations

import argparse
import io
import json
import mmap
import os
import posixpath
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataformat.format import (
    ITEM_FRAME_PREFIX,
    ITEM_SHARDS,
    ITEMS_TABLE,
    METADATA_FIELD,
    TRAIN_FRAMES_EMBEDDED,
    frame_number,
    is_earlier_version_path,
    split_member,
)
from dataformat.manifest import train_frames_of
from trainer import storage
from trainer.config import DataConfig
from trainer.dataset import DatasetInfo
from trainer.errors import REINGEST, DatasetError, UsageError
from trainer.item_cache import HeldShard, ShardCache, ShardUnavailable

INDEX_COLUMNS = ["item_index", "shard", "offset", "size"]
OPEN_SHARDS = 64
"""Shards a process keeps memory-mapped at once (least recently used closed first)."""
BLOCK = 512
NO_SHARD = -1


class ItemLost(Exception):
    """An item whose frames cannot be read; the message is one line naming the item and its shard."""


class ItemStore:
    """Item index -> JPEG frames (see the module docstring).

    ``shard_paths[n]``: the dataset path of shard ``n``; ``shard_of``, ``offsets``, ``sizes``: int
    arrays over item indices ``0..num_items`` (``shard_of`` is :data:`NO_SHARD` for items without frames).
    """

    def __init__(
        self,
        root: str,
        version: str,
        entries: dict[str, dict],
        shard_paths: list[str],
        shard_of: np.ndarray,
        offsets: np.ndarray,
        sizes: np.ndarray,
        cache: ShardCache,
    ):
        self.root, self.version, self.entries = root, version, entries
        self.shard_paths, self.shard_of, self.offsets, self.sizes = shard_paths, shard_of, offsets, sizes
        self.cache = cache
        self._maps: OrderedDict[int, tuple[mmap.mmap, HeldShard]] = OrderedDict()
        self._broken: dict[int, str] = {}

    @classmethod
    def open(cls, root: str, manifest: dict, cache: ShardCache) -> ItemStore:
        """The store of the dataset at ``root`` (folder URL) with ``manifest``: its items table's index
        columns, read part by part (``storage.read_bytes``; a part that cannot be read raises)."""
        num_items = int(manifest["num_items"])
        shard_of = np.full(num_items + 1, NO_SHARD, dtype=np.int32)
        offsets = np.zeros(num_items + 1, dtype=np.int64)
        sizes = np.zeros(num_items + 1, dtype=np.int64)
        entries = {entry["path"]: entry for entry in manifest["shards"].get(ITEM_SHARDS, [])}
        shard_paths = list(entries)
        numbers = {path: n for n, path in enumerate(shard_paths)}
        for path in manifest["tables"][ITEMS_TABLE]:
            data = storage.read_bytes(storage.join_url(root, path))
            table = pq.read_table(io.BytesIO(data), columns=INDEX_COLUMNS)
            framed = table.filter(table.column("shard").is_valid())
            if not len(framed):
                continue
            items = framed.column("item_index").to_numpy().astype(np.int64)
            if items.min() < 1 or items.max() > num_items:
                raise ValueError(f"{path}: item_index outside 1..{num_items}")
            for shard in set(framed.column("shard").to_pylist()) - set(numbers):
                numbers[shard] = len(shard_paths)  # not in the manifest: its items are lost when read
                shard_paths.append(shard)
            shard_of[items] = [numbers[s] for s in framed.column("shard").to_pylist()]
            offsets[items] = framed.column("offset").to_numpy()
            sizes[items] = framed.column("size").to_numpy()
        version = str(manifest.get("dataset_version", ""))
        return cls(root, version, entries, shard_paths, shard_of, offsets, sizes, cache)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": OrderedDict(), "_broken": {}}

    def items(self) -> np.ndarray:
        """int64: the items that have frames, ordered by shard and offset (the order they lie on disk)."""
        framed = np.flatnonzero(self.shard_of != NO_SHARD)
        return framed[np.lexsort((self.offsets[framed], self.shard_of[framed]))]

    def shard_name(self, item: int) -> str:
        """The dataset path of ``item``'s shard (for messages)."""
        shard = int(self.shard_of[item]) if 0 <= item < len(self.shard_of) else NO_SHARD
        return self.shard_paths[shard] if shard != NO_SHARD else "no shard"

    def frames(self, item: int) -> list[bytes]:
        """``item``'s JPEG frames, in frame order.

        Raises:
            ItemLost: see the module docstring.
        """
        shard = int(self.shard_of[item]) if 0 < item < len(self.shard_of) else NO_SHARD
        if shard == NO_SHARD:
            raise ItemLost(f"item {item} (no shard): the items table gives it no frames")
        where = f"item {item} ({self.shard_paths[shard]})"
        if shard in self._broken:
            raise ItemLost(f"{where}: {self._broken[shard]}")
        try:
            shard_map = self._map(shard)
        except (OSError, ValueError) as exn:
            self._broken[shard] = " ".join(str(exn).split())
            raise ItemLost(f"{where}: {self._broken[shard]}") from None
        offset, size = int(self.offsets[item]), int(self.sizes[item])
        if offset < 0 or size < BLOCK or offset + size > len(shard_map):
            raise ItemLost(
                f"{where}: its bytes {offset}..{offset + size} are not inside the shard ({len(shard_map)} bytes)"
            )
        try:  # an earlier version's shard holds that version's item_index in its JSON (docs/FORMAT.md)
            named = None if is_earlier_version_path(self.shard_paths[shard]) else item
            return frames_in_sample(shard_map[offset : offset + size], named)
        except ValueError as exn:
            raise ItemLost(f"{where} at byte {offset}: {exn}") from None

    def _map(self, shard: int) -> mmap.mmap:
        if shard in self._maps:
            self._maps.move_to_end(shard)
            return self._maps[shard][0]
        held = self._hold(shard)
        try:
            with open(held.path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                expected = self.entries[self.shard_paths[shard]].get("bytes")
                if expected is not None and size != int(expected):
                    raise ShardUnavailable(f"the shard has {size} bytes, the manifest says {expected}")
                if not size:
                    raise ShardUnavailable("the shard is empty")
                shard_map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            held.release()
            raise
        self._maps[shard] = (shard_map, held)
        while len(self._maps) > OPEN_SHARDS:
            old_map, old_held = self._maps.popitem(last=False)[1]
            old_map.close()
            old_held.release()
        return shard_map

    def _hold(self, shard: int) -> HeldShard:
        path = self.shard_paths[shard]
        if path not in self.entries:
            raise ShardUnavailable("the manifest lists no such item shard")
        url = storage.join_url(self.root, path)
        scheme = storage.scheme_of(url)
        if scheme in storage.REMOTE_SCHEMES:  # GCS names do not resolve "../<version>/items/..."
            host, _, name = url.split("://", 1)[1].partition("/")
            url = f"{scheme}://{host}/{posixpath.normpath(name)}"
            return self.cache.hold(url, self.version, self.entries[path])
        local = url.removeprefix("file://") if scheme == "file" else url
        if not os.path.isfile(local):
            raise ShardUnavailable("the shard is missing")
        return HeldShard(local, None)

    def __del__(self):
        self.close()

    def close(self) -> None:
        """Unmap every shard and release the cache's hold on them."""
        while self._maps:
            shard_map, held = self._maps.popitem()[1]
            shard_map.close()
            held.release()


def frames_in_sample(data: bytes, item: int | None) -> list[bytes]:
    """The JPEG frames of the item sample whose tar members are ``data`` (ustar headers, PAX records
    allowed); its JSON member must give ``item_index`` ``item`` (unless ``None``: a sample of an
    earlier version, whose JSON has that version's index). ``ValueError`` says what is wrong."""
    keys, frames, meta = set(), {}, None
    for name, content in tar_members(data):
        key, field = split_member(name)
        keys.add(key)
        if field == METADATA_FIELD:
            meta = content
        elif (number := frame_number(field, ITEM_FRAME_PREFIX)) is not None:
            frames[number] = content
    if len(keys) != 1 or meta is None:
        raise ValueError(f"not one item sample with its JSON member (keys {sorted(keys)[:3]})")
    try:
        named = int(json.loads(meta)["item_index"])
    except (ValueError, KeyError, TypeError) as exn:
        raise ValueError(f"its JSON member is unreadable ({exn!r})") from None
    if item is not None and named != item:
        raise ValueError(f"the sample there is item {named}'s: the index does not match the shard")
    if sorted(frames) != list(range(len(frames))) or not frames:
        raise ValueError(f"frames numbered {sorted(frames)[:6]}, not 0..N-1")
    return [frames[n] for n in range(len(frames))]


def tar_members(data: bytes) -> list[tuple[str, bytes]]:
    """``(name, content)`` of the file members in ``data``, a run of whole tar members."""
    members, position, pax = [], 0, {}
    while position < len(data):
        header = data[position : position + BLOCK]
        if len(header) < BLOCK or not _checksum_ok(header):
            raise ValueError(f"no tar header at byte {position} of the item's bytes")
        size = int(pax.get("size", _number(header[124:136])))
        start = position + BLOCK
        if start + size > len(data):
            raise ValueError("a member runs past the item's bytes")
        content = data[start : start + size]
        position = start + -(-size // BLOCK) * BLOCK
        kind = header[156:157]
        if kind == b"x":
            pax = _pax_records(content)
            continue
        if kind in (b"0", b"\0"):
            prefix, name = _text(header[345:500]), _text(header[:100])
            members.append((pax.get("path") or (f"{prefix}/{name}" if prefix else name), content))
        pax = {}
    return members


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _number(header[148:156])
    except ValueError:
        return False
    return stored == sum(header[:148]) + 8 * 32 + sum(header[156:])


def _number(field: bytes) -> int:
    if field[:1] == b"\x80":  # base-256 (sizes past the octal field)
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8")


def _pax_records(content: bytes) -> dict[str, str]:
    """``key=value`` records of a PAX extended header (``LEN key=value\\n`` each)."""
    records, position = {}, 0
    while position < len(content):
        length = int(content[position : content.index(b" ", position)])
        key, _, value = content[content.index(b" ", position) + 1 : position + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8")
        position += length
    return records


def add_item_cache_flags(parser: argparse.ArgumentParser) -> None:
    """``--item-cache`` and ``--item-cache-max-gb`` (``DataConfig.item_cache*``) for ``evaluate`` and ``extract``."""
    defaults = DataConfig()
    parser.add_argument(
        "--item-cache",
        default=defaults.item_cache,
        help="folder caching remote item shards (default ~/.cache/videorec/item-shards)",
    )
    parser.add_argument(
        "--item-cache-max-gb", type=float, default=defaults.item_cache_max_gb, help="item cache size limit"
    )


def item_store_for(dataset: DatasetInfo, config: DataConfig) -> ItemStore:
    """The item store of ``dataset``, its remote shards cached as ``config`` says (``--item-cache``).

    Raises:
        DatasetError: the items table's index columns cannot be read.
    """
    cache = ShardCache(config.item_cache, int(config.item_cache_max_gb * 1e9))
    try:
        return ItemStore.open(dataset.root, dataset.manifest, cache)
    except (pa.ArrowException, OSError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise DatasetError(
            f"{dataset.root}: the items table gives no item index ({reason}); {REINGEST}"
        ) from None


def train_frames_from_store(manifest: dict, frames_from: str) -> bool:
    """Whether training reads item frames from the store (``--frames-from``, see ``DataConfig``).

    Raises:
        UsageError: an unknown ``frames_from``, or ``samples`` on a dataset whose samples hold no frames.
    """
    layout = train_frames_of(manifest)
    if frames_from == "auto":
        return layout != TRAIN_FRAMES_EMBEDDED
    if frames_from == "samples" and layout != TRAIN_FRAMES_EMBEDDED:
        raise UsageError(
            f"--frames-from samples needs train samples that embed frames; this dataset's are {layout!r}: "
            "use --frames-from store (or auto)"
        )
    if frames_from not in ("store", "samples"):
        raise UsageError(f"unknown --frames-from {frames_from!r}; choose auto, store or samples")
    return frames_from == "store"
