"""Benchmark: CPU time of an incremental ingest run against a full run of the same inputs.

One benchmark run does, on the same machine and the same inputs:

1. a full run over the base inputs (``--items`` items) into a dataset root: the version to build on;
2. grows the inputs by ``--growth`` (10 %): new items with their videos, and as many more interactions;
3. the incremental run over the grown inputs on that root (decodes only the new videos);
4. the baseline: a full run over the same grown inputs into an empty root;
5. a no-change re-run on the root: the fixed cost of a run of this size that decodes nothing.

Each run is a child process (``pipeline.ingest_job.run``); its CPU time is user + sys of the whole process
tree (``RUSAGE_CHILDREN`` around the child), and it reports the job's Beam counters, so the decode
counts come from the job itself. Runs use the DirectRunner in one process (``in_memory``) so every
CPU second is accounted to the child.

Videos are the real MicroLens files in ``../shared/data/videos`` (HEVC 720p), cycled over the items
through a video map; without that folder, synth videos are used.

    .venv/bin/python benchmarks/bench_incremental.py [--items 60] [--users 300] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import source_videos  # noqa: E402

CHILD = """
import json, sys
from pipeline.main import run
result = run(sys.argv[1:])
print(json.dumps({"counters": result.counters, "output": result.output}))
"""


def write_inputs(folder: Path, videos: list[str], items: int, users: int, per_user: int, seed: int) -> None:
    """Write ``pairs.csv`` (``users`` x ``per_user`` interactions over ``items`` items, appended to what
    is there) and ``videos.csv`` (every item 1..``items`` mapped to one of ``videos``, cycled)."""
    rng = random.Random(seed)
    pairs = folder / "pairs.csv"
    lines = pairs.read_text().splitlines() if pairs.exists() else ["user,item,timestamp"]
    first_user = len({line.split(",")[0] for line in lines[1:]})
    first_new_item = (
        len((folder / "videos.csv").read_text().splitlines()) if (folder / "videos.csv").exists() else 1
    )
    for user in range(first_user, first_user + users):
        start = rng.randrange(10**9)
        # Every new user watches at least one of the new items, so each new video is needed.
        watched = [rng.randrange(first_new_item, items + 1)] + rng.choices(
            range(1, items + 1), k=per_user - 1
        )
        lines += [f"u{user},{item},{start + step}" for step, item in enumerate(watched)]
    pairs.write_text("\n".join(lines) + "\n")
    rows = ["item,uri"] + [f"{item},{videos[(item - 1) % len(videos)]}" for item in range(1, items + 1)]
    (folder / "videos.csv").write_text("\n".join(rows) + "\n")


def decodes(counters: dict) -> int:
    return sum(v for k, v in counters.items() if k == "videos_decoded" or k.startswith("videos_failed_"))


def ingest(inputs: Path, root: Path) -> dict:
    """One ``--dataset-root`` run as a child process: its CPU seconds, wall seconds and decode counts."""
    argv = [
        f"--interactions={inputs / 'pairs.csv'}",
        f"--video-map={inputs / 'videos.csv'}",
        "--allow-any-uri",
        f"--dataset-root={root}",
        "--frame-size=224",
        "--resize=squash",
        "--min-user-interactions=3",
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
        "--quiet",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], cwd=REPO, capture_output=True, text=True, check=False
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode:
        raise RuntimeError(f"ingest failed ({child.returncode}):\n{child.stderr[-3000:]}")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    counters = report["counters"]
    manifest = json.loads((Path(report["output"]) / "manifest.json").read_text())
    return {
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "wall_s": round(wall, 2),
        "videos_decoded": decodes(counters),
        "items_reused": counters.get("items_reused", 0),
        "items_in_dataset": manifest["counts"]["items_encoded"],
        "interactions": manifest["counts"]["rows_used"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=60, help="items (videos) before growth")
    p.add_argument("--users", type=int, default=300, help="users before growth")
    p.add_argument("--per-user", type=int, default=6, help="interactions per user")
    p.add_argument("--growth", type=float, default=0.10, help="fraction of new items and interactions")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_incremental_") as scratch:
        scratch = Path(scratch)
        videos = source_videos(scratch)
        inputs = scratch / "inputs"
        inputs.mkdir()
        write_inputs(inputs, videos, args.items, args.users, args.per_user, seed=1)
        base = ingest(inputs, scratch / "root")
        new_items = math.ceil(args.growth * args.items)
        new_users = math.ceil(args.growth * args.users)
        write_inputs(inputs, videos, args.items + new_items, new_users, args.per_user, seed=2)
        incremental = ingest(inputs, scratch / "root")
        full = ingest(inputs, scratch / "full_root")
        no_change = ingest(inputs, scratch / "root")

    results = {
        "videos": "real MicroLens (HEVC 720p)" if "microlens" in videos[0] else "synth",
        "items": {"base": args.items, "new": new_items},
        "base_run": base,
        "incremental_run": incremental,
        "full_run_same_inputs": full,
        "no_change_run": no_change,
        "cpu_ratio_incremental_vs_full": round(incremental["cpu_s"] / full["cpu_s"], 3),
        "wall_ratio_incremental_vs_full": round(incremental["wall_s"] / full["wall_s"], 3),
    }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
