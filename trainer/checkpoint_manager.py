"""A run's checkpoint files: writing ``last.pt`` (every rank's RNG state gathered) and ``best.pt``,
reading them back, and the position a resume continues from.

:class:`CheckpointManager` is a part a :class:`trainer.trainer.Trainer` holds; what a checkpoint
contains is the trainer's ``state_dict()``. The files themselves are written by
:mod:`trainer.checkpoint` (atomic, ``weights_only`` loadable).
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from trainer import checkpoint
from trainer.data import StreamPosition
from trainer.errors import UsageError


def barrier(world_size: int) -> None:
    """Wait for every rank (nothing to wait for in a 1-process run)."""
    if world_size > 1:
        dist.barrier()


class CheckpointManager:
    """The checkpoints of one run in ``run_dir/checkpoints``, as seen from ``rank`` of ``world_size``."""

    def __init__(self, run_dir: Path, rank: int = 0, world_size: int = 1):
        self.folder = Path(run_dir) / "checkpoints"
        self.rank, self.world_size = rank, world_size

    def save(self, state: dict, name: str) -> None:
        """Write ``state`` (a trainer's ``state_dict()``) as ``name``: rank 0 writes, with every rank's
        RNG state gathered into ``rank_rng``; every rank waits until it is written."""
        if self.world_size > 1:
            rng_states = [None] * self.world_size
            dist.all_gather_object(rng_states, state["rng"])
            state = {**state, "rng": rng_states[0], "rank_rng": rng_states}
        if self.rank == 0:
            checkpoint.save_atomic(state, self.folder / name)
        barrier(self.world_size)

    def save_best(self, state: dict) -> None:
        """Write ``best.pt`` (rank 0): the weights of a step and its validation metrics."""
        if self.rank == 0:
            checkpoint.save_atomic(state, self.folder / checkpoint.BEST)

    def load_best(self) -> dict:
        """``best.pt`` as :meth:`save_best` wrote it."""
        return checkpoint.load(self.folder / checkpoint.BEST)

    def resume_state(self, state: str | Path | dict) -> dict:
        """The state a checkpoint written by :meth:`save` (its path, or its loaded state) resumes this
        rank with: its own RNG state under ``rng``, or None for a rank the checkpointed run did not
        have (it keeps its seed)."""
        if not isinstance(state, dict):
            state = checkpoint.read(state, checkpoint.RESUME_KEYS, "pass --no-resume to start over")
        rank_rng = state.get("rank_rng") or [state["rng"]]
        state["rng"] = rank_rng[self.rank] if self.rank < len(rank_rng) else None
        return state


def saved_position(saved: dict, world_size: int) -> StreamPosition:
    """The stream position a checkpoint holds (one written before positions counted global batches
    counted this rank's batches on ``world_size`` ranks)."""
    if "world_size" not in saved:
        position = StreamPosition(**saved, world_size=world_size)
        position.batches *= world_size
        return position
    return StreamPosition(**saved)


def check_world_size(position: StreamPosition, world_size: int, elastic: bool) -> None:
    """Refuse to continue an epoch on another world size unless both runs read the global order.

    Raises:
        UsageError: the checkpoint stopped mid-epoch on another number of ranks, and the dataset's
            train shards embed frames (their order is split between ranks and loader workers).
    """
    ranks = position.world_size
    if ranks != world_size and position.batches and not elastic:
        raise UsageError(
            f"the checkpoint stopped mid-epoch on {ranks} ranks, and this dataset's train shards "
            f"embed frames, whose order depends on the ranks: resume on {ranks} ranks (from an "
            "epoch's end any number works), or train on a dataset ingested with --train-frames reference"
        )
