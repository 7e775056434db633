"""``videorec frames VIDEO... --out DIR``: sample the middle frames of video files into JPEGs.

For each video writes ``DIR/<name>.<i>.jpg`` (i = 0..N-1, presentation order) and ``DIR/<name>.json``
(the sampler's metadata plus the source URI and frame file names), and prints one line. A video that
cannot be sampled prints its error class and message; the command still processes the rest and
exits 1 at the end (0 when every video was sampled, 2 on bad arguments).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from transforms.decode.isolated_sampler import IsolatedSampler
from transforms.decode.sampler import sample_video
from transforms.decode.types import BACKENDS, RESIZE_MODES, FrameSample, SamplerConfig, VideoError


def parse_size(text: str) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"256x320"`` -> height 256, width 320."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive integers, got {text!r}")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    defaults = SamplerConfig()
    parser = argparse.ArgumentParser(
        prog="videorec frames",
        description="Sample the middle frames of videos (local paths or gs://) into JPEGs + JSON metadata.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or gs:// URIs")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--num-frames", type=int, default=defaults.num_frames, help="frames per video (N)")
    parser.add_argument("--stride", type=int, default=defaults.stride, help="frames between chosen frames")
    parser.add_argument(
        "--size", type=parse_size, default=defaults.size, help="output size, N or HxW (default 256x256)"
    )
    parser.add_argument("--resize", choices=RESIZE_MODES, default=defaults.resize, help="resize policy")
    parser.add_argument("--quality", type=int, default=defaults.jpeg_quality, help="JPEG quality 1..100")
    parser.add_argument("--backend", choices=BACKENDS, default=defaults.backend, help="decoder backend")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="decoder threads per video")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds per video")
    parser.add_argument(
        "--max-memory-mb", type=int, default=defaults.max_memory_mb, help="memory cap per video"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="decode in this process (no hard time/memory limit; for debugging)",
    )
    return parser


def output_name(uri: str, taken: set[str]) -> str:
    """File stem of ``uri``, made unique among the names already written in this run."""
    stem = os.path.splitext(uri.rstrip("/").rsplit("/", 1)[-1])[0] or "video"
    name, number = stem, 2
    while name in taken:
        name, number = f"{stem}-{number}", number + 1
    taken.add(name)
    return name


def write_sample(out_dir: Path, name: str, uri: str, sample: FrameSample) -> None:
    frame_files = []
    for index, jpeg in enumerate(sample.frames):
        frame_file = f"{name}.{index}.jpg"
        (out_dir / frame_file).write_bytes(jpeg)
        frame_files.append(frame_file)
    record = {"uri": uri, "frames": frame_files, **sample.meta}
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def summary_line(name: str, sample: FrameSample) -> str:
    meta = sample.meta
    flags = [flag for flag in ("padded", "fallback") if meta.get(flag)]
    share = meta["bytes_read"] / meta["file_size"] if meta.get("file_size") else 0.0
    pts = meta["pts_s"]
    return (
        f"ok    {name}: {meta['codec']} {meta['width']}x{meta['height']} rot {meta['rotation']}, "
        f"{len(sample.frames)} frames at {pts[0]:.3f}..{pts[-1]:.3f} s, {meta['frames_decoded']} decoded "
        f"({meta['decode_path']}), read {share:.0%}, {meta['timing']['cpu_s']:.2f} cpu-s"
        + (f" [{', '.join(flags)}]" if flags else "")
    )


class InProcessSampler:
    """Same interface as IsolatedSampler, decoding in this process (no hard limits)."""

    def __init__(self, config: SamplerConfig):
        self.config = config

    def sample(self, uri: str) -> FrameSample:
        return sample_video(uri, self.config)

    def close(self) -> None:
        pass


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = SamplerConfig(
            num_frames=args.num_frames,
            stride=args.stride,
            size=args.size,
            resize=args.resize,
            jpeg_quality=args.quality,
            backend=args.backend,
            threads=args.threads,
            timeout_s=args.timeout,
            max_memory_mb=args.max_memory_mb,
        )
    except ValueError as exc:
        print(f"videorec frames: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    taken: set[str] = set()
    sampler = InProcessSampler(config) if args.in_process else IsolatedSampler(config)
    with contextlib.closing(sampler):
        for uri in args.videos:
            name = output_name(uri, taken)
            try:
                sample = sampler.sample(uri)
            except VideoError as error:
                failures += 1
                print(f"FAIL  {name}: {error.kind}: {error.message}", flush=True)
                continue
            write_sample(args.out, name, uri, sample)
            print(summary_line(name, sample), flush=True)
    print(f"{len(args.videos) - failures} of {len(args.videos)} videos sampled into {args.out}")
    return 1 if failures else 0
