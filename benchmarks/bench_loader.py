"""Benchmark: can the streaming loader feed the training step?

On one dataset of JPEG frames (default: ``videorec synth`` + the real ingest job at
``--frame-size``; or ``--data DIR``), measures in one run:

1. loader throughput on one core (``num_workers=0``): samples/s and decoded frames/s of
   the trainer's stream (tar read, shuffle, JSON, Pillow JPEG decode with draft downscale,
   crop/flip, collate);
2. baseline: stock ``webdataset.WebDataset(...).decode("torchrgb8")`` over the same shards,
   which decodes every member at full size;
3. training-step consumption (samples/s of ``Trainer.train_step`` on cached batches) for the
   ``tiny`` and ``r3d_18`` encoders, and the loader cores needed to keep each fed.

    .venv/bin/python benchmarks/bench_loader.py [--data DIR] [--batches 20] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
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


def loader_rate(dataset, batch_size: int, frame_size: int, batches: int) -> dict:
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
    return {
        "samples_per_s": samples / elapsed,
        "frames_per_s": frames / elapsed,
        "frames_per_sample": frames / samples,
        "batches": len(cached),
    }, cached


def baseline_rate(dataset, seconds: float) -> dict:
    pipeline = wds.WebDataset(dataset.shard_urls("train"), shardshuffle=False).decode("torchrgb8")
    start, samples, frames = time.perf_counter(), 0, 0
    for sample in pipeline:
        samples += 1
        frames += sum(1 for key in sample if key.endswith(".jpg"))
        if time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    return {"samples_per_s": samples / elapsed, "frames_per_s": frames / elapsed}


def step_rate(dataset, encoder: str, batches: list[dict], frame_size: int, steps: int) -> dict:
    config = preset("tiny")
    config.model.encoder, config.data.frame_size, config.output = encoder, frame_size, tempfile.mkdtemp()
    config.model.dim, config.model.ffn_dim, config.model.freeze = 512, 2048, "top-k"
    trainer = Trainer(config, dataset)
    trainer.train_step([batches[0]])  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        trainer.train_step([batches[(i + 1) % len(batches)]])
    elapsed = time.perf_counter() - start
    samples = sum(len(batches[(i + 1) % len(batches)]["items"]) for i in range(steps))
    return {"samples_per_s": samples / elapsed, "step_s": elapsed / steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: synth + ingest into a temp folder)")
    parser.add_argument(
        "--frame-size", type=int, default=112, help="encoder input side (and ingest frame size)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="loader batches to time")
    parser.add_argument("--steps", type=int, default=3, help="train steps to time per encoder")
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or str(make_dataset(Path(scratch), args.frame_size))
        dataset = load_dataset(data)
        loader, cached = loader_rate(dataset, args.batch_size, args.frame_size, args.batches)
        results = {
            "device": "cuda" if torch.cuda.is_available() else f"cpu x{os.cpu_count()}",
            "frame_size": args.frame_size,
            "batch_size": args.batch_size,
            "frames_per_item": dataset.num_frames,
            "stored_frame_size": dataset.manifest["sampler"].get("size"),
            "loader_one_core": loader,
            "baseline_stock_webdataset_decode_one_core": baseline_rate(dataset, seconds=10),
            "train_step": {},
        }
        for encoder in ("tiny", "r3d_18"):
            step = step_rate(dataset, encoder, cached, args.frame_size, args.steps)
            step["loader_cores_needed"] = step["samples_per_s"] / loader["samples_per_s"]
            results["train_step"][encoder] = step
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
