"""A run's evaluations: validation each epoch (choosing ``best.pt``) and the final test (``results.json``).

:class:`RunEvaluation` is a part of :class:`trainer.trainer.Trainer` (mixed in): it evaluates the
trainer's model on its dataset (``trainer.evaluate``: every item encoded once, full ranking) and
writes what it finds to the run's metrics and results.
"""

from __future__ import annotations

import math

from trainer import checkpoint
from trainer.errors import DataLossError
from trainer.evaluate import ItemTable, encode_item_table, popularity_baseline, score_split
from trainer.progress import ProgressReporter, dumps_strict, summary_table
from trainer.run_state import barrier

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


class RunEvaluation:
    """Validation and test of a :class:`~trainer.trainer.Trainer`."""

    def _evaluate(self, split: str) -> tuple[dict[str, float], ItemTable]:
        """Encode every item once (loader workers, bf16 autocast when training uses it), check that no
        more than ``--max-lost-fraction`` of them were lost, then score ``split`` in fp32."""
        self.model.eval()
        items = encode_item_table(
            self.model,
            self.dataset,
            self.config.data.frame_size,
            self.config.data.squash,
            self.config.eval_batch_size,
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

    def _loss_report(self) -> dict:
        """The samples this run lost to damaged data, against what it allows (``results.json``)."""
        return {
            "skipped_samples": self.skipped_samples,
            "failed_reads": self.failed_reads,
            "planned_samples": self.planned_samples,
            "max_lost_fraction": self.config.data.max_lost_fraction,
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
            self.save_best(metrics)
        barrier(self.world_size)

    def _test(self, reporter: ProgressReporter) -> dict[str, dict[str, float]]:
        best = checkpoint.load(self.run_dir / "checkpoints" / checkpoint.BEST)
        self.model.load_state_dict(best["model"])
        test, items = self._evaluate("test")
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
            (self.run_dir / RESULTS_FILE).write_text(dumps_strict(summary, indent=2, sort_keys=True) + "\n")
            print(summary_table(results))
        return results
