"""Which items survive before any video is decoded: interaction counts, the rarity filter, and the
items of users who are long enough to keep (plain functions, then the Beam transforms).

Inputs are :class:`transforms.sequences.GroupIntoHistories` batches. Every step counts per item
(:class:`transforms.bundle_counts.CountKeys`) or joins by item, so memory is O(items) per key,
never O(users).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.bundle_counts import CountKeys
from transforms.failures import failure
from transforms.item_lookup import ExcludedItems, excluded_items_of
from transforms.packed_rows import batch_item_ids, batch_user_items


def items_of_eligible_user(
    item_ids: Sequence[str],
    excluded_items: Mapping[str, str],
    min_length: int,
    new_items: ExcludedItems | None = None,
) -> list[str]:
    """The distinct items of a user (``item_ids``: the items of the time-ordered, deduplicated history)
    who still has ``min_length`` interactions without excluded items and held-out new items; the
    new items of such a user are named too (they stay candidates).

    Counts what :func:`transforms.new_items.hold_out_new_items` keeps (every row but the last that
    is a new item is held out), on item IDs alone: this runs for every user before decoding.
    """
    items = [item for item in item_ids if item not in excluded_items]
    kept = len(items)
    if new_items is not None and len(new_items) and items:
        kept = 1 + sum(item not in new_items for item in items[:-1])
    return sorted(set(items)) if kept >= min_length else []


class NeededItems(beam.PTransform):
    """History batches -> distinct item_id of users who pass the length filter before decoding.

    With ``new_items`` (singleton PCollection of the new-item set), the length filter counts the
    rows left after the new-item hold-out, as :class:`BuildUserSequences` does.
    """

    def __init__(self, excluded_items, min_length: int, new_items=None):
        super().__init__()
        self.excluded_items = excluded_items
        self.min_length = min_length
        self.new_items = new_items

    def expand(self, histories):
        extra = [] if self.new_items is None else [beam.pvalue.AsSingleton(self.new_items)]
        min_length = self.min_length
        return (
            histories
            | "ItemsOfEligibleUsers"
            >> CountKeys(
                lambda batch, excluded, *new: [
                    item
                    for user_items in batch_user_items(batch[1])
                    for item in items_of_eligible_user(user_items, excluded, min_length, *new)
                ],
                beam.pvalue.AsSingleton(excluded_items_of(self.excluded_items)),
                *extra,
            )
            | "Distinct" >> beam.Keys()
        )


RARE_ITEM = "too_few_interactions"
UNUSED_ITEM = "no_eligible_users"


class CountItemInteractions(beam.PTransform):
    """History batches -> (item_id, number of deduplicated interactions)."""

    def expand(self, histories):
        return histories | "CountPerItem" >> CountKeys(lambda batch: batch_item_ids(batch[1]))


def rare_items(item_count: tuple[str, int], min_item_interactions: int):
    """``(item_id, RARE_ITEM)`` for an item with fewer than the minimum interactions."""
    item_id, count = item_count
    if count < min_item_interactions:
        yield item_id, RARE_ITEM


def undecoded_item_failure(joined: tuple[str, dict], min_item_interactions: int):
    """The failure record of an item that is never decoded: too rare, or only in users dropped anyway."""
    item_id, sides = joined
    count = sum(sides["count"])
    if count < min_item_interactions:
        yield failure(
            "item",
            "filter",
            RARE_ITEM,
            f"{count} interactions, fewer than {min_item_interactions}",
            item_id=item_id,
        )
    elif not sides["needed"]:
        yield failure(
            "item", "filter", UNUSED_ITEM, "every user of this item has too few interactions", item_id=item_id
        )


class DroppedItemRecords(beam.PTransform):
    """(item_counts, needed item_ids) -> failure dicts for the items filtered out before decoding."""

    def __init__(self, min_item_interactions: int):
        super().__init__()
        self.min_item_interactions = min_item_interactions

    def expand(self, inputs):
        item_counts, needed = inputs
        seen = Metrics.counter("videorec", "items_seen")

        def count_seen(item_count):
            seen.inc()
            return item_count[0], item_count[1]

        return (
            {
                "count": item_counts | "CountSeen" >> beam.Map(count_seen),
                "needed": needed | "KeyNeeded" >> beam.Map(lambda item: (item, True)),
            }
            | "JoinNeeded" >> beam.CoGroupByKey()
            | "Undecoded" >> beam.FlatMap(undecoded_item_failure, self.min_item_interactions)
        )
