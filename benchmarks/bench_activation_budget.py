"""Benchmark: a full fine-tuning step of a video encoder with the activation budget against without it.

For each encoder, one process builds the full-size net (random weights, no download) and times a
training forward + backward of ``--clips`` 5-frame clips at ``--frame-size`` px, alternating the
default budget (chunked, checkpointed encoding where the clips would save more than it) and
``--activation-budget-gb 0`` (the whole step at once, the baseline), ``--repeats`` times each after
one warm-up step of each. It reports the median seconds of each, their ratio, the chunk the budget
chose, and the clip's saved activations the probe measured. Peak memory is in
``tests/test_encoder_memory.py`` and docs/TRAINING.md (a process's peak RSS cannot be split between
two arms run in one process).

    .venv/bin/python benchmarks/bench_activation_budget.py [--encoders r2plus1d_18 mvit_v2_s tiny]
        [--clips 22] [--frame-size 112] [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import ModelConfig  # noqa: E402
from trainer.models.videorec import build_item_encoder  # noqa: E402


def step_seconds(encoder, frames: torch.Tensor, budget_gb: float | None) -> float:
    encoder.activation_budget_gb = budget_gb
    encoder.zero_grad(set_to_none=True)
    started = time.perf_counter()
    encoder(torch.arange(len(frames)), frames).square().mean().backward()
    return time.perf_counter() - started


def measure(name: str, clips: int, frame_size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    encoder = build_item_encoder(
        ModelConfig(encoder=name, freeze="all"), 10, num_frames=5, frame_size=frame_size
    )
    encoder.train()
    frames = torch.randint(0, 256, (clips, 5, 3, frame_size, frame_size), dtype=torch.uint8)
    arms = {"budget": None, "whole": 0.0}
    times = {arm: [] for arm in arms}
    for round_ in range(repeats + 1):
        for arm, budget in arms.items():
            seconds = step_seconds(encoder, frames, budget)
            if round_:  # the first round warms up (and runs the probe)
                times[arm].append(seconds)
    encoder.activation_budget_gb = None
    median = {arm: statistics.median(values) for arm, values in times.items()}
    return {
        "encoder": name,
        "clips": clips,
        "saved_mb_per_clip": round(encoder.saved_bytes_per_clip(frames) / 1e6, 1),
        "chunk": encoder.training_chunk(frames),
        "budget_s": round(median["budget"], 3),
        "whole_s": round(median["whole"], 3),
        "budget_vs_whole": round(median["budget"] / median["whole"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", nargs="+", default=["r2plus1d_18", "mvit_v2_s", "tiny"])
    p.add_argument("--clips", type=int, default=22, help="clips of the step (--batch-size 2 x 11 items)")
    p.add_argument("--frame-size", type=int, default=112)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    results = [measure(name, args.clips, args.frame_size, args.repeats) for name in args.encoders]
    print("| encoder | clips | saved MB / clip | chunk | step s, budget | step s, whole | budget / whole |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['encoder']} | {r['clips']} | {r['saved_mb_per_clip']} | {r['chunk']} | {r['budget_s']} | "
            f"{r['whole_s']} | {r['budget_vs_whole']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
