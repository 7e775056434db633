"""Streaming training data: WebDataset train shards -> batches of user windows (+ frames).

Stages, per rank and per loader worker (all stock webdataset pieces except the shard
order and the batch decode):

    shard list (seeded shuffle per epoch and pass) [-> split by node -> split by worker]
      -> tar samples -> sample shuffle buffer -> raw batches -> this reader's batches
      -> decode JSON + JPEG (corrupt samples dropped and counted) -> tensors

Two orders. **Global** (``global_order``; train shards without frames): every reader reads the
whole JSON sample stream, cut into global batches the same way on any world size, and decodes only
its own batches (``trainer.sample_order``); a run resumes on any number of ranks. **Split** (shards
that embed frames): each rank x worker group reads its share of the shards; global batch ``b`` is
per-rank batch ``b // world``, from logical worker ``b % num_workers`` (a resumed run renumbers the
DataLoader's workers so the same order continues), and a run resumes exactly on the same world size
only. Every rank yields the same number of batches per epoch (split: shards re-read in new passes
when they run out), so DDP ranks never wait on each other; already-trained batches are skipped
*before* decoding.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dataformat.format import METADATA_FIELD, is_metadata_member, train_frame_prefix
from trainer import storage
from trainer.config import DataConfig
from trainer.frames import FrameTransform, decode_frames, frames_of, sample_generator
from trainer.item_store import ItemLost, ItemStore
from trainer.sample_order import counted, cut_batches, rank_batches
from trainer.shard_reader import ReadErrors, shard_samples

log = logging.getLogger(__name__)


@dataclass
class StreamPosition:
    """Where training stands: ``batches`` global batches of ``epoch`` trained (all ranks together),
    by a run of ``world_size`` ranks with ``num_workers`` loader workers each."""

    epoch: int = 0
    batches: int = 0
    num_workers: int = 0
    world_size: int = 1

    def to_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "batches": self.batches,
            "num_workers": self.num_workers,
            "world_size": self.world_size,
        }


def expand_shard_urls(pattern: str) -> list[str]:
    """``pattern`` as a URL list: brace patterns (``train-{000000..000009}.tar``) and ``::`` separators."""
    return wds.shardlists.expand_urls(pattern)


def decode_window(sample: dict, max_seq_len: int) -> list[int]:
    """The last ``max_seq_len + 1`` item indices of a train sample's JSON (raises on bad content)."""
    meta = json.loads(sample[METADATA_FIELD])
    items = [int(i) for i in meta["item_indices"]][-(max_seq_len + 1) :]
    if len(items) < 2:
        raise ValueError(f"{sample.get('__key__')}: window of {len(items)} items has no training target")
    if min(items) < 1:
        raise ValueError(f"{sample.get('__key__')}: item index < 1 in window")
    return items


