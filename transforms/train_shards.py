"""Users: dense user indices, train shards and the sequences table, bucket by bucket.

Kept users are hashed into buckets (:mod:`transforms.buckets`), ranked, and each bucket writes
its part of the sequences table and its train shards: one sample per user with a training
window, its window as JSON, and in the ``embedded`` layout the frames of its items too (the
``reference`` layout leaves frames in the item shards alone; docs/FORMAT.md). Shards are cut by
exact sample byte size and count inside the bucket and numbered by a prefix sum over buckets, so
names and contents never depend on the runner (``reference`` shards are gzip-compressed tars:
mostly zero header and padding blocks around a few hundred bytes of JSON). Only IDs move through
the shuffle: in the ``embedded`` layout each train shard's frames are read back from the item
shards, sorted by offset and coalesced into few ranged reads per item shard; the ``reference``
layout reads no item shard.
Memory: one bucket's sequences plus one train shard's distinct item frames per worker.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from blobstore import ranged_reads
from dataformat.format import (
    ITEM_SHARD_PATTERN,
    SEQUENCES_TABLE,
    TRAIN_FRAMES_EMBEDDED,
    TRAIN_FRAMES_LAYOUTS,
    is_frame_member,
    metadata_member,
    sanitize_key,
    train_frame_member,
    train_shard_pattern,
)
from transforms import storage
from transforms.buckets import (
    CountBuckets,
    FirstShardNumbers,
    RankInBuckets,
    bucket_of,
    id_order_key,
    shard_ranges,
)
from transforms.item_lookup import ItemLookup
from transforms.reconcile import PLANNED_SHARDS, TRAIN_SAMPLES
from transforms.sequences import (
    UserSequence,
    batch_sequences,
    sequence_user_id,
    train_window,
)
from transforms.tables import sequences_table, write_table_part
from transforms.tar_shards import TarShardWriter, cut_shards, read_members, sample_size

MIN_WINDOW = 2  # one input item and one target


class TrainSample(NamedTuple):
    """A user's training sample, before frames are attached."""

    user_id: str
    user_index: int
    item_ids: tuple[str, ...]
    item_indices: tuple[int, ...]
    timestamps: tuple[int, ...]


def make_train_sample(sequence: UserSequence, user_index: int, items: ItemLookup, max_seq_len: int):
    """The sample of a user whose window has at least one target, else None."""
    window, times = train_window(sequence, max_seq_len)
    if len(window) < MIN_WINDOW:
        return None
    return TrainSample(sequence.user_id, user_index, window, tuple(items.item_indices(window)), times)


def sample_json(sample: TrainSample, embed_frames: bool) -> bytes:
    """A train sample's JSON. ``reference`` samples hold the user and the window's item indices only
    (item IDs are in the items table, timestamps in the sequences table): about 3x fewer bytes for
    the stream every loader worker reads each epoch. ``embedded`` samples keep format 2's document."""
    document = {
        "user_id": sample.user_id,
        "user_index": sample.user_index,
        "item_indices": list(sample.item_indices),
    }
    if embed_frames:
        document.update(item_ids=list(sample.item_ids), timestamps=list(sample.timestamps))
    return json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")


def distinct_items(sample: TrainSample) -> list[tuple[str, int]]:
    """``(item_id, item_index)`` of each distinct item in the window, by item index."""
    return sorted(set(zip(sample.item_ids, sample.item_indices, strict=True)), key=lambda pair: pair[1])


def sample_members(sample: TrainSample, items: ItemLookup, embed_frames: bool) -> list[tuple[str, int]]:
    """``(member name, size)`` of the sample: its JSON, then (``embed_frames``) frame j of each
    distinct item with frames."""
    key = sanitize_key(sample.user_id)
    members = [(metadata_member(key), len(sample_json(sample, embed_frames)))]
    for item_id, index in distinct_items(sample) if embed_frames else ():
        members += [
            (train_frame_member(key, index, j), size) for j, size in enumerate(items.frames_of(item_id)[3])
        ]
    return members


