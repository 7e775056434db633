"""The new-item split: items whose first interaction is latest in time are held out of training.

Choice (``--new-items FRACTION`` or ``--new-items-after TIMESTAMP``), over every item seen in the
deduplicated histories (before any item filter):

- each item's *first-interaction time* is the smallest timestamp of any of its interactions,
  found with a per-item combine (one ``(item, time)`` per history batch and item goes through the
  shuffle);
- ``--new-items-after T``: the items whose first interaction is later than ``T`` (epoch ms);
- ``--new-items F``: the ``round_half_up(F * items seen)`` items that come last in the order of
  ``(first-interaction time, stable_hash(item ID))``: among items first seen at the same
  millisecond, the one whose 64-bit :func:`transforms.buckets.stable_hash` is larger counts as
  newer. The order is total and depends on nothing but the data, so the set never depends on
  the runner or the number of workers.

The choice is one global combine over items only (16 bytes per item), and reaches the workers
as one compact :class:`~transforms.item_lookup.ExcludedItems` (9 bytes per item), never as a
dict. What happens to the interactions is :func:`hold_out_new_items`'s job.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np

from transforms.buckets import stable_hash
from transforms.item_lookup import ExcludedItems, HashCollisionError
from transforms.packed_rows import Interaction, batch_histories

NEW_ITEM = "new_item"
"""The reason of every member of the new-item set."""
HELD_OUT = "new_item_held_out"
"""``rows_dropped`` reason of an interaction with a new item that is not its user's test target."""


def new_item_count(fraction: float, items_seen: int) -> int:
    """How many items ``--new-items fraction`` makes new: ``fraction * items_seen``, halves rounded up."""
    return math.floor(fraction * items_seen + 0.5)


def hold_out_new_items(
    rows: Sequence[Interaction], new_items: ExcludedItems | None
) -> tuple[list[Interaction], list[Interaction]]:
    """``(kept rows, held-out rows)`` of one user's time-ordered, filtered rows.

    The last row (the test target) is always kept, new item or not; every other row of a new item
    is held out, so no new item is ever a training input, a training target or a validation target.
    """
    if new_items is None or not len(new_items) or not rows:
        return list(rows), []
    body = rows[:-1]
    kept = [row for row in body if row.item_id not in new_items]
    held = [row for row in body if row.item_id in new_items]
    return [*kept, rows[-1]], held


def first_times(rows: Iterable[Interaction]) -> list[tuple[str, int]]:
    """``(item_id, earliest timestamp)`` of each item among ``rows``."""
    first: dict[str, int] = {}
    for row in rows:
        if row.item_id not in first or row.timestamp < first[row.item_id]:
            first[row.item_id] = row.timestamp
    return list(first.items())


class ChooseNewItems(beam.PTransform):
    """History batches ``(bucket, blob)`` (:class:`transforms.sequences.GroupIntoHistories`) -> singleton
    PCollection[ExcludedItems] of the new items (reason ``new_item``).

    Exactly one of ``fraction`` (in (0, 1]) and ``after`` (epoch ms) is set.
    """

    def __init__(self, fraction: float | None = None, after: int | None = None):
        super().__init__()
        if (fraction is None) == (after is None):
            raise ValueError("set exactly one of fraction and after")
        self.fraction, self.after = fraction, after

    def expand(self, histories):
        return (
            histories
            | "FirstTimePerBatch"
            >> beam.FlatMap(
                lambda batch: first_times(row for _, rows in batch_histories(batch) for row in rows)
            )
            | "FirstTimePerItem" >> beam.CombinePerKey(min)
            | "ChooseNew" >> beam.CombineGlobally(CollectNewItems(self.fraction, self.after))
        )


class CollectNewItems(beam.CombineFn):
    """Combines ``(item_id, first-interaction time)`` of every item into the new-item set.

    The accumulator is two flat arrays (times, ID hashes): 16 bytes per item.
    """

    def __init__(self, fraction: float | None, after: int | None):
        self.fraction, self.after = fraction, after

    def create_accumulator(self) -> tuple[array, array]:
        return array("q"), array("Q")

    def add_input(self, accumulator, element):
        item_id, first_time = element
        accumulator[0].append(first_time)
        accumulator[1].append(stable_hash(item_id))
        return accumulator

    def merge_accumulators(self, accumulators):
        times, hashes = self.create_accumulator()
        for part_times, part_hashes in accumulators:
            times.extend(part_times)
            hashes.extend(part_hashes)
        return times, hashes

    def extract_output(self, accumulator) -> ExcludedItems:
        times = (
            np.frombuffer(accumulator[0], dtype=np.int64) if len(accumulator[0]) else np.zeros(0, np.int64)
        )
        hashes = (
            np.frombuffer(accumulator[1], dtype=np.uint64) if len(accumulator[1]) else np.zeros(0, np.uint64)
        )
        if self.after is not None:
            chosen = hashes[times > self.after]
        else:
            order = np.lexsort((hashes, times))  # by time, then hash; the last ones are newest
            count = new_item_count(self.fraction, len(hashes))
            chosen = hashes[order[len(order) - count :]] if count else hashes[:0]
        chosen = np.sort(chosen)
        if len(chosen) > 1 and bool((chosen[1:] == chosen[:-1]).any()):
            raise HashCollisionError("two new items share an ID hash")
        return ExcludedItems(chosen, np.zeros(len(chosen), dtype=np.uint8), (NEW_ITEM,))


def no_new_items() -> ExcludedItems:
    """The empty new-item set (the split is off)."""
    return ExcludedItems(np.zeros(0, np.uint64), np.zeros(0, np.uint8), (NEW_ITEM,))
