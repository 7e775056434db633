"""Training shards: one sample per user, its training window as JSON plus the frames of its items.

Users are ordered by ``user_index`` and shards are cut by exact sample byte size and count before
anything is written, so shard names and contents never depend on the runner. Only IDs move
through the shuffle: each shard writer reads the frames it needs back from the item shards, by
the byte offsets the item-shard writers recorded.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import storage
from transforms.item_shards import ItemRow
from transforms.keys import sanitize_key
from transforms.sequences import UserSequence, train_window
from transforms.tar_shards import TarShardWriter, cut_shards, read_members, sample_size

TRAIN_SHARD_PATTERN = "train/train-{:06d}.tar"
MIN_WINDOW = 2  # one input item and one target


class ItemFrames(NamedTuple):
    """Where an item's frames are: the slim per-item record train-shard writers get as a side input."""

    shard: str | None
    offset: int | None
    size: int | None
    frame_sizes: tuple[int, ...]


def item_frames(row: ItemRow) -> tuple[str, ItemFrames]:
    """``(item_id, ItemFrames)`` of a placed catalogue row."""
    return row.item_id, ItemFrames(row.shard, row.offset, row.size, row.frame_sizes)


class TrainSample(NamedTuple):
    """A user's training sample, before frames are attached."""

    user_id: str
    user_index: int
    item_ids: tuple[str, ...]
    item_indices: tuple[int, ...]
    timestamps: tuple[int, ...]


def make_train_sample(
    sequence: UserSequence, user_index: int, item_index: Mapping[str, int], max_seq_len: int
) -> TrainSample | None:
    """The sample of a user whose window has at least one target, else None."""
    items, times = train_window(sequence, max_seq_len)
    if len(items) < MIN_WINDOW:
        return None
    return TrainSample(sequence.user_id, user_index, items, tuple(item_index[i] for i in items), times)


def sample_json(sample: TrainSample) -> bytes:
    document = {
        "user_id": sample.user_id,
        "user_index": sample.user_index,
        "item_ids": list(sample.item_ids),
        "item_indices": list(sample.item_indices),
        "timestamps": list(sample.timestamps),
    }
    return json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")


def distinct_items(sample: TrainSample) -> list[tuple[str, int]]:
    """``(item_id, item_index)`` of each distinct item in the window, by item index."""
    return sorted(set(zip(sample.item_ids, sample.item_indices, strict=True)), key=lambda pair: pair[1])


def sample_members(sample: TrainSample, items: Mapping[str, ItemFrames]) -> list[tuple[str, int]]:
    """``(member name, size)`` of the sample: its JSON, then frame j of each distinct item."""
    key = sanitize_key(sample.user_id)
    members = [(f"{key}.json", len(sample_json(sample)))]
    for item_id, index in distinct_items(sample):
        members += [(f"{key}.{index}.{j}.jpg", size) for j, size in enumerate(items[item_id].frame_sizes)]
    return members


def shard_starts(sizes_by_user: Iterable[tuple[int, int]], max_samples: int, max_bytes: int) -> list[int]:
    """First ``user_index`` of each train shard, from ``(user_index, sample bytes)`` of every sample."""
    ordered = sorted(sizes_by_user)
    starts = cut_shards([size for _, size in ordered], max_samples, max_bytes)
    return [ordered[position][0] for position in starts]


def shard_of(user_index: int, starts: list[int]) -> str:
    return TRAIN_SHARD_PATTERN.format(bisect.bisect_right(starts, user_index) - 1)


class ItemFrameReader:
    """Reads an item's frames back from its item shard, keeping the most recent items in memory."""

    def __init__(self, dataset_dir: str, cache_items: int = 256):
        self.dataset_dir = dataset_dir
        self.cache_items = cache_items
        self._cache: OrderedDict[str, list[bytes]] = OrderedDict()

    def frames(self, item_id: str, where: ItemFrames) -> list[bytes]:
        if item_id in self._cache:
            self._cache.move_to_end(item_id)
            return self._cache[item_id]
        data = storage.read_range(storage.join(self.dataset_dir, where.shard), where.offset, where.size)
        frames = [payload for name, payload in read_members(data) if name.endswith(".jpg")]
        self._cache[item_id] = frames
        if len(self._cache) > self.cache_items:
            self._cache.popitem(last=False)
        return frames


class _WriteTrainShard(beam.DoFn):
    """(shard path, TrainSamples) -> ShardInfo dict, reading frames from item shards."""

    def __init__(self, dataset_dir: str):
        self.dataset_dir = dataset_dir
        self.samples_written = Metrics.counter("videorec", "train_samples")

    def process(self, grouped: tuple[str, Iterable[TrainSample]], items: Mapping[str, ItemFrames]):
        shard_path, samples = grouped
        reader = ItemFrameReader(self.dataset_dir)
        with TarShardWriter(self.dataset_dir, shard_path) as shard:
            for sample in sorted(samples, key=lambda s: s.user_index):
                key = sanitize_key(sample.user_id)
                shard.add(f"{key}.json", sample_json(sample))
                for item_id, index in distinct_items(sample):
                    where = items[item_id]
                    if where.shard is None:
                        continue
                    for j, frame in enumerate(reader.frames(item_id, where)):
                        shard.add(f"{key}.{index}.{j}.jpg", frame)
                shard.end_sample()
                self.samples_written.inc()
        yield shard.info.to_dict()


class WriteTrainShards(beam.PTransform):
    """PCollection[TrainSample] -> ShardInfo dict per train shard.

    ``items`` is a side input of ``(item_id, ItemFrames)``: where each item's frames are.
    """

    def __init__(self, items, dataset_dir: str, max_samples: int, max_bytes: int):
        super().__init__()
        self.items = items
        self.dataset_dir = dataset_dir
        self.max_samples = max_samples
        self.max_bytes = max_bytes

    def expand(self, samples):
        items = beam.pvalue.AsDict(self.items)
        starts = (
            samples
            | "SampleSizes"
            >> beam.Map(lambda s, rows: (s.user_index, sample_size(sample_members(s, rows))), items)
            | "AllSizes" >> beam.combiners.ToList()
            | "CutShards" >> beam.Map(shard_starts, self.max_samples, self.max_bytes)
        )
        return (
            samples
            | "AssignShard"
            >> beam.Map(lambda s, st: (shard_of(s.user_index, st), s), beam.pvalue.AsSingleton(starts))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteTrainShard(self.dataset_dir), items)
        )