def read_item_frames(dataset_dir: str, items: ItemLookup, item_ids: Iterable[str]) -> dict[str, list[bytes]]:
    """``item_id -> JPEG frames`` read back from the item shards: one coalesced ranged read per shard."""
    by_shard: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for item_id in sorted(set(item_ids)):
        shard, offset, size, _ = items.frames_of(item_id)
        if shard is not None:
            by_shard[shard].append((item_id, offset, size))
    frames = {}
    for shard, wanted in sorted(by_shard.items()):
        url = storage.join(dataset_dir, ITEM_SHARD_PATTERN.format(shard))
        data = ranged_reads.read_ranges(url, [(offset, size) for _, offset, size in wanted])
        for (item_id, _, _), sample in zip(wanted, data, strict=True):
            frames[item_id] = [payload for name, payload in read_members(sample) if is_frame_member(name)]
    return frames


def ranked_users(first: int, packed: Sequence[bytes], items: ItemLookup, max_seq_len: int):
    """``[(sequence, user_index, sample or None)]`` of a bucket's packed sequences in rank order."""
    users = []
    for rank, sequence in enumerate(batch_sequences(packed)):
        user_index = first + rank
        users.append((sequence, user_index, make_train_sample(sequence, user_index, items, max_seq_len)))
    return users


def cut_user_bucket(
    bucket, first, packed, items: ItemLookup, max_seq_len, max_samples, max_bytes, embed_frames
):
    """``(bucket, first user index, packed sequences in rank order, shard starts over the samples)``.

    The bucket leaves as bytes (cheap to encode and hold between stages); the writer rebuilds the
    samples from them.
    """
    users = ranked_users(first, packed, items, max_seq_len)
    sizes = [sample_size(sample_members(s, items, embed_frames)) for _, _, s in users if s is not None]
    return bucket, first, tuple(packed), (cut_shards(sizes, max_samples, max_bytes) if sizes else [])


class _WriteUserBucket(beam.DoFn):
    """(bucket, first user index, packed sequences, shard starts) -> ``shards`` (train ShardInfo dicts),
    ``tables`` (sequences part info)."""

    def __init__(self, dataset_dir: str, max_seq_len: int, train_frames: str):
        self.dataset_dir = dataset_dir
        self.max_seq_len = max_seq_len
        self.embed_frames = train_frames == TRAIN_FRAMES_EMBEDDED
        self.pattern = train_shard_pattern(train_frames)
        self.samples_written = Metrics.counter("videorec", "train_samples")

    def process(self, cut, items: ItemLookup, first_shard: dict[int, int]):
        bucket, first, packed, starts = cut
        users = ranked_users(first, packed, items, self.max_seq_len)
        samples = [sample for _, _, sample in users if sample is not None]
        planned = {}  # shard path -> samples the cut put in it, for reconciliation
        for number, (start, end) in enumerate(shard_ranges(starts, len(samples))):
            shard_samples = samples[start:end]
            frames = {}
            if self.embed_frames:
                frames = read_item_frames(
                    self.dataset_dir, items, (i for s in shard_samples for i in s.item_ids)
                )
            shard_path = self.pattern.format(first_shard[bucket] + number)
            planned[shard_path] = end - start
            with TarShardWriter(self.dataset_dir, shard_path, compress=not self.embed_frames) as shard:
                for sample in shard_samples:
                    key = sanitize_key(sample.user_id)
                    shard.add(metadata_member(key), sample_json(sample, self.embed_frames))
                    for item_id, index in distinct_items(sample) if self.embed_frames else ():
                        for j, frame in enumerate(frames.get(item_id, ())):
                            shard.add(train_frame_member(key, index, j), frame)
                    shard.end_sample()
            self.samples_written.inc(shard.samples)
            yield beam.pvalue.TaggedOutput("shards", shard.info.to_dict())
        rows = [
            (s.user_id, index, items.item_indices(s.item_ids), s.item_ids, s.timestamps)
            for s, index, _ in users
        ]
        info = write_table_part(self.dataset_dir, SEQUENCES_TABLE, bucket, sequences_table(rows))
        part = {**info, "interactions": sum(len(r[2]) for r in rows)}
        yield beam.pvalue.TaggedOutput(
            "tables", {**part, PLANNED_SHARDS: planned, TRAIN_SAMPLES: len(samples)}
        )


