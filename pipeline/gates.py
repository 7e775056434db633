"""Gates: what a finished ingest job's counts must satisfy before its dataset is published.

A dataset that trips a gate is never swapped into ``--output`` nor published as ``LATEST``; the run
exits with status :data:`GATE_EXIT` and says which gate tripped, with the counts by reason:

- ``no_users``: no user was kept, so there is nothing to train on;
- ``rows``: more than ``max_dropped_fraction`` of the rows read were invalid (``ROW_REASONS``:
  unparseable, empty IDs, bad timestamps, quoted fields left open...);
- ``videos``: more than ``max_dropped_fraction`` of the items whose video was looked for failed
  (missing, undecodable, outside the video folder...).

Rows and items removed by the user's own filters (``--min-user-interactions``,
``--min-item-interactions``, duplicates, items only of dropped users) are choices, not losses, and
count toward no gate.
"""

from __future__ import annotations

from pipeline.report_text import by_reason
from transforms.interactions import ROW_REASONS
from transforms.item_filter import RARE_ITEM, UNUSED_ITEM

GATE_EXIT = 4
"""Exit status of ``videorec ingest`` when a gate refused the dataset (nothing was published)."""

FILTERED_ITEM_REASONS = (RARE_ITEM, UNUSED_ITEM)
"""Item failure reasons that are the user's filters, not lost videos."""


class GateTripped(Exception):
    """The dataset failed a gate; ``problems`` holds one line per tripped gate. Nothing was published."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("not published: " + "; ".join(problems))


def gate_problems(counts: dict, max_dropped_fraction: float) -> list[str]:
    """One line per gate the manifest ``counts`` trip (empty: publishable)."""
    problems = []
    if counts["users_kept"] == 0:
        dropped = counts["users_dropped"]
        problems.append(
            f"gate no_users: the dataset has no users ({counts['users_seen']} seen"
            + (f"; dropped: {by_reason(dropped, largest_first=True)}" if dropped else "")
            + ")"
        )
    invalid = {r: n for r, n in counts["rows_dropped"].items() if r in ROW_REASONS and n}
    rows_read = counts["rows_read"]
    if rows_read and sum(invalid.values()) > max_dropped_fraction * rows_read:
        problems.append(
            f"gate rows: {sum(invalid.values())} of {rows_read} rows were invalid "
            f"({sum(invalid.values()) / rows_read:.0%} > --max-dropped-fraction {max_dropped_fraction:g}; "
            f"{by_reason(invalid, largest_first=True)})"
        )
    lost = {r: n for r, n in counts["items_failed"].items() if r not in FILTERED_ITEM_REASONS and n}
    tried = counts["items_encoded"] + sum(lost.values())
    if tried and sum(lost.values()) > max_dropped_fraction * tried:
        problems.append(
            f"gate videos: {sum(lost.values())} of {tried} items failed "
            f"({sum(lost.values()) / tried:.0%} > --max-dropped-fraction {max_dropped_fraction:g}; "
            f"{by_reason(lost, largest_first=True)})"
        )
    return problems


def check_gates(manifest: dict, max_dropped_fraction: float) -> None:
    """Raise :class:`GateTripped` when the dataset of ``manifest`` trips a gate."""
    problems = gate_problems(manifest["counts"], max_dropped_fraction)
    if problems:
        raise GateTripped(problems)
