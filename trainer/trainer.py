"""The training loop: optimizer steps over the shard stream, lost-sample accounting, the epochs.

Checkpoints and resume live in :mod:`trainer.run_state`, validation and test in
:mod:`trainer.run_eval`, the optimizer step in :mod:`trainer.optimizer_step`; :class:`Trainer`
brings them together. Epochs are counted in global batches (``trainer.sample_order``), so the
position a checkpoint holds means the same on any world size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dataformat.format import TRAIN_FRAMES_EMBEDDED
from dataformat.manifest import train_frames_of
from trainer import checkpoint
from trainer.config import SELECTION_METRICS, TrainConfig
from trainer.data import StreamPosition, TrainStream, expand_shard_urls, train_loader
from trainer.dataset import DatasetInfo, check_local_shards
from trainer.errors import DataLossError, DatasetError, UsageError
from trainer.frames import FrameTransform
from trainer.item_store import item_store_for, train_frames_from_store
from trainer.loss import log_popularity
from trainer.models.videorec import build_model
from trainer.optimizer_step import OptimizerStep
from trainer.progress import METRICS_FILE, ProgressReporter, truncate_metrics
from trainer.run_eval import RunEvaluation
from trainer.run_state import RunState
from trainer.sample_order import epoch_batches, steps_left
from trainer.sequence_windows import SequenceWindowStream, training_windows

log = logging.getLogger(__name__)


def lr_schedule(schedule: str, warmup_steps: int, total_steps: int, min_ratio: float):
    """LR multiplier: linear warmup to 1, then ``cosine`` decay to ``min_ratio`` at ``total_steps``
    or ``constant`` 1."""
    if schedule not in ("cosine", "constant"):
        raise UsageError(f"unknown --schedule {schedule!r}; choose cosine or constant")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer(RunState, RunEvaluation, OptimizerStep):
    """Trains one VideoRec on one dataset version, on one rank of a (possibly 1-process) group.

    Checkpoints and resume are :class:`~trainer.run_state.RunState`'s, validation, test and
    ``results.json`` :class:`~trainer.run_eval.RunEvaluation`'s, the optimizer step
    :class:`~trainer.optimizer_step.OptimizerStep`'s. ``on_batch``, when set, is called with each
    batch this rank reads for a step (``sample_keys`` say which samples: an audit hook)."""

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
        self.config, self.dataset = config, dataset
        self.device, self.rank, self.world_size = torch.device(device), rank, world_size
        self.run_dir = Path(config.output)
        torch.manual_seed(config.seed)
        try:
            model = build_model(
                config.model,
                dataset.num_items,
                num_frames=dataset.num_frames or 5,
                frame_size=config.data.frame_size,
                encoder_spec=encoder_spec,
            )
        except ValueError as err:  # the model's flags do not fit (the message names them)
            raise UsageError(str(err)) from None
        self.model = model.to(self.device)
        self.module = (
            DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if world_size > 1
            else self.model
        )
        torch.manual_seed(config.seed * 1000 + rank)
        self.use_frames = self.model.needs_frames
        if self.use_frames and not dataset.has_frames:
            raise UsageError(
                f"encoder {config.model.encoder!r} needs frames but dataset {dataset.root} has none (ID-only); "
                "train --encoder id on it, or ingest the videos with --videos"
            )
        if config.loss.candidates == "full" and self.use_frames:
            raise UsageError(
                "--candidates full needs an id or frozen encoder (video items are encoded per batch)"
            )
        optim = config.optim
        groups = [
            {
                "params": self.model.recommender_parameters(),
                "lr": optim.lr,
                "weight_decay": optim.weight_decay,
            }
        ]
        if self.model.encoder_parameters():
            groups.append(
                {
                    "params": self.model.encoder_parameters(),
                    "lr": optim.encoder_lr,
                    "weight_decay": optim.encoder_weight_decay,
                }
            )
        self.optimizer = torch.optim.AdamW(groups)
        self.urls = (
            expand_shard_urls(config.data.train_shards)
            if config.data.train_shards
            else dataset.shard_urls("train")
        )
        if config.data.source not in ("shards", "sequences"):
            raise UsageError(f"unknown --source {config.data.source!r}; choose shards or sequences")
        if config.data.source == "sequences" and self.use_frames:
            raise UsageError("--source sequences has no frames; use it with the id or frozen encoder")
        self.shard_entries = {} if config.data.train_shards else dataset.shard_entries("train")
        if config.data.source == "shards":
            if not self.urls:
                raise DatasetError(
                    f"{dataset.root} has no train shards (no user has more than 3 interactions); "
                    "ingest more interactions per user"
                )
            if not config.data.train_shards:
                check_local_shards(dataset, "train")
        # frames come from the item store (item shards, by offset): for evaluation always, for training
        # on a reference-layout dataset or with --frames-from store; lost items are counted (_account)
        self.item_store = item_store_for(dataset, config.data) if self.use_frames else None
        self.train_store = (
            self.item_store
            if self.use_frames and train_frames_from_store(dataset.manifest, config.data.frames_from)
            else None
        )
        self.windows = (
            training_windows(dataset.sequences, config.model.max_seq_len)
            if config.data.source == "sequences"
            else None
        )
        samples = len(self.windows) if self.windows is not None else dataset.shard_samples("train")
        self.embedded_frames = (
            dataset.has_frames and train_frames_of(dataset.manifest) == TRAIN_FRAMES_EMBEDDED
        )
        self.global_order = self.global_order_on(world_size, config.data.num_workers)
        self.step_batches = world_size * optim.grad_accumulation
        self.batches_per_epoch = epoch_batches(
            samples, config.data.batch_size, self.step_batches, optim.steps_per_epoch, self.global_order
        )
        self.step = 0
        self.position = StreamPosition(num_workers=config.data.num_workers, world_size=world_size)
        self._plan_steps()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(  # total_steps changes on an elastic resume
            self.optimizer,
            lambda step: lr_schedule(
                optim.schedule, optim.warmup_steps, self.total_steps, optim.min_lr_ratio
            )(step),
        )
        if config.selection_metric not in SELECTION_METRICS:
            raise UsageError(
                f"unknown --selection-metric {config.selection_metric!r}; choose one of "
                f"{', '.join(SELECTION_METRICS)}"
            )
        self.autocast = optim.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # bf16 needs no loss scaling
        self.log_q = log_popularity(torch.from_numpy(dataset.popularity)).to(self.device)
        self.train_transform = FrameTransform(
            config.data.frame_size, config.data.squash, train=True, augment=config.data.augment
        )
        self.on_batch: Callable[[dict], None] | None = None
        self.best = {"step": -1, "score": -1.0}
        self.skipped_samples = 0
        self.failed_reads = 0
        self.first_lost_item = ""
        self.metrics_lines = 0
        self.reporter: ProgressReporter | None = None

    def global_order_on(self, world_size: int, num_workers: int) -> bool:
        """Whether a run of ``world_size`` ranks x ``num_workers`` loader workers reads the global order:
        always, unless the train shards embed frames and more than one reader would each read all of
        them (the order is then split between readers)."""
        single_reader = world_size * max(1, num_workers) == 1
        return self.windows is not None or not self.embedded_frames or single_reader

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

    # --- the loop -----------------------------------------------------------------------------

    def _batches(self):
        """This epoch's remaining batches (the stream starts after the batches already trained)."""
        batches_per_epoch, per_step = self.batches_per_epoch, self.config.optim.grad_accumulation
        if self.windows is not None:
            stream = SequenceWindowStream(
                self.windows,
                batch_size=self.config.data.batch_size,
                seed=self.config.seed,
                shuffle=self.config.data.shuffle_buffer > 1,
                max_seq_len=self.config.model.max_seq_len,
                batches_per_epoch=batches_per_epoch,
                position=StreamPosition(**self.position.to_dict()),
                rank=self.rank,
                world_size=self.world_size,
                batches_per_step=per_step,
            )
            return iter(train_loader(stream, self.config.data, pin_memory=self.device.type == "cuda"))
        stream = TrainStream(
            self.urls,
            self.config.data,
            seed=self.config.seed,
            max_seq_len=self.config.model.max_seq_len,
            batches_per_epoch=batches_per_epoch,
            with_frames=self.use_frames,
            position=StreamPosition(**self.position.to_dict()),
            rank=self.rank,
            world_size=self.world_size,
            shard_entries=self.shard_entries,
            item_store=self.train_store,
            global_order=self.global_order,
            batches_per_step=per_step,
        )
        return iter(train_loader(stream, self.config.data, pin_memory=self.device.type == "cuda"))

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
                loss = self.train_step(usable, per_rank) if usable else self._empty_step()
                self.position.batches = min(self.batches_per_epoch, self.position.batches + self.step_batches)
                record = reporter.step(
                    {
                        "type": "train",
                        "step": self.step,
                        "epoch": self.position.epoch,
                        "loss": loss,
                        "lr": self.scheduler.get_last_lr()[0],
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
        results = self._test(reporter)
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
