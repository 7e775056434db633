"""Run observability: a progress bar, ``metrics.jsonl``, TensorBoard when installed, a summary table.

Only rank 0 reports; other ranks get a reporter that does nothing.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"


def strict_json(value):
    """``value`` with every NaN or infinite float replaced by None (JSON ``null``), in dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


def dumps_strict(value, **options) -> str:
    """Strict JSON (RFC 8259) of ``value``: NaN and infinities become ``null``, never bare ``NaN``."""
    return json.dumps(strict_json(value), allow_nan=False, **options)


def truncate_metrics(path: Path, keep_lines: int) -> None:
    """Keep the first ``keep_lines`` records: the ones a resumed checkpoint had seen written."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    path.write_text("".join(lines[:keep_lines]))


class ProgressReporter:
    """Progress bar with loss, samples/s, items/s and ETA; JSONL (and TensorBoard) metrics."""

    def __init__(
        self, run_dir: Path, total_steps: int, first_step: int, enabled: bool, show_bar: bool = True
    ):
        self.enabled = enabled
        self.run_dir = run_dir
        self.bar = tqdm(
            total=total_steps,
            initial=first_step,
            unit="step",
            dynamic_ncols=True,
            disable=not (enabled and show_bar),
        )
        self.writer = self._tensorboard() if enabled else None
        self.window_start = time.perf_counter()
        self.window_samples = 0
        self.window_items = 0
        self.lines_written = 0

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        """Append one JSON record to metrics.jsonl (and scalars to TensorBoard)."""
        if not self.enabled:
            return
        with open(self.run_dir / METRICS_FILE, "a") as out:
            out.write(dumps_strict(record, sort_keys=True) + "\n")
        self.lines_written += 1
        if self.writer is not None:
            prefix = record.get("split", record.get("type", "run"))
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{prefix}/{key}", value, record.get("step", 0))

    def step(self, record: dict, samples: int, items: int) -> dict:
        """Account one optimizer step; returns ``record`` with throughput added."""
        self.window_samples += samples
        self.window_items += items
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        record = dict(
            record, samples_per_s=self.window_samples / elapsed, items_per_s=self.window_items / elapsed
        )
        self.bar.update(1)
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            samples_s=f"{record['samples_per_s']:.1f}",
            items_s=f"{record['items_per_s']:.1f}",
        )
        return record

    def reset_window(self) -> None:
        """Restart throughput measurement (after evaluation pauses)."""
        self.window_start, self.window_samples, self.window_items = time.perf_counter(), 0, 0

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _cell(name: str, value: float) -> str:
    is_count = name.startswith(("users", "targets_not_encoded"))
    return str(int(value)) if is_count and value == value else f"{value:.4f}"


def summary_table(results: dict[str, dict[str, float]]) -> str:
    """``{split: {metric: value}}`` as an aligned text table: one row per split and user subset
    (``test``, ``test/rare``, ``test/warm``, ``test/new``...), one column per metric."""
    subsets: dict[str, dict[str, float]] = {}
    for split, values in results.items():
        for key, value in values.items():
            name, _, subset = key.partition("/")
            subsets.setdefault(f"{split}/{subset}" if subset else split, {})[name] = value
    names = sorted(
        {k for values in subsets.values() for k in values},
        key=lambda k: (k.startswith(("users", "targets")), k),
    )
    header = ["split", *names]
    rows = [
        [row, *("" if name not in values else _cell(name, values[name]) for name in names)]
        for row, values in subsets.items()
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