class WriteUserShards(beam.PTransform):
    """Sequence batches (:class:`transforms.sequences.BuildUserSequences`) -> {"shards": train ShardInfo
    dicts, "tables": sequences part infos}.

    ``items`` is the singleton PCollection of the ``ItemLookup``: each item's index and frames.
    ``train_frames`` is the layout (``dataformat.format.TRAIN_FRAMES_LAYOUTS``): ``embedded`` copies
    each window's frames into its sample, ``reference`` writes the JSON alone, gzip-compressed.
    """

    def __init__(
        self, items, dataset_dir: str, max_seq_len: int, max_samples: int, max_bytes: int, train_frames: str
    ):
        super().__init__()
        if train_frames not in TRAIN_FRAMES_LAYOUTS:
            raise ValueError(
                f"train_frames is {train_frames!r}, not one of {', '.join(TRAIN_FRAMES_LAYOUTS)}"
            )
        self.items, self.dataset_dir, self.max_seq_len = items, dataset_dir, max_seq_len
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.train_frames, self.embed_frames = train_frames, train_frames == TRAIN_FRAMES_EMBEDDED

    def expand(self, sequences):
        items = beam.pvalue.AsSingleton(self.items)
        max_seq_len, embed_frames = self.max_seq_len, self.embed_frames
        buckets = beam.pvalue.AsSingleton(
            sequences
            | "EstimateSize"
            >> beam.Map(
                lambda batch, lookup: _estimated_size(batch, lookup, max_seq_len, embed_frames), items
            )
            | "UserBuckets" >> CountBuckets(self.max_samples, self.max_bytes)
        )
        cut = (
            sequences
            | "KeyByBucket" >> beam.FlatMap(split_by_user_bucket, buckets)
            | "RankUsers"
            >> RankInBuckets(lambda packed: id_order_key(sequence_user_id(packed)), batched=True)
            | "CutTrainShards"
            >> beam.Map(
                lambda ranked, lookup, *limits: cut_user_bucket(*ranked, lookup, *limits),
                items,
                self.max_seq_len,
                self.max_samples,
                self.max_bytes,
                embed_frames,
            )
        )
        first_shard = beam.pvalue.AsSingleton(cut | "FirstShards" >> FirstShardNumbers())
        written = cut | "WriteUserBucket" >> beam.ParDo(
            _WriteUserBucket(self.dataset_dir, self.max_seq_len, self.train_frames), items, first_shard
        ).with_outputs("shards", "tables")
        return {"shards": written.shards, "tables": written.tables}


def split_by_user_bucket(batch: tuple[bytes, ...], buckets: int) -> list[tuple[int, tuple[bytes, ...]]]:
    """``(user bucket, packed sequences of that bucket)`` for each user bucket a sequence batch touches."""
    by_bucket: dict[int, list[bytes]] = defaultdict(list)
    for packed in batch:
        by_bucket[bucket_of(sequence_user_id(packed), buckets)].append(packed)
    return [(bucket, tuple(packed)) for bucket, packed in sorted(by_bucket.items())]


def _estimated_size(
    batch: tuple[bytes, ...], items: ItemLookup, max_seq_len: int, embed_frames: bool
) -> tuple[int, int]:
    """``(users, sample bytes)`` of a sequence batch, with user index 0 (only the bucket count uses it)."""
    total = 0
    for sequence in batch_sequences(batch):
        sample = make_train_sample(sequence, 0, items, max_seq_len)
        total += 0 if sample is None else sample_size(sample_members(sample, items, embed_frames))
    return len(batch), total
