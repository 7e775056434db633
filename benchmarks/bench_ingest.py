"""Benchmark of the ingest job on the local runner, with the bare sampler as the baseline.

Measures, on the same videos and the same cores:

1. bare sampler throughput: ``sample_video`` over every video in a process pool (one per core);
2. end-to-end ingest throughput (videos/s) and its ratio to (1), as videos grow 1x -> 2x -> 4x,
   with a linear fit ``wall = fixed + per_video * videos``;
3. peak resident memory of the whole ingest process tree as users x interactions grow 1x -> 4x
   with the same videos.

Videos are the real MicroLens files in ``../shared/data/videos`` (HEVC 720p), cycled over the
items, so decoding costs what production decoding costs; without that folder, synth videos are
used. Interactions are generated here: each user watches ``--per-user`` random items.

    .venv/bin/python benchmarks/bench_ingest.py [--videos 60] [--users 300] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "data" / "videos"
sys.path.insert(0, str(REPO))

from transforms.decode.sampler import sample_video  # noqa: E402
from transforms.decode.types import SamplerConfig  # noqa: E402

SAMPLER = SamplerConfig(size=(224, 224), resize="squash")


def source_videos(scratch: Path) -> list[str]:
    real = sorted(str(p) for p in SHARED_VIDEOS.glob("microlens50k_via_sananm__*.mp4"))
    if real:
        return real
    from pipeline.synth import SynthConfig, generate

    generate(
        scratch / "synth", SynthConfig(users=5, items=8, min_seconds=4, max_seconds=8), workers=os.cpu_count()
    )
    return sorted(str(p) for p in (scratch / "synth" / "videos").glob("*.mp4"))


def write_inputs(folder: Path, videos: list[str], items: int, users: int, per_user: int) -> tuple[Path, Path]:
    """pairs.csv over ``items`` items and a video map cycling ``videos`` over them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(items * 1_000_003 + users)
    with open(folder / "pairs.csv", "w") as out:
        out.write("user,item,timestamp\n")
        for user in range(users):
            start = rng.randrange(10**9)
            for step, item in enumerate(rng.choices(range(1, items + 1), k=per_user)):
                out.write(f"{user},{item},{start + step}\n")
    with open(folder / "videos.csv", "w") as out:
        out.write("item,uri\n")
        for item in range(1, items + 1):
            out.write(f"{item},{videos[(item - 1) % len(videos)]}\n")
    return folder / "pairs.csv", folder / "videos.csv"


def _sample(uri: str) -> int:
    return len(sample_video(uri, SAMPLER).frames)


def bare_sampler(uris: list[str], workers: int) -> float:
    """Videos per second of ``sample_video`` in a pool of ``workers`` processes (pool start excluded)."""
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_sample, uris[:workers]))  # warm up: imports and codec setup in every worker
        started = time.monotonic()
        list(pool.map(_sample, uris, chunksize=1))
        return len(uris) / (time.monotonic() - started)


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
        stack += children.get(pid, [])
    return total


def ingest(pairs: Path, video_map: Path, output: Path, workers: int, mode: str) -> dict:
    """Run ``videorec ingest`` as a child process; return its stats plus the tree's peak RSS."""
    command = [
        sys.executable,
        "-m",
        "pipeline.main",
        f"--interactions={pairs}",
        f"--video-map={video_map}",
        "--allow-any-uri",
        f"--output={output}",
        "--frame-size=224",
        "--resize=squash",
        "--min-user-interactions=3",
        f"--direct_num_workers={workers}",
        f"--direct_running_mode={mode}",
        "--quiet",
    ]
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss_bytes(child.pid))
        time.sleep(0.1)
    wall = time.monotonic() - started
    if child.returncode:
        raise RuntimeError(f"ingest failed ({child.returncode}): {' '.join(command)}")
    stats = json.loads((output / "run_stats.json").read_text())
    manifest = json.loads((output / "manifest.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "videos": stats["videos_decoded"],
        "videos_per_s": round(stats["videos_decoded"] / wall, 2),
        "peak_rss_mb": round(peak / 2**20, 1),
        "users": manifest["counts"]["users_kept"],
        "interactions": manifest["counts"]["rows_used"],
    }


def linear_fit(xs: list[int], ys: list[float]) -> dict:
    """Least-squares ``y = fixed + per_video * x`` and the largest relative residual."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    fixed = mean_y - slope * mean_x
    worst = max(abs(y - (fixed + slope * x)) / y for x, y in zip(xs, ys, strict=True))
    return {
        "fixed_s": round(fixed, 2),
        "per_video_s": round(slope, 4),
        "max_relative_residual": round(worst, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=60, help="videos at 1x (grown to 2x and 4x)")
    parser.add_argument("--users", type=int, default=300, help="users at 1x (grown to 4x for memory)")
    parser.add_argument("--per-user", type=int, default=12, help="interactions per user")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--mode", default="multi_processing", help="DirectRunner running mode")
    parser.add_argument("--memory-users", type=int, default=None, help="users at 1x for the memory part")
    parser.add_argument("--skip-scaling", action="store_true", help="only measure memory")
    parser.add_argument("--out", default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)

    results: dict = {
        "mode": args.mode,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "sampler": SAMPLER.to_dict(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch_name:
        scratch = Path(scratch_name)
        videos = source_videos(scratch)
        results["video_files"] = [Path(v).name for v in videos]

        scaling = []
        for factor in () if args.skip_scaling else (1, 2, 4):
            items = args.videos * factor
            pairs, video_map = write_inputs(
                scratch / f"v{factor}", videos, items, args.users * factor, args.per_user
            )
            uris = [videos[(i - 1) % len(videos)] for i in range(1, items + 1)]
            bare = bare_sampler(uris, args.workers)
            run = ingest(pairs, video_map, scratch / f"out-v{factor}", args.workers, args.mode)
            run.update(
                factor=factor, bare_videos_per_s=round(bare, 2), ratio=round(run["videos_per_s"] / bare, 3)
            )
            scaling.append(run)
            print(
                f"videos {run['videos']:5d}: ingest {run['wall_s']:6.1f} s, {run['videos_per_s']:6.2f} videos/s; "
                f"bare sampler {bare:6.2f} videos/s; ratio {run['ratio']:.2f}",
                flush=True,
            )
        if scaling:
            fit = linear_fit([r["videos"] for r in scaling], [r["wall_s"] for r in scaling])
            results.update(video_scaling=scaling, linear_fit=fit)
            print(
                f"linear fit: wall = {fit['fixed_s']} s + {fit['per_video_s']} s/video "
                f"(max residual {fit['max_relative_residual']:.1%})"
            )

        memory = []
        for factor in (1, 4):
            users = (args.memory_users or args.users) * factor
            pairs, video_map = write_inputs(scratch / f"u{factor}", videos, args.videos, users, args.per_user)
            run = ingest(pairs, video_map, scratch / f"out-u{factor}", args.workers, args.mode)
            run.update(factor=factor)
            memory.append(run)
            print(
                f"users {run['users']:6d} x interactions {run['interactions']:7d}: peak RSS {run['peak_rss_mb']:.0f} MB, "
                f"{run['wall_s']:.1f} s",
                flush=True,
            )
        results["memory_scaling"] = memory
        results["peak_rss_growth_4x_users"] = round(memory[1]["peak_rss_mb"] / memory[0]["peak_rss_mb"], 3)
        print(f"peak RSS at 4x users / 1x users: {results['peak_rss_growth_4x_users']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
