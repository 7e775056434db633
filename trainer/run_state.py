"""A run's checkpoints: what ``last.pt`` and ``best.pt`` hold, writing them, and resuming from them.

:class:`RunState` is a part of :class:`trainer.trainer.Trainer` (mixed in): it reads and sets the
trainer's model, optimizer, scheduler, grad scaler, stream position and counters, all made in
``Trainer.__init__``. The files themselves are written by :mod:`trainer.checkpoint` (atomic,
``weights_only`` loadable).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.distributed as dist

from trainer import checkpoint
from trainer.data import StreamPosition
from trainer.errors import DatasetError, UsageError

log = logging.getLogger(__name__)


class RunState:
    """Checkpointing of a :class:`~trainer.trainer.Trainer`."""

    def checkpoint_extras(self) -> dict:
        """What ``videorec evaluate`` needs besides the weights: config, dataset and encoder spec."""
        return {
            "config": self.config.to_dict(),
            "dataset_root": self.dataset.root,
            "dataset_version": self.dataset.version,
            "encoder_spec": self.model.encoder_spec(),
        }

    def save_best(self, metrics: dict[str, float]) -> None:
        """Write ``best.pt``: the weights of this step and its validation ``metrics`` (rank 0)."""
        if self.rank == 0:
            checkpoint.save_atomic(
                {
                    "model": self.model.state_dict(),
                    "step": self.step,
                    "valid": metrics,
                    **self.checkpoint_extras(),
                },
                self.run_dir / "checkpoints" / checkpoint.BEST,
            )

    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly (this rank's RNG state included)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": checkpoint.rng_state(),
            "step": self.step,
            "position": self.position.to_dict(),
            "best": dict(self.best),
            "skipped_samples": self.skipped_samples,
            "failed_reads": self.failed_reads,
            "metrics_lines": self.reporter.lines_written if self.reporter else self.metrics_lines,
            **self.checkpoint_extras(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["dataset_version"] != self.dataset.version:
            raise DatasetError(
                f"the checkpoint is of dataset version {state['dataset_version']!r}, not "
                f"{self.dataset.version!r}; pass --no-resume to start over"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if state["rng"] is not None:
            checkpoint.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.position = StreamPosition(**state["position"])
        if "world_size" not in state["position"]:  # written before positions counted global batches
            self.position = StreamPosition(**state["position"], world_size=self.world_size)
            self.position.batches *= self.world_size
        elastic = self.global_order and self.global_order_on(
            self.position.world_size, self.position.num_workers
        )
        self._check_world_size(elastic)
        if self.position.num_workers != self.config.data.num_workers and not elastic:
            log.warning(
                "resuming with %d loader workers instead of %d: batch order after resume differs",
                self.config.data.num_workers,
                self.position.num_workers,
            )
        self.position.num_workers = self.config.data.num_workers
        self.position.world_size = self.world_size
        self._plan_steps()
        self.best = dict(state["best"])
        self.skipped_samples = int(state["skipped_samples"])
        self.failed_reads = int(state["failed_reads"])
        self.metrics_lines = int(state["metrics_lines"])

    def _check_world_size(self, elastic: bool) -> None:
        """Refuse to continue an epoch on another world size unless both runs read the global order.

        Raises:
            UsageError: the checkpoint stopped mid-epoch on another number of ranks, and the dataset's
                train shards embed frames (their order is split between ranks and loader workers).
        """
        ranks = self.position.world_size
        if ranks != self.world_size and self.position.batches and not elastic:
            raise UsageError(
                f"the checkpoint stopped mid-epoch on {ranks} ranks, and this dataset's train shards "
                f"embed frames, whose order depends on the ranks: resume on {ranks} ranks (from an "
                "epoch's end any number works), or train on a dataset ingested with --train-frames reference"
            )

    def save(self, name: str) -> None:
        """Checkpoint the run (rank 0 writes; every rank's RNG state is gathered into it)."""
        state = self.state_dict()
        if self.world_size > 1:
            rng_states = [None] * self.world_size
            dist.all_gather_object(rng_states, state["rng"])
            state["rng"] = rng_states[0]
            state["rank_rng"] = rng_states
        if self.rank == 0:
            checkpoint.save_atomic(state, self.run_dir / "checkpoints" / name)
        barrier(self.world_size)

    def resume(self, state: str | Path | dict) -> None:
        """Continue from a checkpoint written by :meth:`save` (its path, or its loaded state)."""
        if not isinstance(state, dict):
            state = checkpoint.read(state, checkpoint.RESUME_KEYS, "pass --no-resume to start over")
        # each rank takes its own RNG state; a rank the checkpointed run did not have keeps its seed
        rank_rng = state.get("rank_rng") or [state["rng"]]
        state["rng"] = rank_rng[self.rank] if self.rank < len(rank_rng) else None
        self.load_state_dict(state)


def barrier(world_size: int) -> None:
    """Wait for every rank (nothing to wait for in a 1-process run)."""
    if world_size > 1:
        dist.barrier()
