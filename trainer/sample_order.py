"""An epoch's train samples in one global order, whatever the number of ranks and loader workers.

The order (:class:`trainer.data.TrainStream` with ``global_order``): the shard list shuffled by
``(seed, epoch, pass)``, the samples in shard order, one shuffle buffer seeded by ``(seed, epoch,
pass)`` over that single stream, cut into *global batches* of ``batch_size`` samples (the last batch
of a pass may be partial). An epoch is ``epoch_batches`` global batches; by default every train
sample once (:func:`epoch_batches`).

Who trains what: when a run enters an epoch, ``done`` global batches of it are already trained (the
checkpointed position; 0 at the epoch's start). Rank ``r`` of ``world`` trains global batch
``done + k * world + r`` as its ``k``-th batch of this run's epoch, and DataLoader worker
``k mod workers`` reads it. Every rank yields a whole number of optimizer steps; a batch number past
the epoch's end is an empty batch (the last step of an epoch may leave some ranks without samples).
One optimizer step trains ``world x grad_accumulation`` consecutive global batches, so the position
after any step is a global batch count, and a run resumed on any number of ranks trains each
remaining batch of the epoch exactly once.

Every reader (rank x worker) reads the whole sample stream and keeps only its own batches, so this
order is for train shards that hold no frames (JSON windows, a few hundred bytes a user); shards
that embed frames are split between readers instead (``trainer.data``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol


def epoch_batches(
    samples: int, batch_size: int, step_batches: int, steps_per_epoch: int | None, global_order: bool
) -> int:
    """Global batches in an epoch of ``samples`` train samples (the manifest's count).

    ``steps_per_epoch`` steps of ``step_batches`` (world size x gradient accumulation) when given;
    else, in the global order, every sample once (the last batch partial, the same number on any
    world size); else (shards split between ranks) as many whole steps as the samples fill.
    """
    if steps_per_epoch:
        return steps_per_epoch * step_batches
    if global_order:
        return max(1, -(-samples // batch_size))
    return max(1, samples // (batch_size * step_batches)) * step_batches


def steps_left(batches_per_epoch: int, done: int, step_batches: int) -> int:
    """Optimizer steps that train an epoch's global batches after the first ``done``."""
    return max(0, -(-(batches_per_epoch - done) // step_batches))


def rank_batches(done: int, batches_per_epoch: int, rank: int, world_size: int, per_step: int) -> range:
    """Global batch numbers rank ``rank`` trains in this run's epoch, in order (a whole number of steps
    of ``per_step`` micro-batches; numbers from ``batches_per_epoch`` on are empty batches)."""
    count = steps_left(batches_per_epoch, done, world_size * per_step) * per_step
    return range(done + rank, done + rank + count * world_size, world_size)


class ReadCounting(Protocol):
    """What :func:`cut_batches` needs of a read-error counter (:class:`trainer.shard_reader.ReadErrors`):
    ``counting`` says whether the failures it sees now are this reader's to count."""

    counting: bool


def cut_batches(
    passes: Iterable[Iterable[dict]], batch_size: int, wanted: range, end: int, errors: ReadCounting
) -> Iterator[tuple[int, list[dict]]]:
    """One ``(global batch number, its samples)`` per number in ``wanted`` (ascending), in order.

    ``passes``: iterators over the samples of one pass each, in the global order. A pass is cut into
    global batches of ``batch_size``, its last one partial. Numbers from ``end`` on, and those left
    when the passes run dry, come with no samples. ``errors.counting`` is true exactly while the batch
    being cut is wanted here, so each read failure of the stream is counted by one reader only.
    """
    pending = iter(wanted)
    target = next(pending, None)
    first = 0  # global number of the current pass's first batch
    passes = iter(passes)
    while target is not None and target < end:
        samples = next(passes, None)
        if samples is None:
            break
        count, batch = 0, []
        errors.counting = target == first
        for count, sample in enumerate(samples, 1):
            if first + (count - 1) // batch_size == target:
                batch.append(sample)
                if len(batch) == batch_size:
                    yield target, batch
                    batch, target = [], next(pending, None)
                    if target is None or target >= end:
                        break
            errors.counting = first + count // batch_size == target
        else:  # the pass ended: its last batch may be partial
            if batch:
                yield target, batch
                target = next(pending, None)
            first += -(-count // batch_size)
            continue
        break
    errors.counting = True
    while target is not None:
        yield target, []
        target = next(pending, None)


def counted(samples: Iterable[dict], produced: list[int]) -> Iterator[dict]:
    """``samples``, counting them in ``produced[0]``."""
    for sample in samples:
        produced[0] += 1
        yield sample
