"""Benchmark: can the streaming loader feed the training step?

On one dataset of JPEG frames (default: ``videorec synth`` + the real ingest job at
``--frame-size``; or ``--data DIR``), measures in one run:

1. loader throughput on one core (``num_workers=0``, one torch thread): samples/s and
   decoded frames/s of the trainer's stream (tar read, shuffle, JSON, fused Pillow decode +
   random crop + flip straight to ``S x S``, collate);
2. baseline: stock ``webdataset.WebDataset(...).decode("torchrgb8")`` over the same shards,
   which decodes every member (no augmentation), on the same core;
3. the ratio of the two (frames/s), from ``--rounds`` alternating rounds of each (median),
   so load from other processes hits both alike;
4. training-step consumption (samples/s of ``Trainer.train_step`` on cached batches) for
   ``--encoders`` (default ``tiny`` and ``r3d_18``), and the loader cores needed to keep each fed.

    .venv/bin/python benchmarks/bench_loader.py [--data DIR] [--batches 20] [--out results.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import webdataset as wds  # noqa: E402

from trainer.config import preset  # noqa: E402
from trainer.data import StreamPosition, TrainStream  # noqa: E402
from trainer.dataset import load_dataset  # noqa: E402
from trainer.trainer import Trainer  # noqa: E402


def make_dataset(folder: Path, frame_size: int) -> Path:
    """synth (videos + log) -> real Beam ingest -> dataset folder."""
    from pipeline.main import run as ingest
    from pipeline.synth import SynthConfig, generate

    generate(folder / "raw", SynthConfig(users=200, items=100, seed=3, hevc_fraction=0.0, max_seconds=3.0))
    ingest(
        [
            "--interactions",
            str(folder / "raw/pairs.csv"),
            "--videos",
            str(folder / "raw/videos"),
            "--output",
            str(folder / "ds"),
            "--frame-size",
            str(frame_size),
            "--quiet",
        ]
    )
    return folder / "ds"


def loader_rate(dataset, batch_size: int, frame_size: int, batches: int) -> tuple[dict, list[dict]]:
    """The trainer's stream, read in this process: rates and the batches it produced."""
    config = preset("tiny").data
    config.batch_size, config.frame_size = batch_size, frame_size
    stream = TrainStream(
        dataset.shard_urls("train"),
        config,
        seed=0,
        max_seq_len=dataset.max_seq_len,
        batches_per_epoch=batches,
        with_frames=True,
        position=StreamPosition(),
    )
    start, samples, frames, cached = time.perf_counter(), 0, 0, []
    for batch in stream:
        samples += len(batch["items"])
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]
        cached.append(batch)
    elapsed = time.perf_counter() - start
    rates = {
        "samples_per_s": samples / elapsed,
        "frames_per_s": frames / elapsed,
        "frames_per_sample": frames / samples,
    }
    return rates, cached


def baseline_rate(dataset, samples: int) -> dict:
    """Stock webdataset decode of ``samples`` train samples (passes over the shards), in this process."""
    start, seen, frames = time.perf_counter(), 0, 0
    while seen < samples:
        pipeline = wds.WebDataset(dataset.shard_urls("train"), shardshuffle=False).decode("torchrgb8")
        for sample in itertools.islice(pipeline, samples - seen):
            seen += 1
            frames += sum(1 for key in sample if key.endswith(".jpg"))
    elapsed = time.perf_counter() - start
    return {"samples_per_s": seen / elapsed, "frames_per_s": frames / elapsed}


def step_rate(dataset, encoder: str, batches: list[dict], frame_size: int, steps: int) -> dict:
    config = preset("tiny")
    config.model.encoder, config.data.frame_size, config.output = encoder, frame_size, tempfile.mkdtemp()
    config.model.dim, config.model.ffn_dim, config.model.freeze = 512, 2048, "top-k"
    config.model.allow_random_backbone = True  # speed does not depend on the weights
    trainer = Trainer(config, dataset)
    trainer.train_step([batches[0]])  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        trainer.train_step([batches[(i + 1) % len(batches)]])
    elapsed = time.perf_counter() - start
    samples = sum(len(batches[(i + 1) % len(batches)]["items"]) for i in range(steps))
    return {"samples_per_s": samples / elapsed, "step_s": elapsed / steps}


def _median(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: synth + ingest into a temp folder)")
    parser.add_argument(
        "--frame-size", type=int, default=112, help="encoder input side (and ingest frame size)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="loader batches to time")
    parser.add_argument("--steps", type=int, default=3, help="train steps to time per encoder")
    parser.add_argument("--rounds", type=int, default=3, help="alternating loader / baseline rounds")
    parser.add_argument(
        "--encoders", default="tiny,r3d_18", help="encoders whose step rate to time ('' for none)"
    )
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or str(make_dataset(Path(scratch), args.frame_size))
        dataset = load_dataset(data)
        torch.set_num_threads(1)  # the loader and the baseline: one core each
        ours, stock = [], []
        for _ in range(args.rounds):
            rates, cached = loader_rate(dataset, args.batch_size, args.frame_size, args.batches)
            ours.append(rates)
            stock.append(baseline_rate(dataset, samples=args.batch_size * args.batches))
        loader, baseline = _median(ours), _median(stock)
        results = {
            "device": "cuda" if torch.cuda.is_available() else f"cpu x{os.cpu_count()}",
            "frame_size": args.frame_size,
            "batch_size": args.batch_size,
            "frames_per_item": dataset.num_frames,
            "stored_frame_size": dataset.manifest["sampler"].get("size"),
            "rounds": args.rounds,
            "loader_one_core": loader,
            "baseline_stock_webdataset_decode_one_core": baseline,
            "loader_vs_stock_frames_per_s": loader["frames_per_s"] / baseline["frames_per_s"],
            "train_step": {},
        }
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        for encoder in filter(None, args.encoders.split(",")):
            step = step_rate(dataset, encoder, cached, args.frame_size, args.steps)
            step["loader_cores_needed"] = step["samples_per_s"] / loader["samples_per_s"]
            results["train_step"][encoder] = step
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
