"""Incremental runs: fingerprint every video and reuse the frames of unchanged ones from the previous version.

What the previous version recorded of each item (``transforms.item_facts``) and this run's
fingerprints and decode attempts are all joined by key, never loaded whole by a worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from blobstore import ranged_reads
from dataformat.format import (
    EARLIER_VERSION_PREFIX,
    ITEM_FAILURES_TABLE,
    ITEM_SHARDS,
    is_earlier_version_path,
    is_frame_member,
    is_metadata_member,
)
from dataformat.manifest import format_version_of
from transforms.failures import failure
from transforms.item_facts import ItemFacts, previous_facts
from transforms.item_shards import FAILED, EncodedItem
from transforms.manifest import ReconciliationError, read_version_manifest
from transforms.tar_shards import read_members


@dataclass(frozen=True)
class ReuseFrom:
    """Turns on incremental decoding: fingerprint every video, reuse the frames of unchanged ones.

    Attributes:
        version: folder of the version to reuse frames from; None for a root's first version (every
            video is decoded, and fingerprints are recorded for the next run).
    """

    version: str | None

    def base_notice(self) -> str | None:
        """A progress line when the base version lists no failed videos apart (format 2, before the
        ``item_failures`` table): the videos that failed there are decoded again as new (attempt 1)."""
        if self.version is None:
            return None
        manifest = read_version_manifest(self.version)
        if ITEM_FAILURES_TABLE in manifest["tables"]:
            return None
        return (
            f"ingest: the base version {self.version} is format {format_version_of(manifest)}, which "
            "lists no failed videos apart: videos that failed there are decoded again as new (attempt 1)"
        )


def reused_item(item_id: str, fingerprint: str, where: tuple[str, int, int]) -> EncodedItem:
    """An item whose frames are taken from its sample in an earlier version's item shard."""
    url, offset, size = where
    shard = resolved_url(url)
    members = read_members(ranged_reads.read_range(shard, offset, size))
    meta = json.loads(next(data for name, data in members if is_metadata_member(name)))
    sizes = tuple(len(data) for name, data in members if is_frame_member(name))
    ref = EARLIER_VERSION_PREFIX + "/".join(shard.split("/")[-3:])  # ../<version_id>/items/items-N.tar
    return EncodedItem(item_id, shard, sizes, meta["sampler"], offset, size, fingerprint, ref)


def resolved_url(url: str) -> str:
    """``url`` with its ``..`` parts resolved (an item shard an earlier version reused in place is
    ``<root>/versions/<B>/../<A>/items/...`` once joined to its folder; GCS names do not resolve ``..``)."""
    parts: list[str] = []
    for part in url.split("/"):
        if part == ".." and parts and parts[-1] not in ("", ".."):
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def earlier_shard_entries(base_version: str, refs: Iterable[str]) -> list[dict]:
    """Manifest entries (path, samples, bytes, sha256) of the earlier versions' item shards ``refs``
    that a ``reference``-layout version indexes in place, as the base version's manifest lists them,
    with paths seen from a sibling version folder. ``ReconciliationError`` if one is not listed there."""
    base_id = resolved_url(base_version).rstrip("/").rsplit("/", 1)[-1]
    listed = {}
    for entry in read_version_manifest(base_version)["shards"][ITEM_SHARDS]:
        path = entry["path"]
        path = path if is_earlier_version_path(path) else f"{EARLIER_VERSION_PREFIX}{base_id}/{path}"
        listed[path] = {**entry, "path": path}
    missing = sorted(set(refs) - set(listed))
    if missing:
        raise ReconciliationError(
            f"reused item shards not listed by the base version {base_version}: {missing[:5]}"
        )
    return [listed[ref] for ref in sorted(set(refs))]


class PlanDecodes(beam.DoFn):
    """(item_id, {"uri": [uri], "fingerprint": [fp], "previous": [ItemFacts]}) -> to decode (main)
    ``(item_id, uri)``, ``reused`` EncodedItem, ``attempts`` (item_id, (fp, n)) and ``given_up``
    failure dicts.

    The current video's fingerprint and what the previous version recorded of the item
    (``transforms.item_facts.ReadPreviousItems``) are joined by key. An item whose fingerprint equals
    the one its frames were made from last time is reused; the rest are decoded, or given up after
    ``max_attempts`` failures of an unchanged video. Holds one item at a time.
    """

    def __init__(self, max_attempts: int | None = None):
        self.max_attempts = max_attempts
        self.items_reused = Metrics.counter("videorec", "items_reused")
        self.videos_retried = Metrics.counter("videorec", "videos_retried")
        self.videos_given_up = Metrics.counter("videorec", "videos_given_up")

    def process(self, joined: tuple[str, dict]):
        item_id, sides = joined
        if sides["uri"] and sides["fingerprint"]:  # else no video: FingerprintVideos recorded not_found
            yield from self.plan(
                item_id, sides["uri"][0], sides["fingerprint"][0], previous_facts(sides["previous"])
            )

    def plan(self, item_id: str, uri: str, fingerprint: str, previous: ItemFacts | None):
        """The outputs of one item with a video (see the class docstring)."""
        from transforms.fingerprint import plan_decodes

        before = {item_id: previous.plan_input} if previous else {}
        plan = plan_decodes(before, {item_id: fingerprint}, max_attempts=self.max_attempts)
        if plan.given_up:
            self.videos_given_up.inc()
            yield beam.pvalue.TaggedOutput(
                "given_up", given_up_failure(item_id, uri, previous, self.max_attempts)
            )
            return
        if plan.retries:
            self.videos_retried.inc()
        if plan.to_reuse and previous.frames:
            self.items_reused.inc()
            yield beam.pvalue.TaggedOutput("reused", reused_item(item_id, fingerprint, previous.frames))
            return
        yield beam.pvalue.TaggedOutput("attempts", (item_id, (fingerprint, plan.attempts.get(item_id, 1))))
        yield item_id, uri


def given_up_failure(item_id: str, uri: str, previous: ItemFacts, max_attempts: int) -> dict:
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
