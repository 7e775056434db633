"""Items: where their videos are, their decoded frames, the item catalogue and the item shards.

Frames never go through a shuffle. Each decoded item's JPEGs are written straight from the
decoding worker to a small fragment file (a run of tar members) under the job's work folder;
only its path and frame sizes travel on. Once every item's fate is known, the catalogue assigns
dense indices and cuts shards by exact byte size and count; then each item shard is assembled
in parallel by copying fragments in, and the byte offset of every sample is recorded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import storage
from transforms.failures import failure
from transforms.format import item_frame_member, metadata_member, sanitize_key
from transforms.sample_frames import SampleMidFrames
from transforms.tar_shards import encode_members, read_members

FAILED = "failed"


class EncodedItem(NamedTuple):
    """An item that made it into the dataset, and where its frame members are.

    ``fragment`` is a file holding the item's ``{key}.{j}.jpg`` tar members: a fragment this run
    wrote, or (``fragment_offset``/``fragment_size`` set) the item's sample in an earlier version's
    item shard, which lets an incremental run reuse frames without decoding. None in ID-only datasets.
    """

    item_id: str
    fragment: str | None = None
    frame_sizes: tuple[int, ...] = ()
    sampler_meta: dict | None = None
    fragment_offset: int = 0
    fragment_size: int | None = None
    fingerprint: str | None = None


class ItemRow(NamedTuple):
    """An item's catalogue entry: everything items.parquet and the shard writers need."""

    item_id: str
    item_index: int
    title: str | None
    popularity: int
    source: EncodedItem
    shard: str | None
    offset: int | None = None
    size: int | None = None

    @property
    def frame_sizes(self) -> tuple[int, ...]:
        return self.source.frame_sizes


def read_frame_members(item: EncodedItem) -> list[tuple[str, bytes]]:
    """The ``(name, jpeg)`` frame members of an encoded item, from its fragment."""
    if item.fragment_size is None:
        data = storage.read_bytes(item.fragment)
    else:
        data = storage.read_range(item.fragment, item.fragment_offset, item.fragment_size)
    return [(name, payload) for name, payload in read_members(data) if name.endswith(".jpg")]


# --------------------------------------------------------------------------------------------------
# Where videos are
# --------------------------------------------------------------------------------------------------


def video_uri(root: str, pattern: str, item_id: str) -> str:
    """``root/pattern`` with ``{item}`` replaced by the item ID (``{key}``: its sanitised key)."""
    return storage.join(root, pattern.format(item=item_id, key=sanitize_key(item_id)))


def escapes_folder(relative: str) -> bool:
    """True when the relative path ``relative`` would name a file outside its folder (``..``,
    an absolute path, a URL)."""
    normal = posixpath.normpath(relative)
    return relative.startswith("/") or "://" in relative or normal == ".." or normal.startswith("../")


def _pattern_uri(item_id: str, root: str, pattern: str):
    """``(item_id, uri)``, or a ``bad_item_id`` failure when the ID would lead outside ``root``."""
    relative = pattern.format(item=item_id, key=sanitize_key(item_id))
    if escapes_folder(relative) or "\x00" in relative:
        message = f"the item ID makes the video path {relative!r}, outside the video folder"
        yield beam.pvalue.TaggedOutput(
            FAILED, failure("item", "locate", "bad_item_id", message, item_id=item_id)
        )
        return
    yield item_id, storage.join(root, relative)


def parse_video_mapping(text: str, mapping_path: str) -> dict[str, str]:
    """``item -> uri`` from a CSV with a header naming ``item`` and ``uri`` (or ``video``/``path``) columns.

    Relative URIs are resolved against the mapping file's folder.
    """
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower().lstrip("\ufeff") for h in next(reader, [])]
    try:
        item_col = next(header.index(n) for n in ("item", "item_id") if n in header)
        uri_col = next(header.index(n) for n in ("uri", "video", "path", "url") if n in header)
    except StopIteration:
        raise ValueError(f"{mapping_path}: header {header} needs an item column and a uri column") from None
    folder = mapping_path.rsplit("/", 1)[0] if "/" in mapping_path else "."
    mapping = {}
    for fields in reader:
        if len(fields) > max(item_col, uri_col) and fields[item_col].strip():
            uri = fields[uri_col].strip()
            mapping[fields[item_col].strip()] = (
                uri if storage.is_remote(uri) or uri.startswith("/") else storage.join(folder, uri)
            )
    return mapping


