"""Compact per-item side inputs: sorted 64-bit ID hashes and numpy columns, tens of bytes per item.

Only per-item facts ever travel to every worker, and only in this form: ``ExcludedItems``
(items removed before splitting, with the reason) and ``ItemLookup`` (each kept item's dense
index and where its frames are). A Python dict of the same facts costs 150+ bytes per item; these
cost 9 and 48, so even the full MicroLens catalogue (1.14M items) stays near 50 MB.

IDs are not stored, only :func:`transforms.buckets.stable_hash` values. Two IDs with the same
hash would be indistinguishable, so building a lookup fails loudly on a duplicate hash, and
``ItemLookup.check_disjoint`` fails when a kept item's hash is also an excluded one.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
import numpy as np

from transforms.buckets import stable_hash

NO_SHARD = -1
_MEMO_SIZE = 1 << 16  # entries per per-process memo of item facts (bounded: cleared when full)


class HashCollisionError(ValueError):
    """Two different item IDs hash to the same 64 bits (about 1 in 10^7 at a million items): never silent."""


def _sorted_unique(hashes: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(hashes, kind="stable")
    hashes = hashes[order]
    if len(hashes) > 1 and bool((hashes[1:] == hashes[:-1]).any()):
        raise HashCollisionError(
            f"{int((hashes[1:] == hashes[:-1]).sum())} item ID hash collision(s) in a catalogue of {len(hashes)}"
        )
    return (hashes, *(column[order] for column in columns))


def _find(hashes: np.ndarray, item_id: str) -> int:
    """Position of ``item_id`` in the sorted ``hashes``, or -1."""
    if not len(hashes):
        return -1
    key = np.uint64(stable_hash(item_id))
    position = int(np.searchsorted(hashes, key))
    return position if position < len(hashes) and hashes[position] == key else -1


class _Positions:
    """``item_id -> position`` memo in front of :func:`_find`, bounded to ``size`` entries.

    Popular items are looked up for nearly every user; a scalar ``np.searchsorted`` costs several
    microseconds, a dict hit a tenth of that.
    """

    def __init__(self, hashes: np.ndarray, size: int = _MEMO_SIZE):
        self.hashes, self.size, self.memo = hashes, size, {}

    def __call__(self, item_id: str) -> int:
        position = self.memo.get(item_id)
        if position is None:
            if len(self.memo) >= self.size:
                self.memo.clear()
            position = self.memo[item_id] = _find(self.hashes, item_id)
        return position

    def __getstate__(self):
        return {"hashes": self.hashes, "size": self.size}

    def __setstate__(self, state):
        self.__init__(state["hashes"], state["size"])


class ExcludedItems:
    """Set of excluded item IDs, each with its reason: ``reason(item_id) -> str | None``."""

    def __init__(self, hashes: np.ndarray, codes: np.ndarray, reasons: tuple[str, ...]):
        self.hashes, self.codes, self.reasons = hashes, codes, reasons
        self._position = _Positions(hashes)

    def reason(self, item_id: str) -> str | None:
        position = self._position(item_id)
        return None if position < 0 else self.reasons[int(self.codes[position])]

    def __contains__(self, item_id: str) -> bool:
        return self._position(item_id) >= 0

    def __getitem__(self, item_id: str) -> str:
        reason = self.reason(item_id)
        if reason is None:
            raise KeyError(item_id)
        return reason

    def __len__(self) -> int:
        return len(self.hashes)


def excluded_items_of(pairs):
    """PCollection[(item_id, reason)] -> singleton PCollection[ExcludedItems] (use with ``AsSingleton``)."""
    return pairs | "CollectExcluded" >> beam.CombineGlobally(CollectExcludedItems())


class CollectExcludedItems(beam.CombineFn):
    """Combines ``(item_id, reason)`` into one :class:`ExcludedItems`; the accumulator is reason -> hashes."""

    def create_accumulator(self) -> dict[str, list[int]]:
        return {}

    def add_input(self, accumulator, element):
        item_id, reason = element
        accumulator.setdefault(reason, []).append(stable_hash(item_id))
        return accumulator

    def merge_accumulators(self, accumulators):
        merged: dict[str, list[int]] = {}
        for accumulator in accumulators:
            for reason, hashes in accumulator.items():
                merged.setdefault(reason, []).extend(hashes)
        return merged

    def extract_output(self, accumulator) -> ExcludedItems:
        reasons = tuple(sorted(accumulator))
        hashes = np.array([h for r in reasons for h in accumulator[r]], dtype=np.uint64)
        codes = np.array([code for code, r in enumerate(reasons) for _ in accumulator[r]], dtype=np.uint8)
        return ExcludedItems(*_sorted_unique(hashes, codes), reasons)


class ItemLookup:
    """Dense index and frame location of each kept item, by ID hash.

    Columns, one row per item: ``index`` (1-based dense item index), ``shard`` (item shard number
    or ``NO_SHARD``), ``offset``/``size`` (the item's sample in that shard) and ``frame_sizes``
    (bytes of each JPEG, zero-padded to the longest).
    """

    def __init__(self, hashes, index, shard, offset, size, frame_sizes):
        self.hashes, self.index, self.shard = hashes, index, shard
        self.offset, self.size, self.frame_sizes = offset, size, frame_sizes
        self._position = _Positions(hashes)
        self._facts: dict[str, tuple[int, tuple]] = {}

    def __getstate__(self):
        return self.hashes, self.index, self.shard, self.offset, self.size, self.frame_sizes

    def __setstate__(self, state):
        self.__init__(*state)

    def __len__(self) -> int:
        return len(self.hashes)

    def position(self, item_id: str) -> int:
        position = self._position(item_id)
        if position < 0:
            raise KeyError(f"item {item_id!r} is not in the catalogue")
        return position

    def item_indices(self, item_ids: Iterable[str]) -> list[int]:
        """``[item_index(i) for i in item_ids]``, in one loop (it runs for every item of every user)."""
        memo, facts_of = self._facts.get, self._item_facts
        return [(memo(item_id) or facts_of(item_id))[0] for item_id in item_ids]

    def frames_of(self, item_id: str) -> tuple[int | None, int, int, tuple[int, ...]]:
        """``(shard number or None, offset, size, frame sizes)`` of an item."""
        return self._item_facts(item_id)[1]

    def _item_facts(self, item_id: str) -> tuple[int, tuple]:
        """``(index, frames_of)``, memoised like positions: every user's window asks for them again."""
        facts = self._facts.get(item_id)
        if facts is None:
            if len(self._facts) >= _MEMO_SIZE:
                self._facts.clear()
            p = self.position(item_id)
            shard = int(self.shard[p])
            sizes = tuple(int(s) for s in self.frame_sizes[p] if s > 0) if self.frame_sizes.size else ()
            frames = (None if shard == NO_SHARD else shard), int(self.offset[p]), int(self.size[p]), sizes
            facts = self._facts[item_id] = (int(self.index[p]), frames)
        return facts

    def check_disjoint(self, excluded: ExcludedItems) -> ItemLookup:
        clash = np.isin(self.hashes, excluded.hashes)
        if clash.any():
            raise HashCollisionError(
                f"{int(clash.sum())} kept item(s) share an ID hash with an excluded item"
            )
        return self

    @classmethod
    def from_parts(cls, parts: Iterable[np.ndarray]) -> ItemLookup:
        """From the record arrays of :func:`placed_items_array`, one per bucket."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(
                *(np.zeros(0, dtype=t) for t in (np.uint64, np.int32, np.int32, np.int64, np.int64)),
                np.zeros((0, 0), np.int32),
            )
        width = max(p["frame_sizes"].shape[1] for p in parts)
        records = np.concatenate([_widen(p, width) for p in parts])
        columns = _sorted_unique(
            records["hash"],
            records["index"],
            records["shard"],
            records["offset"],
            records["size"],
            records["frame_sizes"],
        )
        return cls(*columns)


def _widen(part: np.ndarray, width: int) -> np.ndarray:
    if part["frame_sizes"].shape[1] == width:
        return part
    out = np.zeros(len(part), dtype=_dtype(width))
    for name in ("hash", "index", "shard", "offset", "size"):
        out[name] = part[name]
    out["frame_sizes"][:, : part["frame_sizes"].shape[1]] = part["frame_sizes"]
    return out


def _dtype(frames: int) -> np.dtype:
    return np.dtype(
        [
            ("hash", np.uint64),
            ("index", np.int32),
            ("shard", np.int32),
            ("offset", np.int64),
            ("size", np.int64),
            ("frame_sizes", np.int32, (frames,)),
        ]
    )


def placed_items_array(rows: Iterable[tuple[str, int, int | None, int, int, tuple[int, ...]]]) -> np.ndarray:
    """Record array of ``(item_id, index, shard or None, offset, size, frame_sizes)`` rows."""
    rows = list(rows)
    width = max((len(r[5]) for r in rows), default=0)
    out = np.zeros(len(rows), dtype=_dtype(width))
    for i, (item_id, index, shard, offset, size, frame_sizes) in enumerate(rows):
        out[i] = (
            stable_hash(item_id),
            index,
            NO_SHARD if shard is None else shard,
            offset or 0,
            size or 0,
            tuple(frame_sizes) + (0,) * (width - len(frame_sizes)),
        )
    return out
