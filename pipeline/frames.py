"""``videorec frames VIDEO... --output DIR``: sample the middle frames of video files into JPEGs.

For each video writes ``DIR/<name>.<i>.jpg`` (i = 0..N-1, presentation order) and, last,
``DIR/<name>.json`` (the sampler's metadata plus the source URI and frame file names), replacing
what an earlier run wrote for that name, and prints one line. A video that cannot be sampled prints
its error class and message (its earlier outputs are removed); the command still processes the rest
and exits 1 at the end (0 when every video was sampled, 2 on bad arguments, with one line). The frame
flags are ``videorec ingest``'s (:func:`pipeline.flags.add_frame_flags`); ``--out`` is an alias of
``--output``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
from pathlib import Path

from pipeline.flags import Parser, add_frame_flags, sampler_settings
from transforms.decode.isolated_sampler import IsolatedSampler
from transforms.decode.sampler import sample_video
from transforms.decode.types import FrameSample, SamplerConfig, VideoError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="videorec frames",
        description="Sample the middle frames of videos (local paths or gs://) into JPEGs + JSON metadata. "
        "Exit status: 0 every video sampled, 1 some could not be (each says why), 2 bad flags.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or gs:// URIs")
    parser.add_argument(
        "--output",
        "--out",
        dest="output",
        required=True,
        type=Path,
        metavar="DIR",
        help="output folder (created if missing); a video's earlier outputs there are replaced",
    )
    add_frame_flags(parser, old_names=True)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="decode in this process (no hard time or memory limit; for debugging)",
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


def previous_outputs(out_dir: Path, name: str) -> list[Path]:
    """What an earlier run wrote for the video ``name``: ``name.json`` and ``name.<i>.jpg``."""
    frames = [p for p in out_dir.glob(f"{glob.escape(name)}.*.jpg") if p.name[len(name) + 1 : -4].isdigit()]
    return [p for p in [out_dir / f"{name}.json", *frames] if p.exists()]


def remove_outputs(out_dir: Path, name: str) -> None:
    """Delete a video's earlier outputs, its JSON first (a frame without its JSON is never read)."""
    for path in previous_outputs(out_dir, name):
        path.unlink()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_sample(out_dir: Path, name: str, uri: str, sample: FrameSample) -> None:
    """Replace the video's earlier outputs with ``name.<i>.jpg`` and, last, ``name.json``."""
    remove_outputs(out_dir, name)
    frame_files = []
    for index, jpeg in enumerate(sample.frames):
        frame_file = f"{name}.{index}.jpg"
        _write_atomically(out_dir / frame_file, jpeg)
        frame_files.append(frame_file)
    record = {"uri": uri, "frames": frame_files, **sample.meta}
    _write_atomically(
        out_dir / f"{name}.json", (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    )


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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SamplerConfig(**sampler_settings(args))
    except ValueError as exc:
        parser.error(str(exc))
    out: Path = args.output
    if out.exists() and not out.is_dir():
        parser.error(f"--output {out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".videorec-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        parser.error(f"cannot write to --output {out} ({err.strerror or err}); choose a writable folder")
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
                remove_outputs(out, name)
                print(f"FAIL  {name}: {error.kind}: {error.message}", flush=True)
                continue
            write_sample(out, name, uri, sample)
            print(summary_line(name, sample), flush=True)
    print(f"{len(args.videos) - failures} of {len(args.videos)} videos sampled into {out}")
    return 1 if failures else 0
