"""Evaluation at scale (issue 21 item 9): an ``id`` model, full ranking, CPU, 1 and 2 ranks (gloo).

For each ``--users`` size (same ``--items`` catalogue), a dataset is generated under ``--scratch`` in
the ingest's layout: the items table, and the sequences table in parts of ``--part-users`` users (the
ingest's user buckets hold about 800 users at the default ``--shard-max-samples 1000``), listed in
``manifest.json`` with ``table_files``. Only the columns the trainer reads are written (``user_id``,
``user_index``, ``item_indices``). Sequences: 3 to 20 items per user, items drawn with a Zipf-like
popularity; ``popularity`` is each item's count in the training parts (all but the last 2 items).

Then, per code version (the working tree, and with ``--baseline-ref`` a ``git worktree`` of that
commit, imported first on ``sys.path``, same venv), ``--ranks`` processes (gloo, ``torch.multiprocessing``
spawn) each run what a test does after training: ``load_dataset``, build the ``id`` model (seed 0),
``encode_item_table``, ``score_split('test')``, ``popularity_baseline('test')``. Reported per rank: peak RSS
(``ru_maxrss`` of that process) and wall time; per run: wall time of the whole and the metrics (which
must agree between versions and between 1 and 2 ranks).

    nice -n 10 .venv/bin/python benchmarks/bench_eval.py --users 200000 1000000 --ranks 1 2 \\
        --baseline-ref HEAD~1 --json /tmp/bench_eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def generate(folder: Path, users: int, items: int, part_users: int, seed: int = 0) -> Path:
    """A dataset version of ``users`` x ``items`` (see the module docstring); reused when present."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (folder / "manifest.json").exists():
        return folder
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 21, users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    values = rng.choice(np.arange(1, items + 1), size=int(offsets[-1]), p=weights / weights.sum())
    training = np.ones(len(values), dtype=bool)
    training[offsets[1:] - 1] = training[offsets[1:] - 2] = False
    popularity = np.bincount(values[training], minlength=items + 1)
    (folder / "tables" / "items").mkdir(parents=True, exist_ok=True)
    (folder / "tables" / "sequences").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array([f"i{i}" for i in range(1, items + 1)]),
                "item_index": pa.array(np.arange(1, items + 1, dtype=np.int32)),
                "popularity": pa.array(popularity[1:].astype(np.int64)),
            }
        ),
        folder / "tables/items/part-00000.parquet",
        compression="zstd",
    )
    files = []
    for bucket, start in enumerate(range(0, users, part_users)):
        end = min(users, start + part_users)
        lo, hi = offsets[start], offsets[end]
        column = pa.ListArray.from_arrays(
            pa.array((offsets[start : end + 1] - lo).astype(np.int32)),
            pa.array(values[lo:hi].astype(np.int32)),
        )
        path = f"tables/sequences/part-{bucket:05d}.parquet"
        table = pa.table(
            {
                "user_id": pa.array([f"u{u}" for u in range(start, end)]),
                "user_index": pa.array(np.arange(start, end, dtype=np.int32)),
                "item_indices": column,
            }
        )
        pq.write_table(table, folder / path, compression="zstd")
        files.append(
            {"path": path, "rows": end - start, "bytes": (folder / path).stat().st_size, "sha256": ""}
        )
    rows = int(offsets[-1])
    manifest = {
        "format_version": 2,
        "dataset_version": f"bench-eval-{users}x{items}",
        "created_by": "benchmarks/bench_eval.py",
        "sampler": {"num_frames": 0},
        "has_frames": False,
        "num_items": items,
        "num_users": users,
        "max_seq_len": 10,
        "tables": {"items": ["tables/items/part-00000.parquet"], "sequences": [f["path"] for f in files]},
        "table_files": {"sequences": files},
        "counts": {
            "rows_read": rows,
            "rows_used": rows,
            "rows_dropped": {},
            "items_seen": items,
            "items_encoded": items,
            "items_failed": {},
            "users_seen": users,
            "users_kept": users,
            "users_dropped": {},
        },
        "failures": [],
        "shards": {"items": [], "train": []},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


# ------------------------------------------------------------------------------------------- one rank


def evaluate_rank(rank: int, world_size: int, store: str, data: str, dim: int, out: str) -> None:
    """One rank's evaluation; writes ``{rank, peak_rss_mb, wall_s, metrics}`` to ``out.RANK.json``."""
    import inspect

    import torch
    import torch.distributed as dist

    from trainer.config import ModelConfig
    from trainer.dataset import load_dataset
    from trainer.evaluate import encode_item_table, popularity_baseline, score_split
    from trainer.models.videorec import build_videorec

    torch.set_num_threads(max(1, 2 // world_size))
    start = time.perf_counter()
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    device = torch.device("cpu")
    dataset = load_dataset(data)
    torch.manual_seed(0)
    model = build_videorec(
        ModelConfig(encoder="id", dim=dim, ffn_dim=2 * dim, max_seq_len=10), dataset.num_items
    )
    items = encode_item_table(model, dataset, 8, False, 1024, device, rank, world_size)
    kwargs = {"max_seq_len": 10, "batch_size": 1024, "device": device, "rank": rank, "world_size": world_size}
    test = score_split(model, dataset, "test", items, **kwargs)
    scored = time.perf_counter()
    sharded = "world_size" in inspect.signature(popularity_baseline).parameters
    extra = {"rank": rank, "world_size": world_size} if sharded else {}
    popularity = popularity_baseline(dataset, "test", items.encoded, **extra)
    record = {
        "rank": rank,
        "code": str(Path(sys.modules["trainer.evaluate"].__file__).parents[1]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_s": time.perf_counter() - start,
        "model_s": scored - start,
        "popularity_s": time.perf_counter() - scored,
        "test": test,
        "popularity_test": popularity,
    }
    Path(f"{out}.{rank}.json").write_text(json.dumps(record))
    if world_size > 1:
        dist.destroy_process_group()


def worker(args: argparse.Namespace) -> None:
    if args.world_size == 1:
        evaluate_rank(0, 1, "", args.data, args.dim, args.out)
        return
    import torch.multiprocessing as mp

    store = tempfile.mktemp(prefix="bench-eval-store-")
    mp.start_processes(
        evaluate_rank,
        args=(args.world_size, store, args.data, args.dim, args.out),
        nprocs=args.world_size,
        start_method="spawn",
    )


# ---------------------------------------------------------------------------------------------- driver


def run(code_root: Path, data: Path, world_size: int, dim: int, timeout: float) -> dict:
    """One evaluation run in a fresh process tree; the per-rank records and the run's wall time."""
    out = tempfile.mktemp(prefix="bench-eval-")
    env = dict(os.environ, PYTHONPATH=str(code_root), OMP_NUM_THREADS=str(max(1, 2 // world_size)))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--code-root", str(code_root)]
    command += ["--data", str(data), "--world-size", str(world_size), "--dim", str(dim), "--out", out]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "limit_s": timeout}
    wall = time.perf_counter() - start
    if done.returncode:
        return {"failed": done.returncode, "stderr": done.stderr[-2000:]}
    ranks = [json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(world_size)]
    return {"wall_s": wall, "ranks": ranks}


def summary_line(label: str, users: int, world_size: int, result: dict) -> str:
    if "ranks" not in result:
        return f"{label:9} {users:>8} users {world_size} rank(s): {result}"
    rss = " ".join(f"{r['peak_rss_mb']:.0f}" for r in result["ranks"])
    metrics = result["ranks"][0]["test"]
    return (
        f"{label:9} {users:>8} users {world_size} rank(s): wall {result['wall_s']:.1f} s, peak RSS per rank "
        f"{rss} MB, HR@10 {metrics['HR@10']:.5f}, popularity HR@10 "
        f"{result['ranks'][0]['popularity_test']['HR@10']:.5f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--part-users", type=int, default=800)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--baseline-ref", default=None)
    parser.add_argument(
        "--versions", nargs="+", default=["project", "baseline"], help="which versions to run"
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--scratch", default="/tmp/videorec-bench-eval")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code-root", default=str(REPO), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--world-size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, args.code_root)
        worker(args)
        return 0
    scratch = Path(args.scratch)
    versions = {"project": REPO}
    if args.baseline_ref:
        baseline = scratch / "baseline"
        if not baseline.exists():
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline_ref],
                check=True,
            )
        versions["baseline"] = baseline
    results = []
    for users in args.users:
        data = generate(scratch / f"data-{users}x{args.items}", users, args.items, args.part_users)
        for label, root in versions.items():
            if label not in args.versions:
                continue
            for world_size in args.ranks:
                result = run(root, data, world_size, args.dim, args.timeout)
                results.append(
                    {
                        "version": label,
                        "users": users,
                        "items": args.items,
                        "world_size": world_size,
                        **result,
                    }
                )
                print(summary_line(label, users, world_size, result), flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
