"""The training loop: optimizer steps over the shard stream, lost-sample accounting, the epochs.

A :class:`Trainer` is built from parts (``trainer.builders``: the model, optimizer, scheduler and
train source) and holds the parts that act on them: the optimizer step
(:class:`~trainer.optimizer_step.OptimizerStep`), the checkpoint files
(:class:`~trainer.checkpoint_manager.CheckpointManager`) and validation and test
(:class:`~trainer.run_eval.RunEvaluator`). ``train_step``, ``train``, ``state_dict`` and
``load_state_dict`` are its entry points. Epochs are counted in global batches
(``trainer.sample_order``), so the position a checkpoint holds means the same on any world size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from trainer import checkpoint
from trainer.builders import ScheduleClock, build_model, build_optimizer, build_scheduler, build_source
from trainer.checkpoint_manager import CheckpointManager, check_world_size, saved_position
from trainer.config import TrainConfig
from trainer.data import StreamPosition
from trainer.dataset import DatasetInfo
from trainer.errors import DataLossError, DatasetError
from trainer.optimizer_step import OptimizerStep
from trainer.progress import METRICS_FILE, ProgressReporter, truncate_metrics
from trainer.run_eval import RunEvaluator
from trainer.sample_order import epoch_batches, steps_left

log = logging.getLogger(__name__)


class Trainer:
    """Trains one VideoRec on one dataset version, on one rank of a (possibly 1-process) group.

    ``on_batch``, when set, is called with each batch this rank reads for a step (``sample_keys``
    say which samples: an audit hook)."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: DatasetInfo,
        *,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        encoder_spec: dict | None = None,
    ):
        """``encoder_spec``: the ``encoder_spec`` of a checkpoint this run resumes from (the backbone
        is then rebuilt from it, without its pretrained weights, which the checkpoint holds)."""
        config.validate()
        self.config, self.dataset, self.rank, self.world_size = config, dataset, rank, world_size
        self.device, self.run_dir = torch.device(device), Path(config.output)
        self.autocast = config.optim.amp and self.device.type == "cuda"
        self.model, module = build_model(config, dataset, self.device, world_size, encoder_spec)
        torch.manual_seed(config.seed * 1000 + rank)
        self.source = build_source(config, dataset, self.model.needs_frames)
        self._plan_run()
        optimizer = build_optimizer(config.optim, self.model)
        scheduler = build_scheduler(config.optim, optimizer, self.schedule)
        where = {"device": self.device, "world_size": world_size, "autocast": self.autocast}
        self.stepper = OptimizerStep(config, dataset, self.model, module, optimizer, scheduler, **where)
        self.checkpoints = CheckpointManager(self.run_dir, rank, world_size)
        self.evaluator = RunEvaluator(
            config, dataset, self.model, self.checkpoints, self.source.item_store, rank=rank, **where
        )
        self.on_batch: Callable[[dict], None] | None = None
        self.skipped_samples = self.failed_reads = self.metrics_lines = 0
        self.first_lost_item = ""
        self.reporter: ProgressReporter | None = None

    def _plan_run(self) -> None:
        """A fresh run's plan: whether it reads the global order, the global batches of a step and of an
        epoch, the position (the start) and the steps (:meth:`_plan_steps`)."""
        data, optim = self.config.data, self.config.optim
        self.global_order = self.source.global_order_on(self.world_size, data.num_workers)
        self.step_batches = self.world_size * optim.grad_accumulation
        self.batches_per_epoch = epoch_batches(
            self.source.samples, data.batch_size, self.step_batches, optim.steps_per_epoch, self.global_order
        )
        self.step, self.position = 0, StreamPosition(num_workers=data.num_workers, world_size=self.world_size)
        self.schedule = ScheduleClock(self.step_batches, warmup_units=optim.warmup_steps * self.step_batches)
        self._plan_steps()

    def _plan_steps(self) -> None:
        """``steps_per_epoch``, ``total_steps`` and ``planned_samples`` on this world size, from the
        position (after a resume on another world size the steps left are counted on this one)."""
        optim, done = self.config.optim, self.position.batches
        self.steps_per_epoch = steps_left(self.batches_per_epoch, 0, self.step_batches)
        left = steps_left(self.batches_per_epoch, done, self.step_batches)
        left += (optim.epochs - self.position.epoch - 1) * self.steps_per_epoch
        self.total_steps = self.step + left if self.position.epoch < optim.epochs else self.step
        if optim.max_steps is not None:
            self.total_steps = min(self.total_steps, optim.max_steps)
        self.planned_samples = self.total_steps * self.step_batches * self.config.data.batch_size
        self.schedule.total_units = self.schedule.units(self.total_steps)

    # --- the loop -----------------------------------------------------------------------------

    def _batches(self) -> Iterator[dict]:
        """This epoch's remaining batches (the stream starts after the batches already trained)."""
        return self.source.batches(
            self.position,
            seed=self.config.seed,
            max_seq_len=self.config.model.max_seq_len,
            batches_per_epoch=self.batches_per_epoch,
            rank=self.rank,
            world_size=self.world_size,
            batches_per_step=self.config.optim.grad_accumulation,
            global_order=self.global_order,
            pin_memory=self.device.type == "cuda",
        )

    def train_step(self, micro_batches: list[dict], per_rank: float | None = None) -> float:
        """One optimizer step over gradient-accumulation micro-batches; returns the mean loss
        (``per_rank``: see :meth:`OptimizerStep.run <trainer.optimizer_step.OptimizerStep.run>`)."""
        loss = self.stepper.run(micro_batches, per_rank, self.step)
        self.step += 1
        return loss

    def _skip_step(self) -> float:
        """A step whose samples were all lost: no update, the schedule moves on; the loss is NaN."""
        loss = self.stepper.skip(self.step)
        self.step += 1
        return loss

    def train(self) -> dict[str, dict[str, float]]:
        """Train to ``total_steps``, evaluating each epoch; returns validation and test metrics."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        reporter = self.reporter = ProgressReporter(
            self.run_dir, self.total_steps, self.step, self.rank == 0, self.config.progress
        )
        if self.rank == 0:
            truncate_metrics(self.run_dir / METRICS_FILE, self.metrics_lines)
            reporter.lines_written = self.metrics_lines
            reporter.write(
                {
                    "type": "run",
                    "step": self.step,
                    "dataset_version": self.dataset.version,
                    "dataset_root": self.dataset.root,
                    "world_size": self.world_size,
                    "steps_per_epoch": self.steps_per_epoch,
                    "total_steps": self.total_steps,
                }
            )
        accumulation = self.config.optim.grad_accumulation
        last_eval_step = -1
        while self.step < self.total_steps:
            batches = self._batches()
            while self.step < self.total_steps and self.position.batches < self.batches_per_epoch:
                micro = [next(batches) for _ in range(accumulation)]
                for batch in micro if self.on_batch else ():
                    self.on_batch(batch)
                usable, per_rank = self._account(micro)
                loss = self.train_step(usable, per_rank) if usable else self._skip_step()
                self.position.batches = min(self.batches_per_epoch, self.position.batches + self.step_batches)
                record = reporter.step(
                    {
                        "type": "train",
                        "step": self.step,
                        "epoch": self.position.epoch,
                        "loss": loss,
                        "lr": self.stepper.scheduler.get_last_lr()[0],
                        "skipped_samples": self.skipped_samples,
                        "failed_reads": self.failed_reads,
                    },
                    samples=sum(len(b["items"]) for b in micro) * self.world_size,
                    items=sum(len(b["unique_items"]) for b in micro) * self.world_size,
                )
                if self.step % self.config.log_every == 0:
                    reporter.write(record)
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                    self.save(checkpoint.LAST)
            del batches
            if self.position.batches >= self.batches_per_epoch:
                self.position = StreamPosition(
                    self.position.epoch + 1, 0, self.config.data.num_workers, self.world_size
                )
                if self.config.eval_every_epoch:
                    self._validate(reporter)
                    last_eval_step = self.step
                self.save(checkpoint.LAST)
                reporter.reset_window()
        if last_eval_step != self.step:
            self._validate(reporter)
        self.save(checkpoint.LAST)
        results = self.evaluator.test(reporter, self.step, self._loss_report())
        reporter.close()
        return results

    def _account(self, micro: list[dict]) -> tuple[list[dict], float]:
        """Count the step's lost samples (all ranks) and stop the run past ``max_lost_fraction``, or
        on a shard that is not the manifest's; returns the micro-batches to train on and
        :meth:`train_step`'s ``per_rank``. One process trains those holding samples; under DDP every
        rank passes over all its micro-batches (an empty one idly), so their collectives match, and
        none when no rank has samples."""
        bad_shards = [message for b in micro for message in b.get("bad_shards", ())]
        lost_items = [line for b in micro for line in b.get("lost_items", ())]
        self.first_lost_item = self.first_lost_item or next(iter(lost_items), "")
        lost = torch.tensor(
            [
                sum(int(b["skipped"]) for b in micro),
                sum(int(b.get("read_errors", 0)) for b in micro),
                len(bad_shards),
                sum(1 for b in micro if not len(b["items"])),
            ]
        )
        if self.world_size > 1:  # every rank sees the same totals, so all stop together
            lost = lost.to(self.device)
            dist.all_reduce(lost)
        skipped, failed, mismatched, empty = (int(n) for n in lost.tolist())
        if mismatched:
            raise DatasetError(
                bad_shards[0] if bad_shards else "a train shard on another rank is not the manifest's"
            )
        if skipped or failed:
            self.skipped_samples += skipped
            self.failed_reads += failed
            log.warning(
                "lost %d corrupt samples and %d shard reads this step (%d and %d so far)",
                skipped,
                failed,
                self.skipped_samples,
                self.failed_reads,
            )
        budget = self.config.data.max_lost_fraction * self.planned_samples
        if self.skipped_samples + self.failed_reads > budget:
            raise DataLossError(
                f"lost {self.skipped_samples} corrupt samples and {self.failed_reads} failed shard reads, "
                f"more than --max-lost-fraction {self.config.data.max_lost_fraction} of the "
                f"{self.planned_samples} samples this run reads (budget {budget:g}){self._first_lost()}; "
                "see the warnings above, and write the dataset again or raise --max-lost-fraction"
            )
        filled = len(micro) * self.world_size - empty
        if self.world_size > 1:
            return (micro if filled else []), filled / self.world_size
        usable = [b for b in micro if len(b["items"])]
        return usable, len(usable)

    def _first_lost(self) -> str:
        """``; first lost item: <line naming it and its shard>`` once an item was lost, else ``""``."""
        return f"; first lost item: {self.first_lost_item}" if self.first_lost_item else ""

    def _loss_report(self) -> dict:
        """The samples this run lost to damaged data, against what it allows (``results.json``)."""
        return {
            "skipped_samples": self.skipped_samples,
            "failed_reads": self.failed_reads,
            "planned_samples": self.planned_samples,
            "max_lost_fraction": self.config.data.max_lost_fraction,
        }

    def _validate(self, reporter: ProgressReporter) -> None:
        self.evaluator.validate(reporter, self.step, self.position.epoch, self._best_state)

    # --- checkpoints --------------------------------------------------------------------------

    def checkpoint_extras(self) -> dict:
        """What ``videorec evaluate`` needs besides the weights: config, dataset and encoder spec."""
        return {
            "config": self.config.to_dict(),
            "dataset_root": self.dataset.root,
            "dataset_version": self.dataset.version,
            "encoder_spec": self.model.encoder_spec(),
        }

    def _best_state(self) -> dict:
        """What ``best.pt`` holds besides the step and its validation metrics."""
        return {"model": self.model.state_dict(), **self.checkpoint_extras()}

    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly (this rank's RNG state included)."""
        stepper = self.stepper
        return {
            "model": self.model.state_dict(),
            "optimizer": stepper.optimizer.state_dict(),
            "scheduler": stepper.scheduler.state_dict(),
            "scaler": stepper.scaler.state_dict(),
            "rng": checkpoint.rng_state(),
            "step": self.step,
            "position": self.position.to_dict(),
            "schedule": self.schedule.state_dict(self.step),
            "best": dict(self.evaluator.best),
            "skipped_samples": self.skipped_samples,
            "failed_reads": self.failed_reads,
            "metrics_lines": self.reporter.lines_written if self.reporter else self.metrics_lines,
            **self.checkpoint_extras(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (``rng`` None: keep this rank's seed). A position of another
        world size is continued mid-epoch only where both read the global order.

        Raises:
            DatasetError: the state is of another dataset version.
            UsageError: see :func:`~trainer.checkpoint_manager.check_world_size`.
        """
        if state["dataset_version"] != self.dataset.version:
            raise DatasetError(
                f"the checkpoint is of dataset version {state['dataset_version']!r}, not "
                f"{self.dataset.version!r}; pass --no-resume to start over"
            )
        self.model.load_state_dict(state["model"])
        self.stepper.optimizer.load_state_dict(state["optimizer"])
        self.stepper.scheduler.load_state_dict(state["scheduler"])
        self.stepper.scaler.load_state_dict(state["scaler"])
        if state["rng"] is not None:
            checkpoint.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.position = saved_position(state["position"], self.world_size)
        saved_step_batches = self.position.world_size * self.config.optim.grad_accumulation
        self.schedule.resume(  # a checkpoint from before the clock: its steps were all of its world size
            self.step,
            state.get("schedule")
            or {
                "units": self.step * saved_step_batches,
                "warmup_units": self.config.optim.warmup_steps * saved_step_batches,
            },
        )
        elastic = self.global_order and self.source.global_order_on(
            self.position.world_size, self.position.num_workers
        )
        check_world_size(self.position, self.world_size, elastic)
        if self.position.num_workers != self.config.data.num_workers and not elastic:
            log.warning(
                "resuming with %d loader workers instead of %d: batch order after resume differs",
                self.config.data.num_workers,
                self.position.num_workers,
            )
        self.position.num_workers = self.config.data.num_workers
        self.position.world_size = self.world_size
        self._plan_steps()
        self.evaluator.best = dict(state["best"])
        self.skipped_samples = int(state["skipped_samples"])
        self.failed_reads = int(state["failed_reads"])
        self.metrics_lines = int(state["metrics_lines"])

    def save(self, name: str) -> None:
        """Checkpoint the run as ``name`` (rank 0 writes; every rank's RNG state is gathered into it)."""
        self.checkpoints.save(self.state_dict(), name)

    def resume(self, state: str | Path | dict) -> None:
        """Continue from a checkpoint written by :meth:`save` (its path, or its loaded state)."""
        self.load_state_dict(self.checkpoints.resume_state(state))
