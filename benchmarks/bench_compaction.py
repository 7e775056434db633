"""Benchmark: what a dataset root stores after many nights of changed videos, with and without compaction.

One benchmark run makes one set of synth inputs (``videorec synth``, real H.264/HEVC files) and, for
each arm, a dataset root in the default ``reference`` layout that it ingests ``--nights`` + 1 times
with ``--keep 1`` (prune to the published version after each run):

- ``compact`` (``--compact-below 0.5``, the default) against the baseline ``never``
  (``--compact-below 0``: every unchanged sample is pointed at where it was first written);
- before each nightly run, ``--changed`` of the items (a fraction, the next ones in a fixed rotation)
  get a new video file, so their samples in earlier versions die.

After each run it reports the root's bytes on disk, the frames in use (the items table's sample
sizes: what a version with every item written once would hold), their ratio, the versions left
after prune, the samples copied by compaction and the run's wall time. Both arms see the same
inputs night by night (the changed files are copied into both).

    .venv/bin/python benchmarks/bench_compaction.py [--items 40] [--users 200] [--nights 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_nightly_bytes import ingest_in_child, make_inputs  # noqa: E402

ARMS = {"compact": "0.5", "never": "0"}

CHILD = """
import json, sys
import pyarrow.parquet as pq
from pipeline.main import run
result = run(sys.argv[1:])
live = sum(
    sum(pq.read_table(f"{result.output}/{part}", columns=["size"]).column("size").to_pylist())
    for part in result.manifest["tables"]["items"]
)
print(json.dumps({"output": result.output, "counters": result.counters, "live": live}))
"""


def ingest(inputs: Path, root: Path, compact_below: str) -> dict:
    """One nightly run with ``--keep 1`` as a child process."""
    argv = [
        f"--interactions={inputs / 'pairs.csv'}",
        f"--videos={inputs / 'videos'}",
        f"--dataset-root={root}",
        f"--compact-below={compact_below}",
        "--keep=1",
        "--frame-size=64",
        "--shard-max-samples=8",
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
        "--quiet",
    ]
    report, wall = ingest_in_child(CHILD, argv)
    stored = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "wall_s": round(wall, 2),
        "root_bytes": stored,
        "live_frame_bytes": report["live"],
        "root_vs_live": round(stored / max(1, report["live"]), 3),
        "versions": len(list((root / "versions").iterdir())),
        "decoded": report["counters"].get("videos_decoded", 0),
        "reused": report["counters"].get("items_reused", 0),
        "compacted": report["counters"].get("items_compacted", 0),
    }


def change_videos(inputs: list[Path], donor: Path, night: int, changed: int, items: list[str]) -> None:
    """Give the next ``changed`` items of the rotation a new video file, in every arm's inputs."""
    donors = sorted((donor / "videos").glob("*.mp4"))
    for k in range(changed):
        item = items[(night * changed + k) % len(items)]
        for folder in inputs:
            shutil.copyfile(donors[(night + k) % len(donors)], folder / "videos" / f"{item}.mp4")


def table(results: dict) -> str:
    rows = [
        "| night | arm | root bytes | frames in use | root / in use | versions | compacted | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for night in range(len(results["compact"])):
        for arm in ARMS:
            r = results[arm][night]
            rows.append(
                f"| {night} | {arm} | {r['root_bytes']:,} | {r['live_frame_bytes']:,} | {r['root_vs_live']} | "
                f"{r['versions']} | {r['compacted']} | {r['wall_s']} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=40, help="items (videos)")
    p.add_argument("--users", type=int, default=200, help="users")
    p.add_argument("--nights", type=int, default=8, help="nightly runs after the first")
    p.add_argument("--changed", type=float, default=0.15, help="items whose video changes each night")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_compaction_") as scratch:
        scratch = Path(scratch)
        make_inputs(scratch, args.items, args.users, args.seed)
        inputs = {arm: scratch / arm / "inputs" for arm in ARMS}
        for folder in inputs.values():
            shutil.copytree(scratch / "base", folder)
        items = sorted(p.stem for p in (scratch / "base" / "videos").glob("*.mp4"))
        changed = math.ceil(args.changed * len(items))
        results = {arm: [] for arm in ARMS}
        for night in range(args.nights + 1):
            if night:
                change_videos(list(inputs.values()), scratch / "donor", night, changed, items)
            for arm, below in ARMS.items():
                results[arm].append(ingest(inputs[arm], scratch / arm / "root", below))
                print(f"night {night} {arm}: {results[arm][-1]}", file=sys.stderr, flush=True)
    print(table(results))
    last = {arm: results[arm][-1] for arm in ARMS}
    print(
        f"after {args.nights} nights: root / frames in use {last['compact']['root_vs_live']} with compaction, "
        f"{last['never']['root_vs_live']} without; "
        f"root bytes compact / never {last['compact']['root_bytes'] / last['never']['root_bytes']:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"inputs": vars(args) | {"json": None}, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
