"""Benchmark: what the global sample order (elastic resume) costs one loader reader per epoch.

In the global order (``trainer/sample_order.py``) every reader (rank x loader worker) reads the whole
JSON sample stream of the epoch and decodes only its own batches; in the split order (train shards
that embed frames) each reader reads only its share of the shards. This writes JSON-only train shards
like the ``reference`` layout's (``--users`` samples, a window of ``--window`` items each, 5,000
samples a shard) and times, in one run, one reader of ``--readers`` through the trainer's
``TrainStream`` (ID model: no frames), medians over ``--rounds`` alternating rounds:

- **global**: rank 0 of ``--readers`` in the global order (reads every shard, decodes 1/readers);
- **split** (baseline): rank 0 of ``--readers`` in the split order (reads and decodes 1/readers);
- **all**: the single reader of a 1-process run (reads and decodes everything).

Reported per reader and epoch: wall seconds, CPU seconds (``time.process_time``) and train-shard
bytes read.

    .venv/bin/python benchmarks/bench_global_order.py [--users 200000] [--readers 16] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from dataformat.format import METADATA_FIELD  # noqa: E402
from trainer.config import DataConfig  # noqa: E402
from trainer.data import StreamPosition, TrainStream  # noqa: E402
from trainer.sample_order import epoch_batches  # noqa: E402
from transforms.tar_shards import END_OF_ARCHIVE, encode_members  # noqa: E402

PER_SHARD = 5000


def write_shards(folder: Path, users: int, window: int) -> list[str]:
    """JSON-only train shards of ``users`` samples, written with the ingest's tar encoder (the
    reference layout's sample fields)."""
    urls = []
    for start in range(0, users, PER_SHARD):
        members = []
        for user in range(start, min(users, start + PER_SHARD)):
            items = [(user * 7 + t * 13) % 100_000 + 1 for t in range(window)]
            meta = {
                "user_id": f"u{user}",
                "user_index": user,
                "item_ids": [f"i{i}" for i in items],
                "item_indices": items,
                "timestamps": [1_700_000_000 + 60 * t for t in range(window)],
            }
            members.append((f"u{user}.{METADATA_FIELD}", json.dumps(meta).encode()))
        path = folder / f"train-{start // PER_SHARD:06d}.tar"
        path.write_bytes(encode_members(members) + END_OF_ARCHIVE)
        urls.append(str(path))
    return urls


def one_reader(urls: list[str], users: int, readers: int, global_order: bool, batch_size: int) -> dict:
    """Rank 0 of ``readers`` reads its epoch: wall and CPU seconds, batches and samples it decoded."""
    config = DataConfig(batch_size=batch_size, shuffle_buffer=1000)
    step_batches = readers  # one micro-batch per rank and step
    epoch = epoch_batches(users, batch_size, step_batches, None, global_order)
    stream = TrainStream(
        urls,
        config,
        seed=1,
        max_seq_len=200,
        batches_per_epoch=epoch,
        with_frames=False,
        position=StreamPosition(),
        rank=0,
        world_size=readers,
        global_order=global_order,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    batches = samples = 0
    for batch in stream:
        batches += 1
        samples += len(batch["items"])
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "batches": batches,
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=11, help="items per window (max_seq_len + 1)")
    parser.add_argument("--readers", type=int, default=16, help="ranks x loader workers")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        urls = write_shards(Path(tmp), args.users, args.window)
        total_bytes = sum(Path(u).stat().st_size for u in urls)
        cases = {
            "global": (args.readers, True, total_bytes),
            "split": (args.readers, False, total_bytes // args.readers),
            "all": (1, True, total_bytes),
        }
        runs = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (readers, global_order, _) in cases.items():
                runs[name].append(one_reader(urls, args.users, readers, global_order, args.batch_size))
    results = {
        "users": args.users,
        "readers": args.readers,
        "train_shard_bytes": total_bytes,
        "bytes_per_sample": round(total_bytes / args.users, 1),
    }
    for name, (_, _, read) in cases.items():
        results[name] = {
            "wall_s": round(statistics.median(r["wall_s"] for r in runs[name]), 3),
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs[name]), 3),
            "samples_decoded": runs[name][0]["samples"],
            "bytes_read": read,
        }
    results["global_over_split_wall"] = round(results["global"]["wall_s"] / results["split"]["wall_s"], 2)
    results["global_over_all_wall"] = round(results["global"]["wall_s"] / results["all"]["wall_s"], 2)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
