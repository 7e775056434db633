"""Decoder threads per video when every core already runs a worker: videos per CPU-second, same run.

Ingest decodes one video per worker and runs a worker per core (Dataflow runs one SDK process per
vCPU; the local runner one worker process per core), so threads inside one video only compete
with the other workers. This measures, on the same videos and in the same run, the frame sampler
(:func:`transforms.decode.sampler.sample_video`, what each ingest sampler process runs) with
``threads=0`` (FFmpeg's choice, as a plain PyAV decode loop), ``threads=1`` and ``threads=2``:

* ``busy``: P = ``--workers`` (default: every core) processes at once, each sampling every video
  ``--repeats`` times with one setting: the ingest case;
* ``single``: one process doing the same alone: the ``videorec frames`` case (one video, idle cores).

Per setting: CPU seconds per video (user + system of the sampling processes, all their threads;
imports excluded), videos per CPU-second, videos per wall second, and the processes' context
switches per video (voluntary: waits such as futexes; involuntary: preemptions). Settings run in
rounds with their order rotated each round; the figures are medians over rounds. The frames are
checked to be the same bytes under every setting.

Videos: the real 720p/1080p files in ../shared/data/videos when present (3 MicroLens HEVC 720p,
H.264 720p, HEVC 1080p in MPEG-TS, H.264 1080x1920 portrait), plus, with ``--long``, the two 144 s
720p videos of ``bench_sampler.py`` (generated once into its cache folder); synth-like test
videos otherwise.

Usage::

    .venv/bin/python -m benchmarks.bench_decode_threads [--rounds 3] [--repeats 2] [--long] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
REAL_FILES = (
    "microlens50k_via_sananm__1002.mp4",
    "microlens50k_via_sananm__10034.mp4",
    "microlens50k_via_sananm__10040.mp4",
    "moviepy__fire2.mp4",
    "mediabunny__hevc.ts",
    "laravel-media__moto_90rotation.mp4",
)
SETTINGS = (0, 1, 2)


def _usage() -> tuple[float, int, int]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime, own.ru_nvcsw, own.ru_nivcsw


def _worker(paths: list[str], threads: int, repeats: int, start, results) -> None:
    """Sample every video ``repeats`` times with ``threads``; report CPU, switches and a frame digest."""
    from transforms.decode.sampler import sample_video
    from transforms.decode.types import SamplerConfig

    config = SamplerConfig(threads=threads)
    sample_video(paths[0], config)  # codecs and caches warm before the clock starts
    start.wait()
    cpu0, vol0, invol0 = _usage()
    digest = hashlib.sha256()
    videos = 0
    for _ in range(repeats):
        for path in paths:
            for frame in sample_video(path, config).frames:
                digest.update(frame)
            videos += 1
    cpu1, vol1, invol1 = _usage()
    results.put((videos, cpu1 - cpu0, vol1 - vol0, invol1 - invol0, digest.hexdigest()))


def run_setting(paths: list[str], threads: int, workers: int, repeats: int) -> dict:
    """``workers`` processes sampling ``paths`` at once with ``threads``: totals over all of them."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers + 1)
    results = context.Queue()
    processes = [
        context.Process(target=_worker, args=(paths, threads, repeats, start, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    start.wait()
    began = time.monotonic()
    reports = [results.get() for _ in processes]
    wall = time.monotonic() - began
    for process in processes:
        process.join()
    videos = sum(r[0] for r in reports)
    cpu = sum(r[1] for r in reports)
    return {
        "videos": videos,
        "wall_s": wall,
        "cpu_s_per_video": cpu / videos,
        "videos_per_cpu_s": videos / cpu,
        "videos_per_s": videos / wall,
        "voluntary_switches_per_video": sum(r[2] for r in reports) / videos,
        "involuntary_switches_per_video": sum(r[3] for r in reports) / videos,
        "digests": sorted({r[4] for r in reports}),
    }


def choose_videos(long: bool) -> list[Path]:
    videos = [SHARED_VIDEOS / name for name in REAL_FILES if (SHARED_VIDEOS / name).exists()]
    if long:
        from benchmarks.bench_sampler import generate_long_videos

        videos += generate_long_videos(Path(tempfile.gettempdir()) / "videorec-bench-sampler")
    if not videos:
        from pipeline.synth import SynthConfig, generate

        folder = Path(tempfile.mkdtemp(prefix="bench-threads-"))
        generate(folder, SynthConfig(users=4, items=6, seed=1, min_seconds=8, max_seconds=8), workers=2)
        videos = sorted((folder / "videos").iterdir())
    return videos


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="decoder threads per video under full load, same run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the videos per process and round")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="busy case: processes at once"
    )
    parser.add_argument("--long", action="store_true", help="add bench_sampler's two 144 s 720p videos")
    parser.add_argument("--cases", nargs="+", choices=("busy", "single"), default=["busy", "single"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    paths = [str(p) for p in choose_videos(args.long)]
    print(f"{len(paths)} videos: {', '.join(Path(p).name for p in paths)}", file=sys.stderr)
    cases = {case: workers for case, workers in (("busy", args.workers), ("single", 1)) if case in args.cases}
    rounds: dict[tuple[str, int], list[dict]] = {(c, t): [] for c in cases for t in SETTINGS}
    for number in range(args.rounds):
        order = SETTINGS[number % len(SETTINGS) :] + SETTINGS[: number % len(SETTINGS)]
        for case, workers in cases.items():
            for threads in order:
                found = run_setting(paths, threads, workers, args.repeats)
                rounds[(case, threads)].append(found)
                print(
                    f"round {number + 1} {case} threads={threads}: "
                    f"{found['cpu_s_per_video']:.3f} CPU s/video, {found['videos_per_s']:.2f} videos/s",
                    file=sys.stderr,
                    flush=True,
                )
    digests = {d for found in rounds.values() for r in found for d in r["digests"]}
    fields = (
        "cpu_s_per_video",
        "videos_per_cpu_s",
        "videos_per_s",
        "voluntary_switches_per_video",
        "involuntary_switches_per_video",
    )
    table = {
        f"{case} threads={threads}": {f: statistics.median(r[f] for r in found) for f in fields}
        for (case, threads), found in rounds.items()
    }
    print(
        f"\ncores {os.cpu_count()}, busy = {args.workers} processes, {args.rounds} rounds x {args.repeats} passes"
    )
    print("| case | CPU s/video | videos/CPU s | videos/s | vol. switches/video | invol. switches/video |")
    print("|---|---|---|---|---|---|")
    for name, row in table.items():
        print(
            f"| {name} | {row['cpu_s_per_video']:.4f} | {row['videos_per_cpu_s']:.2f} | {row['videos_per_s']:.2f} "
            f"| {row['voluntary_switches_per_video']:.0f} | {row['involuntary_switches_per_video']:.0f} |"
        )
    print("\nCPU s/video against threads=1 in the same round (median, min..max over rounds):")
    for case in cases:
        for threads in SETTINGS:
            ratios = [
                r["cpu_s_per_video"] / one["cpu_s_per_video"]
                for r, one in zip(rounds[(case, threads)], rounds[(case, 1)], strict=True)
            ]
            table[f"{case} threads={threads}"]["cpu_vs_one_thread"] = statistics.median(ratios)
            print(
                f"  {case} threads={threads}: x{statistics.median(ratios):.3f} ({min(ratios):.3f}..{max(ratios):.3f})"
            )
    print(f"same frames under every setting: {len(digests) == 1}")
    if args.json:
        payload = {"videos": paths, "workers": args.workers, "cores": os.cpu_count(), "table": table}
        args.json.write_text(json.dumps(payload | {"same_frames": len(digests) == 1}, indent=2) + "\n")
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
