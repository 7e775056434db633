"""A run's evaluations: validation each epoch (choosing ``best.pt``) and the final test (``results.json``).

:class:`RunEvaluator` is a part a :class:`trainer.trainer.Trainer` holds: it evaluates the trainer's
model on its dataset (``trainer.evaluate``: every item encoded once, full ranking) and writes what it
finds to the run's metrics, ``best.pt`` (through the run's checkpoint manager) and results.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from trainer.checkpoint_manager import CheckpointManager, barrier
from trainer.config import TrainConfig
from trainer.dataset import DatasetInfo
from trainer.errors import DataLossError
from trainer.evaluate import ItemTable, encode_item_table, popularity_baseline, score_split
from trainer.item_store import ItemStore
from trainer.models.videorec import VideoRec
from trainer.progress import ProgressReporter, dumps_strict, summary_table

RESULTS_FILE = "results.json"


def check_items_lost(items: ItemTable, num_items: int, max_lost_fraction: float) -> None:
    """Refuse metrics computed without more than ``max_lost_fraction`` of the items: an item that
    could not be encoded is no candidate, so every metric would be of a smaller catalogue.

    Raises:
        DataLossError: too many items were not encoded (exit 4).
    """
    lost = items.not_encoded
    if lost > max_lost_fraction * num_items:
        raise DataLossError(
            f"{lost} of {num_items} items could not be encoded for evaluation (decode failures "
            f"{items.failed}, items not read {items.read_errors}{items.example()}, the rest without frames "
            f"in the items table), more than --max-lost-fraction {max_lost_fraction:g}: "
            "the metrics would rank a smaller catalogue; see the warnings above, and write the dataset "
            "again or raise --max-lost-fraction"
        )


class RunEvaluator:
    """Validation and test of a run's ``model`` on ``dataset``, as seen from ``rank`` of ``world_size``.

    ``item_store`` serves item frames (video encoders); ``autocast``: encode items in bf16 (training
    uses it). ``best`` is the best validation so far (``step``, ``score``: a checkpoint keeps it)."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: DatasetInfo,
        model: VideoRec,
        checkpoints: CheckpointManager,
        item_store: ItemStore | None,
        *,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        autocast: bool = False,
    ):
        self.config, self.dataset, self.model, self.checkpoints = config, dataset, model, checkpoints
        self.item_store, self.device, self.autocast = item_store, device, autocast
        self.rank, self.world_size = rank, world_size
        self.best = {"step": -1, "score": -1.0}

    def evaluate(self, split: str) -> tuple[dict[str, float], ItemTable]:
        """Encode every item once (loader workers, bf16 autocast when training uses it), check that no
        more than ``--max-lost-fraction`` of them were lost, then score ``split`` in fp32."""
        self.model.eval()
        items = encode_item_table(
            self.model,
            self.dataset,
            self.config.data.frame_size,
            self.config.data.squash,
            self.config.item_batch_size,
            self.device,
            self.rank,
            self.world_size,
            store=self.item_store,
            num_workers=self.config.data.num_workers,
            autocast=self.autocast,
        )
        check_items_lost(items, self.dataset.num_items, self.config.data.max_lost_fraction)
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

    def validate(
        self, reporter: ProgressReporter, step: int, epoch: int, best_state: Callable[[], dict]
    ) -> None:
        """Score the validation split at ``step`` and report it; a better ``--selection-metric`` than
        :attr:`best` writes ``best.pt``: ``best_state()`` (the weights and what ``evaluate`` needs)
        with the step and its metrics."""
        metrics, items = self.evaluate("valid")
        reporter.write(
            {"type": "eval", "split": "valid", "step": step, "epoch": epoch, **metrics, **items.stats()}
        )
        selected = metrics[self.config.selection_metric]
        score = 0.0 if math.isnan(selected) else selected  # no valid users
        if score > self.best["score"]:  # starts at -1: the first validation always saves best.pt
            self.best = {"step": step, "score": score}
            if self.rank == 0:
                self.checkpoints.save_best({**best_state(), "step": step, "valid": metrics})
        barrier(self.world_size)

    def test(self, reporter: ProgressReporter, step: int, lost: dict) -> dict[str, dict[str, float]]:
        """Score the test split with ``best.pt``'s weights; rank 0 writes ``results.json`` (with the
        samples the run ``lost``) and prints the summary table. Returns valid, test and popularity metrics."""
        best = self.checkpoints.load_best()
        self.model.load_state_dict(best["model"])
        test, items = self.evaluate("test")
        results = {
            "valid": best["valid"],
            "test": test,
            "popularity_test": popularity_baseline(
                self.dataset, "test", items.encoded.cpu(), rank=self.rank, world_size=self.world_size
            ),
        }
        reporter.write(
            {
                "type": "eval",
                "split": "test",
                "step": step,
                "best_step": best["step"],
                **results["test"],
                **items.stats(),
            }
        )
        if self.rank == 0:
            summary = {
                "best_step": best["step"],
                "selection_metric": self.config.selection_metric,
                "steps": step,
                "dataset_version": self.dataset.version,
                "dataset_root": self.dataset.root,
                "encoder": self.config.model.encoder,
                "encoder_weights": self.config.model.encoder_weights,
                "items": items.stats(),
                "lost": lost,
                **results,
            }
            run_dir = self.checkpoints.folder.parent
            (run_dir / RESULTS_FILE).write_text(dumps_strict(summary, indent=2, sort_keys=True) + "\n")
            print(summary_table(results))
        return results
