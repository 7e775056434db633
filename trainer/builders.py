"""The parts of a :class:`trainer.trainer.Trainer`, each built from the run's config by one function.

``build_model`` (VideoRec, wrapped in DDP on several ranks), ``build_optimizer`` (AdamW, one group
for the recommender and one for the encoder), ``build_scheduler`` (warmup, then cosine or constant)
and ``build_source`` (where the train batches come from: :class:`TrainSource`). The flags are
checked before, by :meth:`trainer.config.TrainConfig.validate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from dataformat.format import TRAIN_FRAMES_EMBEDDED
from dataformat.manifest import train_frames_of
from trainer.config import DataConfig, OptimConfig, TrainConfig
from trainer.data import StreamPosition, TrainStream, expand_shard_urls, train_loader
from trainer.dataset import DatasetInfo, check_local_shards
from trainer.errors import DatasetError, UsageError
from trainer.item_store import ItemStore, item_store_for, train_frames_from_store
from trainer.models.videorec import VideoRec, build_videorec
from trainer.sequence_windows import SequenceWindowStream, training_windows


def build_model(
    config: TrainConfig,
    dataset: DatasetInfo,
    device: torch.device,
    world_size: int = 1,
    encoder_spec: dict | None = None,
) -> tuple[VideoRec, torch.nn.Module]:
    """The run's VideoRec on ``device``, initialised from ``config.seed``, and the module that trains
    it (the model itself, or its DDP wrapper when ``world_size > 1``). ``encoder_spec``: a resumed
    checkpoint's (the backbone is rebuilt from it, without the pretrained weights the checkpoint holds).

    Raises:
        UsageError: the model flags do not fit together (the message names them).
    """
    torch.manual_seed(config.seed)
    try:
        model = build_videorec(
            config.model,
            dataset.num_items,
            num_frames=dataset.num_frames or 5,
            frame_size=config.data.frame_size,
            encoder_spec=encoder_spec,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    model = model.to(device)
    if world_size == 1:
        return model, model
    return model, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def build_optimizer(config: OptimConfig, model: VideoRec) -> torch.optim.AdamW:
    """AdamW over the recommender parameters (``lr``, ``weight_decay``) and, when the encoder has any
    that train, the encoder's (``encoder_lr``, ``encoder_weight_decay``), in that group order."""
    groups = [
        {"params": model.recommender_parameters(), "lr": config.lr, "weight_decay": config.weight_decay}
    ]
    if model.encoder_parameters():
        groups.append(
            {
                "params": model.encoder_parameters(),
                "lr": config.encoder_lr,
                "weight_decay": config.encoder_weight_decay,
            }
        )
    return torch.optim.AdamW(groups)


