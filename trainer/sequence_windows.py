"""Training windows cut from ``sequences.parquet``: the ID-only alternative to train shards.

Train shards hold each user's *last* ``max_seq_len + 1`` training items, which is what a
video model needs. An ID model can instead learn from every training interaction:
each user's training history ``items[:-2]`` is cut from the end into windows of
``max_seq_len + 1`` items overlapping by one, so every training item is a target exactly
once per epoch. Windows are shuffled per epoch (seeded) into one global order, cut into global
batches and dealt to ranks and loader workers like the shard stream's global order
(``trainer.sample_order``), so a run resumes at a global batch on any number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from trainer.data import StreamPosition
from trainer.dataset import UserSequences
from trainer.sample_order import rank_batches


def training_windows(sequences: UserSequences, max_seq_len: int) -> list[np.ndarray]:
    """Every user's training history as windows of at most ``max_seq_len + 1`` items (at least 2)."""
    windows = []
    for row in range(len(sequences)):
        history = sequences.sequence(row)[:-2]
        for end in range(len(history), 1, -max_seq_len):
            windows.append(history[max(0, end - max_seq_len - 1) : end])
    return windows


class SequenceWindowStream(IterableDataset):
    """One rank's batches of sequence windows for one epoch of ``batches_per_epoch`` global batches,
    after the ``position.batches`` trained.

    Yields the same dicts as :class:`trainer.data.TrainStream` without frames (``sample_keys``: the
    windows' numbers in ``windows``).
    """

    def __init__(
        self,
        windows: list[np.ndarray],
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        max_seq_len: int,
        batches_per_epoch: int,
        position: StreamPosition,
        rank: int = 0,
        world_size: int = 1,
        batches_per_step: int = 1,
    ):
        self.windows = windows
        self.batch_size, self.seed, self.shuffle, self.max_seq_len = batch_size, seed, shuffle, max_seq_len
        self.batches_per_epoch, self.position = batches_per_epoch, position
        self.rank, self.world_size, self.batches_per_step = rank, world_size, batches_per_step

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        order = np.arange(len(self.windows))
        if self.shuffle:
            np.random.default_rng([self.seed, self.position.epoch]).shuffle(order)
        end, done = self.batches_per_epoch, self.position.batches
        wanted = rank_batches(done, end, self.rank, self.world_size, self.batches_per_step)
        for batch_index in wanted[worker::workers]:
            start = batch_index * self.batch_size if batch_index < end else len(order)
            rows = order[start : start + self.batch_size]
            items = torch.zeros(len(rows), self.max_seq_len + 1, dtype=torch.long)
            for i, row in enumerate(rows):
                window = self.windows[row]
                items[i, : len(window)] = torch.from_numpy(window)
            yield {
                "items": items,
                "unique_items": torch.unique(items[items > 0]),
                "skipped": 0,
                "batch_index": batch_index,
                "sample_keys": rows.tolist(),
            }
