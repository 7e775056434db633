"""One optimizer step of a :class:`trainer.trainer.Trainer`: the loss of each micro-batch, the backward
passes and the update; a step without samples; a rank without samples under DDP.

:class:`OptimizerStep` is a part the trainer holds: it is given the model, the module that trains it
(DDP on several ranks), the optimizer and scheduler made by ``trainer.builders``, and owns the grad
scaler, the log-popularity correction and the train-time frame transform.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import nullcontext

import torch
import torch.distributed as dist

from trainer.config import TrainConfig
from trainer.dataset import DatasetInfo
from trainer.errors import TrainingDiverged
from trainer.frames import FrameTransform, decode_clip_on_device
from trainer.loss import full_softmax_loss, gather_candidates, in_batch_softmax_loss, log_popularity
from trainer.models.videorec import VideoRec

log = logging.getLogger(__name__)


class OptimizerStep:
    """The optimizer step of a run on ``dataset``, as seen from one rank of ``world_size``; ``autocast``:
    the forward passes run in bf16."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: DatasetInfo,
        model: VideoRec,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        device: torch.device,
        world_size: int = 1,
        autocast: bool = False,
    ):
        self.config, self.dataset, self.model, self.module = config, dataset, model, module
        self.optimizer, self.scheduler = optimizer, scheduler
        self.device, self.world_size, self.autocast = device, world_size, autocast
        self.use_frames = model.needs_frames
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling
        self.log_q = log_popularity(torch.from_numpy(dataset.popularity)).to(device)
        self.train_transform = FrameTransform(
            config.data.frame_size, config.data.squash, train=True, augment=config.data.augment
        )

    def _frames(self, batch: dict) -> torch.Tensor | None:
        if not self.use_frames:
            return None
        if "jpegs" in batch:
            clips = [decode_clip_on_device(jpegs, str(self.device)) for jpegs in batch["jpegs"]]
            return torch.stack([self.train_transform(clip) for clip in clips])
        return batch["frames"].to(self.device, non_blocking=True)

    def _loss(self, batch: dict) -> torch.Tensor:
        items = batch["items"].to(self.device, non_blocking=True)
        unique = batch["unique_items"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            states, embeddings = self.module(items, unique, self._frames(batch))
            if self.config.loss.candidates == "full":
                table = self.model.item_encoder(torch.arange(self.dataset.num_items + 1, device=self.device))
                return full_softmax_loss(states, items, table)
            if self.config.loss.gather_negatives and self.world_size > 1:
                unique, embeddings = gather_candidates(unique, embeddings)
            return in_batch_softmax_loss(
                states, items, unique, embeddings, self.log_q if self.config.loss.logq else None
            )

    def _idle_loss(self) -> torch.Tensor:
        """The loss of a micro-batch without samples under DDP (the epoch's last step left this rank
        none, or all its samples were lost): 0, from a forward of the padding item in eval mode (no
        batch-norm statistics move, no dropout draws), so the rank joins the step's collectives
        (candidate gathering, the gradient all-reduce) and adds nothing to the gradients. Item 0 is
        never a candidate of the other ranks' losses."""
        items = torch.zeros(1, self.config.model.max_seq_len + 1, dtype=torch.long, device=self.device)
        unique = torch.zeros(1, dtype=torch.long, device=self.device)
        size = self.config.data.frame_size
        frames = (
            torch.zeros(1, self.dataset.num_frames or 5, 3, size, size, dtype=torch.uint8, device=self.device)
            if self.use_frames
            else None
        )
        self.model.eval()
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                states, embeddings = self.module(items, unique, frames)
                if self.config.loss.gather_negatives:
                    _, embeddings = gather_candidates(unique, embeddings)
        finally:
            self.model.train()
        return (states.float().sum() + embeddings.float().sum()) * 0.0

    def run(self, micro_batches: list[dict], per_rank: float | None = None, step: int = 0) -> float:
        """Optimizer step ``step + 1`` over gradient-accumulation micro-batches; returns the mean loss.

        ``per_rank``: the step's micro-batches that hold samples, over all ranks, divided by the
        world size (default: ``len(micro_batches)``). Each micro-batch's loss is divided by it, so the
        gradient DDP averages is the mean over the micro-batches that hold samples; under DDP a
        micro-batch without samples takes an idle pass (:meth:`_idle_loss`).
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        per_rank = per_rank or len(micro_batches)
        total = 0.0
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = self.module.no_sync() if (self.world_size > 1 and not last) else nullcontext()
            with sync:
                loss = (self._loss(batch) if len(batch["items"]) else self._idle_loss()) / per_rank
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
        self._check_finite(total, step)
        self.scaler.unscale_(self.optimizer)
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return total

    def _check_finite(self, loss: float, step: int) -> None:
        """Stop the run when the step's loss is NaN or infinite on any rank, before the optimizer
        writes it into the weights (``TrainingDiverged``, exit 4)."""
        bad = torch.tensor([0.0 if math.isfinite(loss) else 1.0])
        if self.world_size > 1:  # every rank stops together
            bad = bad.to(self.device)
            dist.all_reduce(bad)
        if float(bad.sum()):
            raise TrainingDiverged(
                f"the loss became {loss} at step {step + 1} (--lr {self.config.optim.lr:g}); the run "
                "stopped before updating the weights with it: lower --lr or check the data"
            )

    def skip(self, step: int) -> float:
        """Step ``step + 1``, whose samples were all lost: no update, the schedule moves on; the loss is NaN."""
        log.warning("step %d: every sample of the step was lost; no update", step + 1)
        with warnings.catch_warnings():  # the schedule moves on although the optimizer did not step
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)`")
            self.scheduler.step()
        return math.nan