class TrainStream(IterableDataset):
    """One rank's training batches for one epoch of ``batches_per_epoch`` global batches, starting
    after the ``position.batches`` trained (see the module docstring for the two orders).

    Yields dicts: ``items`` long ``[B, L+1]`` (right-padded with 0), ``unique_items`` long
    ``[U]``, ``frames`` uint8 ``[U, T, 3, S, S]`` (or ``jpegs``: per unique item, its JPEG
    bytes, when decoding on the GPU; neither without frames), ``skipped`` (corrupt samples
    dropped from this batch), ``read_errors`` (shard reads that failed since the previous
    batch of this worker), ``bad_shards`` (messages naming shards whose size or sha256 is not
    the manifest's, ``trainer.shard_reader``), ``lost_items`` (one line per item of the batch whose
    frames could not be read from ``item_store``; its samples are counted in ``skipped``) and
    ``batch_index`` (the batch's number within the epoch: global in the global order, per rank in
    the split order) and ``sample_keys`` (the keys of the samples read for it, corrupt ones
    included). ``shard_entries`` (URL -> manifest entry) turns those checks on.
    ``batches_per_step`` (gradient accumulation): in the global order every rank yields a whole
    number of steps, empty batches past the epoch's end.

    ``with_frames``: read the items' frames, from ``item_store`` when one is given (only the JSON
    members of the train samples are then read; each unique item of a batch is read and decoded
    once), else from the frames the train samples embed. Either way an item's crop and flip come
    from ``sample_generator(seed, epoch, "<key>/<item>")``, ``key`` being the first sample of the
    batch that holds it, so the same seed gives the same frames from either layout.

    A batch may hold no samples (every one was corrupt, or every shard was refused: then the
    remaining batches of the epoch are empty and carry ``bad_shards``).
    """

    def __init__(
        self,
        urls: list[str],
        config: DataConfig,
        *,
        seed: int,
        max_seq_len: int,
        batches_per_epoch: int,
        with_frames: bool,
        position: StreamPosition,
        rank: int = 0,
        world_size: int = 1,
        shard_entries: dict[str, dict] | None = None,
        item_store: ItemStore | None = None,
        global_order: bool = False,
        batches_per_step: int = 1,
    ):
        if not urls:
            raise ValueError("no train shards to read")
        self.item_store = item_store if with_frames else None
        self.shard_entries = dict(shard_entries or {})
        self.urls = list(urls)
        self.config = config
        self.seed = seed
        self.max_seq_len = max_seq_len
        self.batches_per_epoch = batches_per_epoch
        self.with_frames = with_frames and item_store is None  # frames read from the samples
        self.position = position
        self.rank = rank
        self.world_size = world_size
        self.global_order, self.batches_per_step = global_order, batches_per_step
        self.transform = FrameTransform(
            config.frame_size, squash=config.squash, train=True, augment=config.augment
        )

    def __iter__(self) -> Iterator[dict]:
        storage.register_webdataset_openers()
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        errors = ReadErrors()
        if self.global_order:
            position, size = self.position.batches, self.batches_per_epoch
            wanted = rank_batches(position, size, self.rank, self.world_size, self.batches_per_step)
            passes = self._shuffled_passes(0, 1, errors)
            raw_batches = cut_batches(passes, self.config.batch_size, wanted[worker::workers], size, errors)
        else:
            raw_batches = self._split_batches(worker, workers, errors)
        for batch_index, raw in raw_batches:
            batch = self._decode_batch(raw, batch_index)
            keys = [sample.get("__key__") for sample in raw]
            yield dict(
                batch, sample_keys=keys, read_errors=errors.take(), bad_shards=errors.take_mismatched()
            )

    def _split_batches(self, worker: int, workers: int, errors: ReadErrors) -> Iterator[tuple[int, list]]:
        """(per-rank batch number, samples) of this worker in the split order; empty once the shards
        ran dry (every one was refused)."""
        done, total = self.position.batches // self.world_size, self.batches_per_epoch // self.world_size
        worker = (worker + done) % workers
        group, groups = self.rank * workers + worker, self.world_size * workers
        skip = len(range(worker, done, workers))
        samples = itertools.chain.from_iterable(self._shuffled_passes(group, groups, errors))
        raw_batches = wds.filters.batched(self.config.batch_size, collation_fn=list, partial=False)(samples)
        raw_batches = itertools.islice(raw_batches, skip, None)
        for batch_index in range(worker + skip * workers, total, workers):
            yield batch_index, next(raw_batches, [])

    def _shuffled_passes(self, group: int, groups: int, errors: ReadErrors) -> Iterator[Iterator[dict]]:
        """Endless passes over this group's share of the shards, each shuffled on its own."""
        epoch = self.position.epoch
        split_shards = len(self.urls) >= groups
        select = None if self.with_frames else is_metadata_member
        for repeat in itertools.count():
            urls = list(self.urls)
            if self.config.shuffle_shards:
                random.Random(f"shards/{self.seed}/{epoch}/{repeat}").shuffle(urls)
            if split_shards:
                urls = urls[group::groups]
            samples = shard_samples(urls, self.shard_entries, errors.handler, select)
            if not split_shards:
                samples = itertools.islice(samples, group, None, groups)
            if self.config.shuffle_buffer > 1:
                rng = random.Random(f"samples/{self.seed}/{epoch}/{repeat}/{group}")
                buffer = self.config.shuffle_buffer
                samples = wds.filters.shuffle(buffer, initial=buffer, rng=rng)(samples)
            produced = [0]
            yield counted(samples, produced)
            if not produced[0] and errors.mismatched:
                return  # every shard was refused; the batches say why
            if not produced[0]:
                raise RuntimeError(f"train shards yielded no samples for worker group {group}/{groups}")

    def _decode_batch(self, raw: list[dict], batch_index: int) -> dict:
        if self.item_store is not None:
            windows, item_frames, skipped, lost = self._store_windows(raw)
        else:
            (windows, item_frames, skipped), lost = self._sample_windows(raw), []
        width = self.max_seq_len + 1
        items = torch.zeros(len(windows), width, dtype=torch.long)
        for row, window in enumerate(windows):
            items[row, : len(window)] = torch.tensor(window)
        unique = torch.unique(items[items > 0])
        batch = {
            "items": items,
            "unique_items": unique,
            "skipped": skipped,
            "lost_items": lost,
            "batch_index": batch_index,
        }
        if item_frames and len(unique):
            ordered = [item_frames[int(i)] for i in unique]
            if self.config.decode_device == "cpu":
                batch["frames"] = torch.stack(ordered)
            else:
                batch["jpegs"] = ordered
        return batch

    def _sample_windows(self, raw: list[dict]) -> tuple[list[list[int]], dict, int]:
        """(windows, item -> frames, skipped samples) with the frames the samples embed."""
        windows, item_frames, skipped = [], {}, 0
        for sample in raw:
            try:
                window = decode_window(sample, self.max_seq_len)
                frames = self._frames(sample, window, item_frames) if self.with_frames else {}
            except Exception as exn:  # a corrupt sample must never stop training
                log.warning("skipping corrupt train sample %s: %r", sample.get("__key__"), exn)
                skipped += 1
                continue
            windows.append(window)
            item_frames.update(frames)
        return windows, item_frames, skipped

    def _store_windows(self, raw: list[dict]) -> tuple[list[list[int]], dict, int, list[str]]:
        """(windows, item -> frames, skipped samples, lost-item lines) with each unique item of the
        batch read from the item store and decoded once; a sample holding an item that cannot be
        read or decoded is skipped (counted), and the item named in the lines."""
        windows, first_key, skipped = [], {}, 0
        for sample in raw:
            try:
                window = decode_window(sample, self.max_seq_len)
            except Exception as exn:  # a corrupt sample must never stop training
                log.warning("skipping corrupt train sample %s: %r", sample.get("__key__"), exn)
                skipped += 1
                continue
            windows.append(window)
            for item in window:
                first_key.setdefault(item, sample["__key__"])
        item_frames, lost = {}, {}
        for item, key in first_key.items():
            try:
                item_frames[item] = self._store_frames(item, key)
            except Exception as exn:  # a lost item must never stop training: its samples are counted
                lost[item] = str(exn) if isinstance(exn, ItemLost) else self._undecodable(item, exn)
                log.warning("%s (its train samples are counted as lost)", lost[item])
        kept = [window for window in windows if lost.keys().isdisjoint(window)]
        return kept, item_frames, skipped + len(windows) - len(kept), list(lost.values())

    def _store_frames(self, item: int, key: str):
        """Item ``item``'s frames from the store: decoded with the augmentation of sample ``key``,
        or its JPEGs when decoding on the GPU."""
        jpegs = self.item_store.frames(item)
        if self.config.decode_device != "cpu":
            return jpegs
        generator = sample_generator(self.seed, self.position.epoch, f"{key}/{item}")
        return decode_frames(jpegs, self.transform, generator)

    def _undecodable(self, item: int, exn: Exception) -> str:
        return f"item {item} ({self.item_store.shard_name(item)}): its frames do not decode ({exn!r})"

    def _frames(self, sample: dict, window: list[int], known: dict) -> dict:
        """Frames of the window's items not yet in ``known`` (decoded unless decoding on the GPU)."""
        found = {}
        for item in dict.fromkeys(window):
            if item in known or item in found:
                continue
            jpegs = frames_of(sample, train_frame_prefix(item))
            if self.config.decode_device != "cpu":
                found[item] = jpegs
                continue
            generator = sample_generator(self.seed, self.position.epoch, f"{sample['__key__']}/{item}")
            found[item] = decode_frames(jpegs, self.transform, generator)
        return found


