"""Incremental runs: fingerprint every video and reuse the frames of unchanged ones from the previous version.

The previous version's per-item records are read by each worker in ``PlanDecodes.setup``; this
run's fingerprints and decode attempts are joined by key, never broadcast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import ranged_reads, storage
from transforms.failures import failure
from transforms.format import ITEMS_TABLE, is_frame_member, is_metadata_member
from transforms.item_shards import FAILED, EncodedItem
from transforms.tar_shards import read_members


@dataclass(frozen=True)
class ReuseFrom:
    """Turns on incremental decoding: fingerprint every video, reuse the frames of unchanged ones.

    Attributes:
        version: folder of the version to reuse frames from; None for a root's first version (every
            video is decoded, and fingerprints are recorded for the next run).
    """

    version: str | None

    def read(self) -> PreviousVersion:
        return PreviousVersion.read(self.version) if self.version else PreviousVersion({}, {})


@dataclass(frozen=True)
class PreviousVersion:
    """What an incremental run knows of the version it builds on.

    Attributes:
        items: ``item_id -> PreviousItem`` (fingerprint, status, attempts), from
            ``transforms.fingerprint.previous_items``.
        frames: ``item_id -> (item shard URL, offset, size)`` of every item with frames there.
    """

    items: dict
    frames: dict[str, tuple[str, int, int]]

    @classmethod
    def read(cls, version: str) -> PreviousVersion:
        from transforms.fingerprint import previous_items
        from transforms.manifest import read_manifest
        from transforms.tables import read_table

        table = read_table(
            version, read_manifest(version), ITEMS_TABLE, ["item_id", "shard", "offset", "size"]
        )
        frames = {
            row["item_id"]: (storage.join(version, row["shard"]), row["offset"], row["size"])
            for row in table.to_pylist()
            if row["shard"]
        }
        return cls(previous_items(version), frames)


def reused_item(item_id: str, fingerprint: str, where: tuple[str, int, int]) -> EncodedItem:
    """An item whose frames are taken from its sample in an earlier version's item shard."""
    shard, offset, size = where
    members = read_members(ranged_reads.read_range(shard, offset, size))
    meta = json.loads(next(data for name, data in members if is_metadata_member(name)))
    sizes = tuple(len(data) for name, data in members if is_frame_member(name))
    return EncodedItem(item_id, shard, sizes, meta["sampler"], offset, size, fingerprint)


class PlanDecodes(beam.DoFn):
    """(item_id, {"uri": [uri], "fingerprint": [fp]}) -> to decode (main) ``(item_id, uri)``,
    ``reused`` EncodedItem, and ``attempts`` (item_id, (fp, n)).

    The current video's fingerprint is joined by key. An item whose fingerprint equals the one its
    frames were made from last time is reused; the rest are decoded. Each worker reads what the
    previous version recorded in ``setup`` (it would be too big to travel in the job graph).
    """

    def __init__(self, reuse: ReuseFrom, max_attempts: int | None = None):
        self.reuse = reuse
        self.max_attempts = max_attempts
        self.previous = None
        self.items_reused = Metrics.counter("videorec", "items_reused")
        self.videos_retried = Metrics.counter("videorec", "videos_retried")
        self.videos_given_up = Metrics.counter("videorec", "videos_given_up")

    def setup(self):
        self.previous = self.reuse.read()

    def process(self, joined: tuple[str, dict]):
        item_id, sides = joined
        if sides["uri"] and sides["fingerprint"]:  # else no video: FingerprintVideos recorded not_found
            yield from self.plan(item_id, sides["uri"][0], sides["fingerprint"][0])

    def plan(self, item_id: str, uri: str, fingerprint: str):
        """The outputs of one item with a video (see the class docstring)."""
        from transforms.fingerprint import plan_decodes

        before = {item_id: self.previous.items[item_id]} if item_id in self.previous.items else {}
        plan = plan_decodes(before, {item_id: fingerprint}, max_attempts=self.max_attempts)
        if plan.given_up:
            self.videos_given_up.inc()
            yield beam.pvalue.TaggedOutput(
                "given_up", given_up_failure(item_id, uri, before[item_id], self.max_attempts)
            )
            return
        if plan.retries:
            self.videos_retried.inc()
        if plan.to_reuse and item_id in self.previous.frames:
            self.items_reused.inc()
            yield beam.pvalue.TaggedOutput(
                "reused", reused_item(item_id, fingerprint, self.previous.frames[item_id])
            )
            return
        yield beam.pvalue.TaggedOutput("attempts", (item_id, (fingerprint, plan.attempts.get(item_id, 1))))
        yield item_id, uri


def given_up_failure(item_id: str, uri: str, previous, max_attempts: int) -> dict:
    """The failure carried over for a video not decoded again: same reason, fingerprint and attempts."""
    message = (
        f"not decoded again: failed {previous.attempts} times ({previous.status}) and unchanged since "
        f"(--max-attempts {max_attempts}); it is tried again when the file changes"
    )
    return {
        **failure("item", "plan", previous.status, message, item_id=item_id, uri=uri),
        "fingerprint": previous.fingerprint,
        "attempts": previous.attempts,
    }


def with_fingerprints(joined: tuple[str, dict]):
    """Decoded items with the fingerprint they were made from, and decode failures with the
    fingerprint and attempt number the next run plans with; ``(item_id, {"item", "failure", "attempt"})``."""
    _, sides = joined
    attempt = sides["attempt"][0] if sides["attempt"] else None
    for item in sides["item"]:
        yield item._replace(fingerprint=attempt[0])
    for record in sides["failure"]:
        yield beam.pvalue.TaggedOutput(
            FAILED,
            record if attempt is None else {**record, "fingerprint": attempt[0], "attempts": attempt[1]},
        )