def parse_titles(text: str, titles_path: str) -> dict[str, str]:
    """``item -> title`` from a CSV with ``item`` and ``title`` columns (CSV quoting, any UTF-8)."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower().lstrip("\ufeff") for h in next(reader, [])]
    if "title" not in header or not ({"item", "item_id"} & set(header)):
        raise ValueError(f"{titles_path}: header {header} needs item and title columns")
    item_col = header.index("item") if "item" in header else header.index("item_id")
    title_col = header.index("title")
    return {
        fields[item_col].strip(): fields[title_col]
        for fields in reader
        if len(fields) > max(item_col, title_col) and fields[item_col].strip()
    }


class LocateVideos(beam.PTransform):
    """PCollection[item_id] -> (item_id, uri) (main) + failure dicts (``failed``) for items without one.

    Either ``root`` + ``pattern`` (every item gets a URI inside ``root``; a missing file fails later
    as ``not_found``; an ID that would lead outside ``root`` fails as ``bad_item_id``) or
    ``mapping_path``, a CSV of item -> uri (no entry: ``no_video``; a URI outside the CSV's folder:
    ``bad_uri``, unless ``allow_any_uri``).
    """

    def __init__(self, root: str | None, pattern: str, mapping_path: str | None, allow_any_uri: bool = False):
        super().__init__()
        self.root, self.pattern, self.mapping_path = root, pattern, mapping_path
        self.allow_any_uri = allow_any_uri

    def expand(self, item_ids):
        if self.mapping_path is None:
            return item_ids | "ApplyPattern" >> beam.FlatMap(
                _pattern_uri, self.root, self.pattern
            ).with_outputs(FAILED, main="located")
        mapping_path = self.mapping_path
        inside = None if self.allow_any_uri else mapping_folder(mapping_path)
        mapping = (
            item_ids.pipeline
            | "MappingFile" >> beam.Create([mapping_path])
            | "ReadMapping"
            >> beam.FlatMap(
                lambda path: parse_video_mapping(storage.read_bytes(path).decode("utf-8"), path).items()
            )
        )
        return (
            {"needed": item_ids | "KeyNeeded" >> beam.Map(lambda item: (item, None)), "uri": mapping}
            | "JoinMapping" >> beam.CoGroupByKey()
            | "KeepNeeded" >> beam.FlatMap(_mapped_uri, inside).with_outputs(FAILED, main="located")
        )


def mapping_folder(mapping_path: str) -> str:
    """The folder of a video map: where its relative URIs resolve and its URIs must stay."""
    return mapping_path.rsplit("/", 1)[0] if "/" in mapping_path else "."


def _inside(uri: str, folder: str) -> bool:
    if storage.is_remote(uri) != storage.is_remote(folder):
        return False
    if storage.is_remote(uri):
        return posixpath.normpath(uri.split("://", 1)[1]).startswith(
            folder.split("://", 1)[1].rstrip("/") + "/"
        )
    return os.path.abspath(uri).startswith(os.path.abspath(folder).rstrip("/") + "/")


def _mapped_uri(joined: tuple[str, dict], inside: str | None):
    """``(item_id, uri)`` of a needed item; ``no_video`` or (with ``inside``, the only folder allowed)
    ``bad_uri`` failures."""
    item_id, sides = joined
    if not sides["needed"]:
        return
    if sides["uri"]:
        uri = sorted(sides["uri"])[0]
        if inside is not None and not _inside(uri, inside):
            message = (
                f"the video map names {uri}, outside its folder {inside}; pass --allow-any-uri to allow it"
            )
            yield beam.pvalue.TaggedOutput(
                FAILED, failure("item", "locate", "bad_uri", message, item_id=item_id)
            )
            return
        yield item_id, uri
    else:
        yield beam.pvalue.TaggedOutput(
            FAILED,
            failure(
                "item", "locate", "no_video", "the video mapping has no entry for this item", item_id=item_id
            ),
        )


# --------------------------------------------------------------------------------------------------
# Frames -> fragments
# --------------------------------------------------------------------------------------------------


def frame_member_names(key: str, count: int) -> list[str]:
    return [item_frame_member(key, j) for j in range(count)]


def fragment_path(work_dir: str, item_id: str) -> str:
    return storage.join(work_dir, "fragments", sanitize_key(item_id) + ".tar")


class WriteFrameFragments(beam.DoFn):
    """(item_id, FrameSample) -> EncodedItem, after writing the frames to ``work_dir/fragments/``.

    Prints a progress line every ``progress_every`` videos a worker has written (0: never).
    """

    def __init__(self, work_dir: str, progress_every: int = 0):
        self.work_dir = work_dir
        self.progress_every = progress_every
        self.items_encoded = Metrics.counter("videorec", "items_encoded")

    def setup(self):
        self.written, self.started = 0, time.monotonic()

    def process(self, sampled):
        item_id, sample = sampled
        names = frame_member_names(sanitize_key(item_id), len(sample.frames))
        path = fragment_path(self.work_dir, item_id)
        storage.write_bytes(path, encode_members(zip(names, sample.frames, strict=True)))
        self.items_encoded.inc()
        self.report_progress()
        yield EncodedItem(item_id, path, tuple(len(f) for f in sample.frames), sample.deterministic_meta())

    def report_progress(self) -> None:
        self.written += 1
        if self.progress_every and self.written % self.progress_every == 0:
            rate = self.written / (time.monotonic() - self.started)
            print(
                f"ingest: a worker has encoded {self.written} videos ({rate:.1f}/s)",
                file=sys.stderr,
                flush=True,
            )


# --------------------------------------------------------------------------------------------------
# Catalogue and item shards
# --------------------------------------------------------------------------------------------------


def item_json(row: ItemRow) -> bytes:
    document = {
        "item_id": row.item_id,
        "item_index": row.item_index,
        "title": row.title,
        "frames": len(row.frame_sizes),
        "sampler": row.source.sampler_meta or {},
    }
    return json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")


def item_sample_members(row: ItemRow) -> list[tuple[str, int]]:
    key = sanitize_key(row.item_id)
    return [(metadata_member(key), len(item_json(row)))] + list(
        zip(frame_member_names(key, len(row.frame_sizes)), row.frame_sizes, strict=True)
    )


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


class DescribeItemsWithoutFrames(beam.PTransform):
    """PCollection[item_id] -> EncodedItem without frames (ID-only datasets)."""

    def expand(self, item_ids):
        encoded = Metrics.counter("videorec", "items_encoded")

        def describe(item_id: str) -> EncodedItem:
            encoded.inc()
            return EncodedItem(item_id)

        return item_ids | "NoFrames" >> beam.Map(describe)


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

        table = read_table(version, read_manifest(version), "items", ["item_id", "shard", "offset", "size"])
        frames = {
            row["item_id"]: (storage.join(version, row["shard"]), row["offset"], row["size"])
            for row in table.to_pylist()
            if row["shard"]
        }
        return cls(previous_items(version), frames)


def reused_item(item_id: str, fingerprint: str, where: tuple[str, int, int]) -> EncodedItem:
    """An item whose frames are taken from its sample in an earlier version's item shard."""
    shard, offset, size = where
    members = read_members(storage.read_range(shard, offset, size))
    meta = json.loads(next(data for name, data in members if name.endswith(".json")))
    sizes = tuple(len(data) for name, data in members if name.endswith(".jpg"))
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