def lr_schedule(
    schedule: str, warmup: float, total: float, min_ratio: float, unit: float = 1
) -> Callable[[float], float]:
    """LR multiplier: linear warmup to 1, then ``cosine`` decay to ``min_ratio`` at ``total`` or
    ``constant`` 1. ``warmup``, ``total`` and the argument count optimizer steps of ``unit`` each (1:
    steps; a :class:`ScheduleClock` counts global batches, ``unit`` of them a step)."""

    def factor(done: float) -> float:
        if done < warmup:
            return (done + unit) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (done - warmup) / max(unit, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@dataclass
class ScheduleClock:
    """The learning-rate schedule's clock, in global batches rather than steps, so that a run resumed on
    another world size (another number of global batches a step) goes on along the same curve instead of
    jumping: ``units(step)`` is the global batches the schedule counts done after ``step`` steps.

    On one world size it is the step schedule exactly (every step counts ``step_batches``)."""

    step_batches: int
    """Global batches an optimizer step trains on this world size (ranks x gradient accumulation)."""
    warmup_units: int
    """The warmup's length in global batches (``warmup_steps`` of the run's first world size)."""
    start_step: int = 0
    start_units: int = 0
    """The step this process started from, and the units counted done by then (a checkpoint's)."""
    total_units: int = 0
    """The units counted done at the run's last step (set when the run plans its steps)."""

    def units(self, step: int) -> int:
        return self.start_units + (step - self.start_step) * self.step_batches

    def state_dict(self, step: int) -> dict:
        return {"units": self.units(step), "warmup_units": self.warmup_units}

    def resume(self, step: int, saved: dict) -> None:
        """Continue from a checkpoint's :meth:`state_dict` at ``step``."""
        self.start_step, self.start_units, self.warmup_units = (
            step,
            int(saved["units"]),
            int(saved["warmup_units"]),
        )


def build_scheduler(
    config: OptimConfig, optimizer: torch.optim.Optimizer, clock: ScheduleClock
) -> torch.optim.lr_scheduler.LambdaLR:
    """The :func:`lr_schedule` of ``config`` on ``optimizer``, read on ``clock`` at every step (an
    elastic resume moves the clock's start and total)."""

    def factor(step: int) -> float:
        schedule = lr_schedule(
            config.schedule, clock.warmup_units, clock.total_units, config.min_lr_ratio, clock.step_batches
        )
        return schedule(clock.units(step))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class TrainSource:
    """Where a run's train batches come from: the train shards (``urls``; ``shard_entries`` maps each
    to its manifest entry, empty for ``--train-shards``) or, for ``--source sequences``, ``windows``
    over ``sequences.parquet``. ``item_store`` serves item frames to evaluation (video encoders);
    ``train_store`` to training too, when the dataset's layout or ``--frames-from`` says so."""

    config: DataConfig
    urls: list[str]
    shard_entries: dict[str, dict]
    windows: list[np.ndarray] | None
    samples: int
    """Train samples in one epoch (windows, or the train shards' samples)."""
    embedded_frames: bool
    """Whether the train shards embed frames (whose order is split between several readers)."""
    item_store: ItemStore | None
    train_store: ItemStore | None
    with_frames: bool

    def global_order_on(self, world_size: int, num_workers: int) -> bool:
        """Whether a run of ``world_size`` ranks x ``num_workers`` loader workers reads the global order:
        always, unless the train shards embed frames and more than one reader would each read all of
        them (the order is then split between readers)."""
        single_reader = world_size * max(1, num_workers) == 1
        return self.windows is not None or not self.embedded_frames or single_reader

    def batches(self, position: StreamPosition, *, seed: int, max_seq_len: int, **stream) -> Iterator[dict]:
        """An epoch's batches from ``position`` on (the batches already trained are skipped).
        ``stream``: ``batches_per_epoch``, ``rank``, ``world_size``, ``batches_per_step``, ``pin_memory``
        and, for shards, ``global_order``."""
        pin_memory = stream.pop("pin_memory")
        position = StreamPosition(**position.to_dict())
        if self.windows is not None:
            stream.pop("global_order", None)
            windows = SequenceWindowStream(
                self.windows,
                batch_size=self.config.batch_size,
                seed=seed,
                shuffle=self.config.shuffle_buffer > 1,
                max_seq_len=max_seq_len,
                position=position,
                **stream,
            )
            return iter(train_loader(windows, self.config, pin_memory=pin_memory))
        shards = TrainStream(
            self.urls,
            self.config,
            seed=seed,
            max_seq_len=max_seq_len,
            with_frames=self.with_frames,
            position=position,
            shard_entries=self.shard_entries,
            item_store=self.train_store,
            **stream,
        )
        return iter(train_loader(shards, self.config, pin_memory=pin_memory))


def build_source(config: TrainConfig, dataset: DatasetInfo, use_frames: bool) -> TrainSource:
    """The :class:`TrainSource` of ``config`` on ``dataset``; ``use_frames``: the model encodes frames.

    Raises:
        UsageError: the model needs frames and the dataset has none.
        DatasetError: no train shards, or a local one missing or of another size than the manifest's.
    """
    data = config.data
    if use_frames and not dataset.has_frames:
        raise UsageError(
            f"encoder {config.model.encoder!r} needs frames but dataset {dataset.root} has none (ID-only); "
            "train --encoder id on it, or ingest the videos with --videos"
        )
    urls = expand_shard_urls(data.train_shards) if data.train_shards else dataset.shard_urls("train")
    if data.source == "shards":
        if not urls:
            raise DatasetError(
                f"{dataset.root} has no train shards (no user has more than 3 interactions); "
                "ingest more interactions per user"
            )
        if not data.train_shards:
            check_local_shards(dataset, "train")
    # frames come from the item store (item shards, by offset): for evaluation always, for training
    # on a reference-layout dataset or with --frames-from store; lost items are counted (Trainer._account)
    item_store = item_store_for(dataset, data) if use_frames else None
    from_store = use_frames and train_frames_from_store(dataset.manifest, data.frames_from)
    windows = (
        training_windows(dataset.sequences, config.model.max_seq_len) if data.source == "sequences" else None
    )
    return TrainSource(
        config=data,
        urls=urls,
        shard_entries={} if data.train_shards else dataset.shard_entries("train"),
        windows=windows,
        samples=len(windows) if windows is not None else dataset.shard_samples("train"),
        embedded_frames=dataset.has_frames and train_frames_of(dataset.manifest) == TRAIN_FRAMES_EMBEDDED,
        item_store=item_store,
        train_store=item_store if from_store else None,
        with_frames=use_frames,
    )
