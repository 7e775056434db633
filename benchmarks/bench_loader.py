"""Benchmark: the loader per layout (item store vs embedded frames vs stock webdataset), and the step.

One synth input (``videorec synth``) is ingested twice by the real job at ``--frame-size``: in the
``reference`` layout (train samples are JSON windows; frames only in the item shards) and in the
``embedded`` layout (train samples also carry their items' frames). On that same data, in one run:

1. **store, local**: the trainer's stream over the reference dataset, each unique item of a batch
   read once from the item store (memory-mapped item shards) and decoded once;
2. **store, http, warm cache**: the same over ``http://`` (a local ``python -m http.server`` in its
   own process) after a first pass filled the item cache: train shards stream, frames come from
   the cached item shards;
3. **embedded**: the trainer's stream over the embedded dataset, frames from the train samples;
4. **stock webdataset**: ``webdataset.WebDataset(embedded train shards).decode("torchrgb8")``,
   which decodes every frame member (no augmentation);
5. **cold cache over http**: the first pass of (2), with every byte the server sent counted by
   ``tests/byte_counting_proxy.py`` (item shards and train shards apart), against the bytes of the
   embedded train shards the same epoch would stream.

Readers 1-4 run in ``--rounds`` alternating rounds in this process with one torch thread; each
reports frames/s of wall time and frames per CPU second (``time.process_time``, this process only:
"per core"); medians over rounds. Frames are what the stream hands the model (unique items per
batch x frames per item), or for stock webdataset every frame it decoded. Train-step consumption
(``Trainer.train_step`` on cached batches) for ``--encoders`` gives the loader cores each needs.

    .venv/bin/python benchmarks/bench_loader.py [--data-root DIR] [--batches 40] [--out results.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import webdataset as wds  # noqa: E402

from dataformat.format import (  # noqa: E402
    MANIFEST_FILE,
    TRAIN_FRAMES_EMBEDDED,
    TRAIN_FRAMES_LAYOUTS,
    TRAIN_FRAMES_REFERENCE,
)
from tests.byte_counting_proxy import CountingProxy  # noqa: E402
from trainer.config import DataConfig, preset  # noqa: E402
from trainer.data import StreamPosition, TrainStream  # noqa: E402
from trainer.dataset import load_dataset  # noqa: E402
from trainer.item_store import item_store_for  # noqa: E402
from trainer.trainer import Trainer  # noqa: E402


def make_datasets(folder: Path, frame_size: int) -> dict[str, Path]:
    """synth (videos + log) -> the real Beam ingest in each train layout -> ``{layout: dataset folder}``."""
    from pipeline.main import run as ingest
    from pipeline.synth import SynthConfig, generate

    generate(folder / "raw", SynthConfig(users=200, items=100, seed=3, hevc_fraction=0.0, max_seconds=3.0))
    folders = {}
    for layout in TRAIN_FRAMES_LAYOUTS:
        folders[layout] = folder / layout
        ingest(
            ["--interactions", str(folder / "raw/pairs.csv"), "--videos", str(folder / "raw/videos")]
            + ["--output", str(folders[layout]), "--frame-size", str(frame_size), "--train-frames", layout]
            + ["--quiet"]
        )
    return folders


def stream_rate(dataset, config: DataConfig, batches: int, store) -> tuple[dict, list[dict]]:
    """The trainer's stream over ``dataset`` in this process (frames from ``store``, else from the
    samples): rates and the batches it produced."""
    stream = TrainStream(
        dataset.shard_urls("train"),
        config,
        seed=0,
        max_seq_len=dataset.max_seq_len,
        batches_per_epoch=batches,
        with_frames=True,
        position=StreamPosition(),
        item_store=store,
    )
    rates, batches = _timed(lambda: ((b, b["frames"].shape[0] * b["frames"].shape[1]) for b in stream))
    rates["samples_per_s"] = sum(len(b["items"]) for b in batches) * rates["frames_per_s"] / rates["frames"]
    return rates, batches


def stock_rate(dataset, samples: int) -> dict:
    """Stock webdataset decode of ``samples`` embedded train samples (passes over the shards)."""

    def decoded():
        seen = 0
        while seen < samples:
            pipeline = wds.WebDataset(dataset.shard_urls("train"), shardshuffle=False).decode("torchrgb8")
            for sample in itertools.islice(pipeline, samples - seen):
                seen += 1
                yield None, sum(1 for key in sample if key.endswith(".jpg"))

    return _timed(decoded)[0]


def _timed(produce) -> tuple[dict, list]:
    wall, cpu = time.perf_counter(), time.process_time()
    frames, kept = 0, []
    for item, count in produce():
        frames += count
        if item is not None:
            kept.append(item)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"frames": frames, "frames_per_s": frames / wall, "frames_per_cpu_s": frames / cpu}, kept


def http_server(directory: Path) -> tuple[subprocess.Popen, int]:
    """``python -m http.server`` serving ``directory`` in its own process; (process, port)."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...)"
    return server, int(line.split(" port ")[1].split()[0])


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
    parser.add_argument(
        "--data-root",
        help="folder for (or holding) reference/ and embedded/ ingests of one input (default: temp)",
    )
    parser.add_argument(
        "--frame-size", type=int, default=112, help="encoder input side (and ingest frame size)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="loader batches to time per reader and round")
    parser.add_argument("--steps", type=int, default=3, help="train steps to time per encoder")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the readers")
    parser.add_argument(
        "--encoders", default="tiny,r3d_18", help="encoders whose step rate to time ('' for none)"
    )
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.data_root) if args.data_root else Path(scratch) / "data"
        folders = {layout: root / layout for layout in TRAIN_FRAMES_LAYOUTS}
        if not all((folder / MANIFEST_FILE).exists() for folder in folders.values()):
            make_datasets(root, args.frame_size)
        reference, embedded = (
            load_dataset(str(folders[k])) for k in (TRAIN_FRAMES_REFERENCE, TRAIN_FRAMES_EMBEDDED)
        )
        config = preset("tiny").data
        config.batch_size, config.frame_size = args.batch_size, args.frame_size
        config.item_cache = str(Path(scratch) / "item-cache")
        torch.set_num_threads(1)  # every reader on one core

        server, port = http_server(root)
        proxy = CountingProxy(("127.0.0.1", port))
        try:
            remote = load_dataset(f"{proxy.host}/{TRAIN_FRAMES_REFERENCE}")
            remote_store = item_store_for(remote, config)
            proxy.reset()
            cold, _ = stream_rate(remote, config, args.batches, remote_store)
            sent = proxy.exchanges()
            cold.update(
                item_shard_bytes_sent=sum(e.body_bytes for e in sent if "/items/items-" in e.target),
                train_shard_bytes_sent=sum(e.body_bytes for e in sent if "/train/train-" in e.target),
                item_shard_bytes=sum(int(s["bytes"]) for s in reference.manifest["shards"]["items"]),
                embedded_train_shard_bytes=sum(int(s["bytes"]) for s in embedded.manifest["shards"]["train"]),
            )
            local_store = item_store_for(reference, config)  # read in place: no cache
            runs = {"store_local": [], "store_http_warm_cache": [], "embedded": [], "stock_webdataset": []}
            for _ in range(args.rounds):
                runs["store_local"].append(stream_rate(reference, config, args.batches, local_store)[0])
                remote_store.close()
                remote_store = item_store_for(remote, config)  # a new run: the cache is warm
                proxy.reset()
                runs["store_http_warm_cache"].append(
                    stream_rate(remote, config, args.batches, remote_store)[0]
                )
                runs["store_http_warm_cache"][-1]["item_shard_bytes_sent"] = sum(
                    e.body_bytes for e in proxy.exchanges() if "/items/items-" in e.target
                )
                rates, cached = stream_rate(embedded, config, args.batches, None)
                runs["embedded"].append(rates)
                runs["stock_webdataset"].append(stock_rate(embedded, samples=args.batch_size * args.batches))
        finally:
            proxy.close()
            server.terminate()
            server.wait()
        medians = {name: _median(rounds) for name, rounds in runs.items()}
        results = {
            "device": f"cpu x{os.cpu_count()}, one torch thread per reader",
            "frame_size": args.frame_size,
            "batch_size": args.batch_size,
            "batches": args.batches,
            "frames_per_item": reference.num_frames,
            "rounds": args.rounds,
            **medians,
            "cold_cache_http": cold,
            "store_vs_embedded_frames_per_cpu_s": medians["store_local"]["frames_per_cpu_s"]
            / medians["embedded"]["frames_per_cpu_s"],
            "store_warm_vs_embedded_frames_per_cpu_s": medians["store_http_warm_cache"]["frames_per_cpu_s"]
            / medians["embedded"]["frames_per_cpu_s"],
            "store_vs_stock_frames_per_cpu_s": medians["store_local"]["frames_per_cpu_s"]
            / medians["stock_webdataset"]["frames_per_cpu_s"],
            "store_warm_vs_stock_frames_per_cpu_s": medians["store_http_warm_cache"]["frames_per_cpu_s"]
            / medians["stock_webdataset"]["frames_per_cpu_s"],
            "train_step": {},
        }
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        for encoder in filter(None, args.encoders.split(",")):
            step = step_rate(embedded, encoder, cached, args.frame_size, args.steps)
            step["loader_cores_needed"] = step["samples_per_s"] / medians["store_local"]["samples_per_s"]
            results["train_step"][encoder] = step
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
