"""``videorec synth --out DIR``: the command line of :func:`pipeline.synth.files.generate`."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields

from pipeline.synth.config import SynthConfig
from pipeline.synth.files import generate


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    """Content options use the ``SynthConfig`` field names as destinations."""
    defaults = SynthConfig()
    parser = argparse.ArgumentParser(
        prog="videorec synth",
        description="Generate a synthetic MicroLens-format dataset: pairs.csv, pairs.tsv, titles.csv, "
        "videos/{item}.mp4 and the ground truth synth.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--output", "--out", dest="out", required=True, metavar="DIR", help="output folder, created if absent"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace earlier synth output in --out")
    parser.add_argument(
        "--workers", type=int, help="encoding processes, all CPUs if unset; never changes the output"
    )
    content = parser.add_argument_group("content (changes the files)")
    content.add_argument("--users", type=int, default=defaults.users, help="user IDs 1..N")
    content.add_argument("--items", type=int, default=defaults.items, help="item IDs 1..N, one video each")
    content.add_argument("--seed", type=int, default=defaults.seed, help="same seed, same bytes")
    content.add_argument("--categories", type=int, default=defaults.categories, help="hidden item categories")
    content.add_argument("--min-interactions", type=int, default=defaults.min_interactions, help="per user")
    content.add_argument("--max-interactions", type=int, default=defaults.max_interactions, help="per user")
    content.add_argument("--min-seconds", type=float, default=defaults.min_seconds, help="shortest video")
    content.add_argument("--max-seconds", type=float, default=defaults.max_seconds, help="longest video")
    content.add_argument(
        "--sizes", type=_size, nargs="+", default=defaults.sizes, metavar="WxH", help="landscape sizes"
    )
    content.add_argument(
        "--fps", dest="fps_choices", type=int, nargs="+", default=defaults.fps_choices, help="frame rates"
    )
    content.add_argument(
        "--gop",
        dest="gop_choices",
        type=int,
        nargs="+",
        default=defaults.gop_choices,
        help="keyframe intervals",
    )
    content.add_argument("--b-frames", type=int, default=defaults.b_frames, help="consecutive B-frames")
    content.add_argument("--hevc-fraction", type=float, default=defaults.hevc_fraction, help="share of HEVC")
    content.add_argument(
        "--portrait-fraction", type=float, default=defaults.portrait_fraction, help="portrait"
    )
    content.add_argument(
        "--rotation-fraction", type=float, default=defaults.rotation_fraction, help="with display rotation"
    )
    content.add_argument(
        "--new-items", type=int, default=defaults.new_items, metavar="N", help="items released late"
    )
    content.add_argument(
        "--new-item-release-day",
        type=float,
        default=defaults.new_item_release_day,
        metavar="DAYS",
        help="days after the start when the new items are released",
    )
    faults = parser.add_argument_group("planted faults (recorded in synth.json)")
    faults.add_argument("--missing-videos", type=int, default=0, metavar="N", help="videos not written")
    faults.add_argument("--truncated-videos", type=int, default=0, metavar="N", help="files cut inside mdat")
    faults.add_argument("--no-video-stream", type=int, default=0, metavar="N", help="audio-only MP4s")
    faults.add_argument("--corrupt-videos", type=int, default=0, metavar="N", help="random bytes after ftyp")
    faults.add_argument("--bad-rows", type=int, default=0, metavar="N", help="malformed pairs.csv rows")
    return parser


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    values = {f.name: getattr(args, f.name) for f in fields(SynthConfig) if hasattr(args, f.name)}
    return SynthConfig(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})


def _print_progress(done: int, total: int) -> None:
    """One updating line on a terminal; every tenth in logs."""
    if sys.stderr.isatty():
        print(
            f"\rsynth: videos {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True
        )
    elif done == total or done % max(1, total // 10) == 0:
        print(f"synth: videos {done}/{total}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        config = config_from_args(args)
        summary = generate(
            args.out, config, workers=args.workers, overwrite=args.overwrite, progress=_print_progress
        )
    except (ValueError, FileExistsError) as error:
        print(f"videorec synth: {error}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    print(
        f"synth: wrote {args.out}: {counts['users']} users, {counts['items']} items, "
        f"{counts['interactions']} interactions, {counts['video_files']} video files "
        f"({counts['faulty_videos']} faulty), {counts['bad_rows']} bad rows "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0
