"""How fast ``videorec synth`` writes a dataset, against encoding the same videos in one process.

Measures, in one run and on the same config (default: 1,000 items of 2-8 s, 64x64 to 320x240):

- ``synth``: the whole ``generate()`` (tables, videos in ``--workers`` processes, ground truth);
- ``encode, 1 process`` (baseline): ``encode_video`` on every item's spec, one after another;
- ``render only, 1 process``: drawing the same frames without encoding, the part that is not FFmpeg.

Usage: ``python benchmarks/bench_synth.py [--items 1000] [--users 2000] [--workers N] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from pipeline.synth import SynthConfig, generate
from pipeline.synth.catalogue import assign_categories, video_spec
from pipeline.synth.render import encode_video, render_frames


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for synth")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    config = SynthConfig(users=args.users, items=args.items, seed=args.seed)
    categories = assign_categories(config)
    specs = [video_spec(config, item, int(categories[item - 1])) for item in range(1, config.items + 1)]
    frames = sum(spec.frames for spec in specs)

    with tempfile.TemporaryDirectory(prefix="bench-synth-") as scratch:
        scratch = Path(scratch)
        synth_s = timed(lambda: generate(scratch / "synth", config, workers=args.workers))
        video_bytes = sum(p.stat().st_size for p in (scratch / "synth" / "videos").iterdir())
        (scratch / "baseline").mkdir()
        encode_s = timed(lambda: [encode_video(scratch / "baseline" / f"{s.item}.mp4", s) for s in specs])
        render_s = timed(lambda: [sum(1 for _ in render_frames(spec)) for spec in specs])

    results = {
        "items": config.items,
        "users": config.users,
        "frames": frames,
        "video_megabytes": round(video_bytes / 1e6, 1),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "synth_seconds": round(synth_s, 2),
        "synth_videos_per_second": round(config.items / synth_s, 1),
        "baseline_encode_1_process_seconds": round(encode_s, 2),
        "baseline_videos_per_second": round(config.items / encode_s, 1),
        "render_only_1_process_seconds": round(render_s, 2),
        "speedup_vs_baseline": round(encode_s / synth_s, 2),
    }
    print(f"{config.items} videos, {frames} frames, {results['video_megabytes']} MB, {os.cpu_count()} CPUs")
    print(
        f"  synth ({args.workers} workers)   {synth_s:7.2f} s  {results['synth_videos_per_second']:6.1f} videos/s"
    )
    print(f"  encode, 1 process   {encode_s:7.2f} s  {results['baseline_videos_per_second']:6.1f} videos/s")
    print(f"  render only, 1 proc {render_s:7.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
