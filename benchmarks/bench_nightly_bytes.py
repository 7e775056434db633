"""Benchmark: bytes written and wall time of a nightly re-ingest against a full ingest, per train layout.

One benchmark run does, for each ``--train-frames`` layout (``embedded`` is the baseline), on the
same synth inputs (``videorec synth``, real H.264/HEVC files):

1. a full ingest of the base inputs (``--items`` items, ``--users`` users) into an empty dataset root;
2. the inputs grow: ``--new-items`` (5 %) more items, each with a video, and ``--new-interactions``
   (10 %) more rows, from new users who watch the new items and old ones, later than every row;
3. the nightly run on that root: it decodes only the new videos and reuses the others' frames.

Bytes written are measured two ways for each run: ``stored``, the bytes of every file of the version
the run published (by kind: item shards, train shards, tables, the rest), and ``write_calls``, the
bytes the run's process passed to ``write()`` (``wchar`` of ``/proc/self/io``: scratch frame
fragments, logs and everything else included). Wall time is the child process's. Inputs are
written once and copied for each layout, so both layouts ingest the same bytes.

    .venv/bin/python benchmarks/bench_nightly_bytes.py [--items 200] [--users 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataformat.format import ITEM_SHARDS, TRAIN_FRAMES_LAYOUTS, TRAIN_SHARDS  # noqa: E402

CHILD = """
import json, sys
from pipeline.main import run
result = run(sys.argv[1:])
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(json.dumps({"output": result.output, "counters": result.counters, "wchar": int(io["wchar"])}))
"""


def make_inputs(folder: Path, items: int, users: int, seed: int) -> None:
    """The base synth dataset (``pairs.csv``, ``videos/``) and, in ``folder/donor``, the videos of
    new items."""
    from pipeline.synth import SynthConfig, generate

    small = dict(min_seconds=1.0, max_seconds=2.0, sizes=((96, 64), (128, 96)))
    generate(folder / "base", SynthConfig(users=users, items=items, seed=seed, **small))
    generate(
        folder / "donor",
        SynthConfig(users=3, items=3, categories=2, min_interactions=3, seed=seed + 1, **small),
    )


def grow(inputs: Path, donor: Path, new_items: int, new_rows: int) -> None:
    """Add ``new_items`` videos (``n1``, ``n2``...) and ``new_rows`` rows from new users (8 rows each:
    one new item, then old ones), all later than every existing row."""
    lines = (inputs / "pairs.csv").read_text().splitlines()
    latest = max(int(line.split(",")[2]) for line in lines[1:])
    old = sorted({line.split(",")[1] for line in lines[1:]})
    donors = sorted((donor / "videos").glob("*.mp4"))
    names = [f"n{k + 1}" for k in range(new_items)]
    for k, name in enumerate(names):
        shutil.copyfile(donors[k % len(donors)], inputs / "videos" / f"{name}.mp4")
    added = []
    for user in range(math.ceil(new_rows / 8)):
        watched = [names[user % len(names)], *old[(user * 7) % len(old) :][:7]]
        added += [
            f"night{user},{item},{latest + 1000 * (8 * user + k + 1)}" for k, item in enumerate(watched)
        ]
    (inputs / "pairs.csv").write_text("\n".join(lines + added[:new_rows]) + "\n")


def ingest(inputs: Path, root: Path, layout: str) -> dict:
    """One ``--dataset-root`` run as a child process: wall seconds, bytes, decode and reuse counts."""
    argv = [
        f"--interactions={inputs / 'pairs.csv'}",
        f"--videos={inputs / 'videos'}",
        f"--dataset-root={root}",
        f"--train-frames={layout}",
        "--frame-size=64",
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
        "--quiet",
    ]
    report, wall = ingest_in_child(CHILD, argv)
    counters = report["counters"]
    return {
        "wall_s": round(wall, 2),
        "stored": stored_bytes(Path(report["output"])),
        "write_calls": report["wchar"],
        "videos_decoded": counters.get("videos_decoded", 0),
        "items_reused": counters.get("items_reused", 0),
    }


def ingest_in_child(child_code: str, argv: list[str]) -> tuple[dict, float]:
    """Run ``child_code`` (an ingest that prints a JSON report as its last line) in a fresh Python with
    ``argv``; returns the report and the child's wall seconds."""
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", child_code, *argv], cwd=REPO, capture_output=True, text=True, check=False
    )
    wall = time.monotonic() - started
    if child.returncode:
        raise RuntimeError(f"ingest failed ({child.returncode}):\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1]), wall


def stored_bytes(version: Path) -> dict:
    """Bytes of every file of a version folder, by kind, and their total."""
    kinds = {ITEM_SHARDS: 0, TRAIN_SHARDS: 0, "tables": 0, "other": 0}
    for path in version.rglob("*"):
        if path.is_file():
            top = path.relative_to(version).parts[0]
            kinds[top if top in kinds else "other"] += path.stat().st_size
    return {**kinds, "total": sum(kinds.values())}


def run_layout(scratch: Path, layout: str, new_items: int, new_rows: int) -> dict:
    inputs = scratch / layout / "inputs"
    shutil.copytree(scratch / "base", inputs)
    root = scratch / layout / "root"
    full = ingest(inputs, root, layout)
    grow(inputs, scratch / "donor", new_items, new_rows)
    nightly = ingest(inputs, root, layout)
    return {
        "full": full,
        "nightly": nightly,
        "nightly_vs_full_bytes": round(nightly["stored"]["total"] / full["stored"]["total"], 3),
        "nightly_vs_full_write_calls": round(nightly["write_calls"] / full["write_calls"], 3),
        "nightly_vs_full_wall": round(nightly["wall_s"] / full["wall_s"], 3),
    }


def table(results: dict) -> str:
    rows = [
        "| layout | run | item shards | train shards | tables | stored total | write() bytes | wall s "
        "| decoded | reused |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layout in TRAIN_FRAMES_LAYOUTS:
        for run in ("full", "nightly"):
            r = results[layout][run]
            s = r["stored"]
            rows.append(
                f"| {layout} | {run} | {s[ITEM_SHARDS]:,} | {s[TRAIN_SHARDS]:,} | {s['tables']:,} | "
                f"{s['total']:,} | "
                f"{r['write_calls']:,} | {r['wall_s']} | {r['videos_decoded']} | {r['items_reused']} |"
            )
        rows.append(
            f"| {layout} | nightly / full | | | | {results[layout]['nightly_vs_full_bytes']} | "
            f"{results[layout]['nightly_vs_full_write_calls']} | "
            f"{results[layout]['nightly_vs_full_wall']} | | |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200, help="items (videos) of the full ingest")
    p.add_argument("--users", type=int, default=1000, help="users of the full ingest")
    p.add_argument("--new-items", type=float, default=0.05, help="new items of the nightly run, a fraction")
    p.add_argument(
        "--new-interactions", type=float, default=0.10, help="new rows of the nightly run, a fraction"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_nightly_bytes_") as scratch:
        scratch = Path(scratch)
        make_inputs(scratch, args.items, args.users, args.seed)
        rows = len((scratch / "base" / "pairs.csv").read_text().splitlines()) - 1
        new_items, new_rows = math.ceil(args.new_items * args.items), math.ceil(args.new_interactions * rows)
        results = {
            "inputs": {
                "items": args.items,
                "users": args.users,
                "rows": rows,
                "new_items": new_items,
                "new_rows": new_rows,
            },
            **{layout: run_layout(scratch, layout, new_items, new_rows) for layout in TRAIN_FRAMES_LAYOUTS},
        }
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
