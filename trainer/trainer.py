"""The training loop: optimizer steps over the shard stream, evaluation, checkpoints, resume."""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint
from trainer.config import SELECTION_METRICS, TrainConfig
from trainer.data import StreamPosition, TrainStream, expand_shard_urls, train_loader
from trainer.dataset import DatasetInfo
from trainer.evaluate import ItemTable, encode_items, popularity_baseline, score_split
from trainer.frames import FrameTransform, decode_clip_on_device
from trainer.loss import full_softmax_loss, gather_candidates, in_batch_softmax_loss, log_popularity
from trainer.models.videorec import build_model
from trainer.progress import METRICS_FILE, ProgressReporter, summary_table, truncate_metrics
from trainer.sequence_windows import SequenceWindowStream, training_windows

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


def lr_schedule(schedule: str, warmup_steps: int, total_steps: int, min_ratio: float):
    """LR multiplier: linear warmup to 1, then ``cosine`` decay to ``min_ratio`` at ``total_steps``
    or ``constant`` 1."""
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown schedule {schedule!r}; choose cosine or constant")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class DataLossError(RuntimeError):
    """More training samples were lost (corrupt samples, failed reads) than the run allows."""


class Trainer:
    """Trains one VideoRec on one dataset version, on one rank of a (possibly 1-process) group."""

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
        self.model = build_model(
            config.model,
            dataset.num_items,
            num_frames=dataset.num_frames or 5,
            frame_size=config.data.frame_size,
            encoder_spec=encoder_spec,
        ).to(self.device)
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
            raise ValueError(
                f"encoder {config.model.encoder!r} needs frames but dataset {dataset.root} has none"
            )
        if config.loss.candidates == "full" and self.use_frames:
            raise ValueError(
                "full-softmax candidates need an id or frozen encoder (video items are encoded per batch)"
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
            raise ValueError(f"unknown data source {config.data.source!r}; choose shards or sequences")
        if config.data.source == "sequences" and self.use_frames:
            raise ValueError("--source sequences has no frames; use it with the id or frozen encoder")
        self.windows = (
            training_windows(dataset.sequences, config.model.max_seq_len)
            if config.data.source == "sequences"
            else None
        )
        samples = len(self.windows) if self.windows is not None else dataset.shard_samples("train")
        per_step = world_size * config.data.batch_size * optim.grad_accumulation
        self.steps_per_epoch = optim.steps_per_epoch or max(1, samples // per_step)
        self.total_steps = optim.epochs * self.steps_per_epoch
        if optim.max_steps is not None:
            self.total_steps = min(self.total_steps, optim.max_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_schedule(optim.schedule, optim.warmup_steps, self.total_steps, optim.min_lr_ratio),
        )
        if config.selection_metric not in SELECTION_METRICS:
            raise ValueError(
                f"unknown selection metric {config.selection_metric!r}; choose {SELECTION_METRICS}"
            )
        self.planned_samples = self.total_steps * per_step
        self.autocast = optim.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # bf16 needs no loss scaling
        self.log_q = log_popularity(torch.from_numpy(dataset.popularity)).to(self.device)
        self.train_transform = FrameTransform(
            config.data.frame_size, config.data.squash, train=True, augment=config.data.augment
        )
        self.step = 0
        self.position = StreamPosition(num_workers=config.data.num_workers)
        self.best = {"step": -1, "score": -1.0}
        self.skipped_samples = 0
        self.failed_reads = 0
        self.metrics_lines = 0
        self.reporter: ProgressReporter | None = None

    # --- one optimizer step -------------------------------------------------------------------

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

    def train_step(self, micro_batches: list[dict]) -> float:
        """One optimizer step over gradient-accumulation micro-batches; returns the mean loss."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = self.module.no_sync() if (self.world_size > 1 and not last) else nullcontext()
            with sync:
                loss = self._loss(batch) / len(micro_batches)
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
        self.scaler.unscale_(self.optimizer)
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return total

    # --- the loop -----------------------------------------------------------------------------

    def _evaluate(self, split: str) -> tuple[dict[str, float], ItemTable]:
        """Encode every item once (loader workers, bf16 autocast when training uses it), then score
        ``split`` in fp32."""
        self.model.eval()
        items = encode_items(
            self.model,
            self.dataset,
            self.config.data.frame_size,
            self.config.data.squash,
            self.config.eval_batch_size,
            self.device,
            self.rank,
            self.world_size,
            num_workers=self.config.data.num_workers,
            autocast=self.autocast,
        )
        metrics = score_split(
            self.model,
            self.dataset,
            split,
            items,
            max_seq_len=self.config.model.max_seq_len,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            rank=self.rank,
            world_size=self.world_size,
        )
        return metrics, items

    def _batches(self):
        """This epoch's remaining batches (the stream starts after the batches already trained)."""
        batches_per_epoch = self.steps_per_epoch * self.config.optim.grad_accumulation
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
            while (
                self.step < self.total_steps and self.position.batches < self.steps_per_epoch * accumulation
            ):
                micro = [next(batches) for _ in range(accumulation)]
                loss = self.train_step(micro)
                self.position.batches += accumulation
                self._account(micro)
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
            if self.position.batches >= self.steps_per_epoch * accumulation:
                self.position = StreamPosition(self.position.epoch + 1, 0, self.config.data.num_workers)
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

    def _account(self, micro: list[dict]) -> None:
        """Count the step's lost samples (all ranks) and stop the run past ``max_lost_fraction``."""
        lost = torch.tensor(
            [sum(int(b["skipped"]) for b in micro), sum(int(b.get("read_errors", 0)) for b in micro)]
        )
        if self.world_size > 1:  # every rank sees the same totals, so all stop together
            lost = lost.to(self.device)
            dist.all_reduce(lost)
        skipped, failed = (int(n) for n in lost.tolist())
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
                f"{self.planned_samples} samples this run reads (budget {budget:g}); see the warnings above"
            )

    def _loss_report(self) -> dict:
        return {
            "skipped_samples": self.skipped_samples,
            "failed_reads": self.failed_reads,
            "planned_samples": self.planned_samples,
            "max_lost_fraction": self.config.data.max_lost_fraction,
        }

    def _checkpoint_extras(self) -> dict:
        """What ``videorec evaluate`` needs besides the weights: config, dataset and encoder spec."""
        return {
            "config": self.config.to_dict(),
            "dataset_root": self.dataset.root,
            "dataset_version": self.dataset.version,
            "encoder_spec": self.model.encoder_spec(),
        }

    def _validate(self, reporter: ProgressReporter) -> None:
        metrics, items = self._evaluate("valid")
        reporter.write(
            {
                "type": "eval",
                "split": "valid",
                "step": self.step,
                "epoch": self.position.epoch,
                **metrics,
                **items.stats(),
            }
        )
        selected = metrics[self.config.selection_metric]
        score = 0.0 if math.isnan(selected) else selected  # no valid users
        if score > self.best["score"]:  # starts at -1: the first validation always saves best.pt
            self.best = {"step": self.step, "score": score}
            if self.rank == 0:
                checkpoint.save_atomic(
                    {
                        "model": self.model.state_dict(),
                        "step": self.step,
                        "valid": metrics,
                        **self._checkpoint_extras(),
                    },
                    self.run_dir / "checkpoints" / checkpoint.BEST,
                )
        _barrier(self.world_size)

    def _test(self, reporter: ProgressReporter) -> dict[str, dict[str, float]]:
        best = checkpoint.load(self.run_dir / "checkpoints" / checkpoint.BEST)
        self.model.load_state_dict(best["model"])
        test, items = self._evaluate("test")
        results = {
            "valid": best["valid"],
            "test": test,
            "popularity_test": popularity_baseline(self.dataset, "test", items.encoded.cpu()),
        }
        reporter.write(
            {
                "type": "eval",
                "split": "test",
                "step": self.step,
                "best_step": best["step"],
                **results["test"],
                **items.stats(),
            }
        )
        if self.rank == 0:
            summary = {
                "best_step": best["step"],
                "selection_metric": self.config.selection_metric,
                "steps": self.step,
                "dataset_version": self.dataset.version,
                "dataset_root": self.dataset.root,
                "encoder": self.config.model.encoder,
                "encoder_weights": self.config.model.encoder_weights,
                "items": items.stats(),
                "lost": self._loss_report(),
                **results,
            }
            (self.run_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
            print(summary_table(results))
        return results

    # --- state --------------------------------------------------------------------------------

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
            **self._checkpoint_extras(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["dataset_version"] != self.dataset.version:
            raise ValueError(
                f"checkpoint is for dataset version {state['dataset_version']!r}, "
                f"not {self.dataset.version!r}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.position = StreamPosition(**state["position"])
        if self.position.num_workers != self.config.data.num_workers:
            log.warning(
                "resuming with %d loader workers instead of %d: batch order after resume differs",
                self.config.data.num_workers,
                self.position.num_workers,
            )
            self.position.num_workers = self.config.data.num_workers
        self.best = dict(state["best"])
        self.skipped_samples = int(state["skipped_samples"])
        self.failed_reads = int(state["failed_reads"])
        self.metrics_lines = int(state["metrics_lines"])

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
        _barrier(self.world_size)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save`."""
        state = checkpoint.load(path)
        if "rank_rng" in state and self.rank < len(state["rank_rng"]):
            state["rng"] = state["rank_rng"][self.rank]
        self.load_state_dict(state)


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
