"""Command-line options of ``videorec ingest``: the job's own flags plus pass-through Beam flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from pipeline.versions import DEFAULT_LEASE_TTL_S
from transforms.interactions import FORMATS

DEFAULT_SHARD_MAX_SAMPLES = 1000
DEFAULT_SHARD_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class IngestConfig:
    """What the ingest job reads, how it filters, and how it writes.

    Attributes:
        interactions: interaction file, glob or comma-separated list (local or ``gs://``).
        output: dataset folder to write (local or ``gs://``); the manifest lands there last.
        format: one of ``FORMATS``; None detects each file's format from its name and first line.
        videos: folder holding the videos; None (and no ``video_map``) writes an ID-only dataset.
        video_pattern: file name of an item's video under ``videos``; ``{item}`` is the item ID,
            ``{key}`` its sanitised key.
        video_map: CSV with ``item`` and ``uri`` columns mapping items to video files instead.
        titles: optional CSV with ``item`` and ``title`` columns.
        min_user_interactions: users with fewer interactions (after filtering) are dropped; at
            least 3 always applies, since leave-one-out needs a train, a validation and a test item.
        min_item_interactions: items with fewer (deduplicated) interactions are dropped first.
        max_seq_len: training samples hold the last ``max_seq_len + 1`` training items.
        shard_max_samples: most samples per item or train shard.
        shard_max_bytes: most bytes per shard (a single bigger sample gets a shard of its own).
        sampler: frame-sampler settings as ``SamplerConfig`` keyword arguments.
        work_dir: scratch folder for frame fragments (default ``OUTPUT/_work``), removed at the end.
        dataset_root: write a new version under this dataset root and publish it as ``LATEST``
            (then ``output`` is the version's folder, set when the run takes the root's lease).
        dataset_version: the manifest's ``dataset_version``; None uses the content hash.
        keep: with ``dataset_root``, prune the root to this many published versions after publishing
            (``pipeline.versions.prune``); None keeps every version.
        lease_ttl_s: with ``dataset_root``, how long the run's lease on the root lasts (seconds): a
            run killed before releasing it blocks the root until then. Longer than the longest job.
    """

    interactions: str
    output: str | None
    format: str | None = None
    videos: str | None = None
    video_pattern: str = "{item}.mp4"
    video_map: str | None = None
    titles: str | None = None
    min_user_interactions: int = 5
    min_item_interactions: int = 1
    max_seq_len: int = 10
    shard_max_samples: int = DEFAULT_SHARD_MAX_SAMPLES
    shard_max_bytes: int = DEFAULT_SHARD_MAX_BYTES
    sampler: dict = field(default_factory=dict)
    work_dir: str | None = None
    dataset_root: str | None = None
    dataset_version: str | None = None
    keep: int | None = None
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S

    @property
    def has_videos(self) -> bool:
        return self.videos is not None or self.video_map is not None

    def content_config(self) -> dict:
        """The settings that change the dataset's content (recorded in the manifest)."""
        return {
            "interactions": self.interactions,
            "format": self.format,
            "videos": self.videos,
            "video_pattern": self.video_pattern if self.videos else None,
            "video_map": self.video_map,
            "titles": self.titles,
            "min_user_interactions": self.min_user_interactions,
            "min_item_interactions": self.min_item_interactions,
            "max_seq_len": self.max_seq_len,
            "shard_max_samples": self.shard_max_samples,
            "shard_max_bytes": self.shard_max_bytes,
        }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="videorec ingest",
        allow_abbrev=False,
        description="Turn interaction logs and raw videos into a WebDataset dataset version. "
        "Unrecognised flags (--runner, --project, --region, --temp_location, --direct_num_workers...) "
        "go to Apache Beam; without --runner the job runs locally on all cores.",
    )
    inputs = p.add_argument_group("inputs")
    inputs.add_argument(
        "--interactions", required=True, help="interaction file, glob or comma-separated list"
    )
    inputs.add_argument("--format", choices=FORMATS, default=None, help="override format detection")
    inputs.add_argument("--videos", default=None, metavar="ROOT", help="folder of videos (omit for ID-only)")
    inputs.add_argument("--video-pattern", default="{item}.mp4", help="video file name under --videos")
    inputs.add_argument("--video-map", default=None, metavar="CSV", help="CSV item,uri instead of --videos")
    inputs.add_argument("--titles", default=None, metavar="CSV", help="CSV item,title")
    filters = p.add_argument_group("sequences")
    filters.add_argument("--min-user-interactions", type=int, default=5)
    filters.add_argument("--min-item-interactions", type=int, default=1)
    filters.add_argument("--max-seq-len", type=int, default=10)
    out = p.add_argument_group("output")
    where = out.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", metavar="DIR", help="dataset folder to write (local or gs://)")
    where.add_argument(
        "--dataset-root", metavar="ROOT", help="write ROOT/versions/<id>/ and publish it as ROOT/LATEST"
    )
    out.add_argument(
        "--keep",
        type=int,
        default=None,
        metavar="N",
        help="with --dataset-root: after publishing, delete all but the N newest published versions",
    )
    out.add_argument(
        "--lease-ttl",
        type=float,
        default=DEFAULT_LEASE_TTL_S,
        metavar="S",
        help="with --dataset-root: seconds the run holds the root (default 12 h); "
        "a killed run blocks the root until then",
    )
    out.add_argument("--shard-max-samples", type=int, default=DEFAULT_SHARD_MAX_SAMPLES)
    out.add_argument("--shard-max-bytes", type=int, default=DEFAULT_SHARD_MAX_BYTES)
    out.add_argument("--work-dir", default=None, help="scratch folder (default OUTPUT/_work)")
    frames = p.add_argument_group("frames (see transforms/decode/types.py SamplerConfig)")
    frames.add_argument("--num-frames", type=int, default=None)
    frames.add_argument("--frame-stride", type=int, default=None)
    frames.add_argument("--frame-size", type=int, nargs="+", default=None, metavar="PX", help="H [W]")
    frames.add_argument("--resize", default=None, help="center-crop, squash or pad")
    frames.add_argument("--jpeg-quality", type=int, default=None)
    frames.add_argument("--decode-timeout", type=float, default=None, metavar="S", help="seconds per video")
    frames.add_argument("--decode-max-memory-mb", type=int, default=None)
    frames.add_argument("--sampler-backend", default=None, help="pyav or ffmpeg")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    return p


def parse(argv: list[str]) -> tuple[IngestConfig, list[str], bool]:
    """``(config, Beam flags, quiet)`` from the command line; raises SystemExit on bad flags."""
    p = parser()
    args, beam_args = p.parse_known_args(argv)
    if args.videos and args.video_map:
        p.error("give --videos or --video-map, not both")
    for name in (
        "min_user_interactions",
        "min_item_interactions",
        "max_seq_len",
        "shard_max_samples",
        "shard_max_bytes",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.dataset_root is None and args.keep is not None:
        p.error("--keep needs --dataset-root")
    if args.keep is not None and args.keep < 1:
        p.error("--keep must be at least 1")
    if args.lease_ttl <= 0:
        p.error("--lease-ttl must be positive")
    sampler = {
        key: value
        for key, value in (
            ("num_frames", args.num_frames),
            ("stride", args.frame_stride),
            ("size", _size(args.frame_size, p)),
            ("resize", args.resize),
            ("jpeg_quality", args.jpeg_quality),
            ("timeout_s", args.decode_timeout),
            ("max_memory_mb", args.decode_max_memory_mb),
            ("backend", args.sampler_backend),
        )
        if value is not None
    }
    config = IngestConfig(
        interactions=args.interactions,
        output=args.output.rstrip("/") if args.output else None,
        format=args.format,
        videos=args.videos,
        video_pattern=args.video_pattern,
        video_map=args.video_map,
        titles=args.titles,
        min_user_interactions=args.min_user_interactions,
        min_item_interactions=args.min_item_interactions,
        max_seq_len=args.max_seq_len,
        shard_max_samples=args.shard_max_samples,
        shard_max_bytes=args.shard_max_bytes,
        sampler=sampler,
        work_dir=args.work_dir,
        dataset_root=args.dataset_root.rstrip("/") if args.dataset_root else None,
        keep=args.keep,
        lease_ttl_s=args.lease_ttl,
    )
    return config, with_local_defaults(beam_args), args.quiet


def _size(values: list[int] | None, p: argparse.ArgumentParser) -> tuple[int, int] | None:
    if values is None:
        return None
    if len(values) not in (1, 2):
        p.error("--frame-size takes H or H W")
    return (values[0], values[-1])


def with_local_defaults(beam_args: list[str]) -> list[str]:
    """Without ``--runner``, run on the DirectRunner with one worker process per core."""
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        return beam_args
    defaults = []
    if not any(a.startswith("--direct_num_workers") for a in beam_args):
        defaults.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if not any(a.startswith("--direct_running_mode") for a in beam_args):
        defaults.append("--direct_running_mode=multi_processing")
    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        defaults.append("--default_sdk_harness_log_level=ERROR")
    return ["--runner=DirectRunner", *defaults, *beam_args]