def train_loader(stream: IterableDataset, config: DataConfig, pin_memory: bool) -> DataLoader:
    """A DataLoader over ``stream`` (already batched)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=config.num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if config.num_workers else None,
        # its own generator: starting an epoch must not draw from the global RNG (dropout), or a
        # resumed run, which starts its loader at another step, would diverge
        generator=torch.Generator().manual_seed(stream.seed),
    )


class ItemStream(IterableDataset):
    """The item store's items -> batches of this rank's items, read by DataLoader workers.

    The items that have frames, in the order they lie in the shards, are split across
    ``world_size x num_workers`` groups by whole shards (by item when there are fewer shards than
    groups), so each rank reads (and for a remote dataset, fetches) only its share. Yields dicts:
    ``indices`` long ``[n]``, ``clips`` uint8 ``[n, T, 3, S, S]``, ``failed`` long ``[f]`` (items whose
    frames did not decode) and ``lost_items`` (one line per item the store could not read): neither
    is encoded or ranked. A batch may hold no clips (``n == 0``) when it only reports failures.
    """

    def __init__(
        self, store: ItemStore, transform: FrameTransform, batch_size: int, rank: int = 0, world_size: int = 1
    ):
        self.store, self.transform, self.batch_size = store, transform, batch_size
        self.rank, self.world_size = rank, world_size

    def _my_items(self) -> list[int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        group, groups = self.rank * workers + worker, self.world_size * workers
        items = self.store.items()
        shards = np.unique(self.store.shard_of[items])
        if len(shards) < groups:
            return items[group::groups].tolist()
        return items[np.isin(self.store.shard_of[items], shards[group::groups])].tolist()

    def __iter__(self) -> Iterator[dict]:
        indices, clips, failed, lost = [], [], [], []
        for item in self._my_items():
            try:
                jpegs = self.store.frames(item)
            except ItemLost as exn:
                log.warning("%s: not encoded", exn)
                lost.append(str(exn))
                continue
            try:
                clips.append(decode_frames(jpegs, self.transform))
                indices.append(item)
            except Exception as exn:
                log.warning("item %d (%s): frames do not decode: %r", item, self.store.shard_name(item), exn)
                failed.append(item)
            if len(indices) == self.batch_size:
                yield self._batch(indices, clips, failed, lost)
                indices, clips, failed, lost = [], [], [], []
        if indices or failed or lost:
            yield self._batch(indices, clips, failed, lost)

    def _batch(self, indices: list[int], clips: list, failed: list[int], lost: list[str]) -> dict:
        size = self.transform.size
        return {
            "indices": torch.tensor(indices, dtype=torch.long),
            "clips": torch.stack(clips) if clips else torch.zeros(0, 0, 3, size, size, dtype=torch.uint8),
            "failed": torch.tensor(failed, dtype=torch.long),
            "lost_items": lost,
        }


def item_loader(stream: ItemStream, num_workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over item batches (``num_workers`` decoding processes, pinned batches on CUDA)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
    )