class EncodeItems(beam.PTransform):
    """PCollection[item_id] -> (EncodedItem, failure dicts): locate, decode once, write frame fragments.

    A ``Reshuffle`` of the IDs spreads the decoding over all workers; frames go straight from the
    decoder to a fragment file in the same fused stage, never into a shuffle.
    """

    def __init__(
        self,
        videos: str | None,
        pattern: str,
        video_map: str | None,
        sampler_config,
        work_dir: str,
        progress_every: int = 0,
        reuse: ReuseFrom | None = None,
        allow_any_uri: bool = False,
        max_attempts: int | None = None,
    ):
        super().__init__()
        self.locate = LocateVideos(videos, pattern, video_map, allow_any_uri)
        self.sampler_config = sampler_config
        self.sample = SampleMidFrames(sampler_config)
        self.write = WriteFrameFragments(work_dir, progress_every)
        self.reuse = reuse
        self.max_attempts = max_attempts

    def expand(self, item_ids):
        located = item_ids | "LocateVideos" >> self.locate
        if self.reuse is None:
            return self.decode(located.located, located[FAILED])
        return self.decode_changed(located.located, located[FAILED])

    def decode(self, videos, failures):
        """Decode every video: (item_id, uri) -> (EncodedItem, failure dicts)."""
        sampled = videos | "SpreadVideos" >> beam.Reshuffle() | "SampleMidFrames" >> self.sample
        encoded = sampled.sampled | "WriteFrameFragments" >> beam.ParDo(self.write)
        return encoded, (failures, sampled.failed) | "AllItemFailures" >> beam.Flatten()

    def decode_changed(self, videos, failures):
        """Reuse the frames of unchanged videos, decode the rest; record fingerprints and attempts."""
        from transforms.fingerprint import FingerprintVideos

        fingerprinted = videos | "FingerprintVideos" >> FingerprintVideos(self.sampler_config.config_hash())
        planned = (
            {"uri": videos, "fingerprint": fingerprinted.fingerprints}
            | "JoinFingerprints" >> beam.CoGroupByKey()
            | "PlanDecodes"
            >> beam.ParDo(PlanDecodes(self.reuse, self.max_attempts)).with_outputs(
                "reused", "attempts", "given_up", main="decode"
            )
        )
        decoded, decode_failures = self.decode(planned.decode, failures)
        recorded = (
            {
                "item": decoded | "KeyDecoded" >> beam.Map(lambda item: (item.item_id, item)),
                "failure": decode_failures
                | "KeyFailure" >> beam.Map(lambda record: (record["item_id"], record)),
                "attempt": planned.attempts,
            }
            | "JoinAttempts" >> beam.CoGroupByKey()
            | "RecordFingerprints" >> beam.FlatMap(with_fingerprints).with_outputs(FAILED, main="items")
        )
        encoded = (recorded.items, planned.reused) | "DecodedAndReused" >> beam.Flatten()
        failed = (
            recorded[FAILED],
            fingerprinted.missing,
            planned.given_up,
        ) | "WithMissingVideos" >> beam.Flatten()
        return encoded, failed
