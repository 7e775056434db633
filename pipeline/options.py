"""Command-line options of ``videorec ingest``: the job's own flags plus pass-through Beam flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from dataformat.format import DEFAULT_TRAIN_FRAMES, TRAIN_FRAMES_LAYOUTS
from pipeline.beam_flags import beam_flag_problem
from pipeline.flags import (
    INGEST_DECODE_THREADS,
    Parser,
    add_frame_flags,
    positive_float,
    positive_int,
    sampler_settings,
)
from pipeline.versions import DEFAULT_LEASE_TTL_S
from transforms.compaction import DEFAULT_COMPACT_BELOW
from transforms.interactions import FORMATS
from transforms.timestamps import DEFAULT_TIMESTAMP_FORMAT, TIMESTAMP_FORMATS

DEFAULT_SHARD_MAX_SAMPLES = 1000
DEFAULT_SHARD_MAX_BYTES = 256 * 1024 * 1024

DEFAULT_MAX_DROPPED_FRACTION = 0.5
"""Gate default: refuse to publish when more than half of the rows were unreadable or of the videos
failed. Real logs and video stores lose a few percent; half or more lost means a wrong input (wrong
folder, pattern, format or timestamps), not bad luck (docs/INGEST.md, Gates)."""

DEFAULT_MAX_ATTEMPTS = 3
"""Default ``--max-attempts``: a video that failed three nights running, unchanged, is left alone."""


@dataclass(frozen=True)
class IngestConfig:
    """What the ingest job reads, how it filters, and how it writes.

    Attributes:
        interactions: interaction file, glob or comma-separated list (local or ``gs://``).
        output: dataset folder to write (local or ``gs://``); the manifest lands there last.
        format: one of ``FORMATS``; None detects each file's format from its name and first line.
        timestamp_format: how timestamps are written, one of ``TIMESTAMP_FORMATS``
            (``transforms.timestamps``): ``unix`` keeps integers as they are, the others are
            converted to integer seconds.
        videos: folder holding the videos; None (and no ``video_map``) writes an ID-only dataset.
        video_pattern: file name of an item's video under ``videos``; ``{item}`` is the item ID,
            ``{key}`` its sanitised key; ending in ``.*``: any extension (``transforms.locate_videos``).
        video_map: CSV with ``item`` and ``uri`` columns mapping items to video files instead.
        allow_any_uri: let ``video_map`` name videos outside its own folder, and symbolic links in
            ``videos`` (or the map's folder) lead outside it (otherwise such an item fails as
            ``bad_uri``; paths are compared resolved).
        titles: optional CSV with ``item`` and ``title`` columns.
        min_user_interactions: users with fewer interactions (after filtering) are dropped; at
            least 3 always applies, since leave-one-out needs a train, a validation and a test item.
        min_item_interactions: items with fewer (deduplicated) interactions are dropped first.
        max_seq_len: training samples hold the last ``max_seq_len + 1`` training items.
        new_items: hold out this fraction of the items seen, those first interacted with last, as new
            items (``transforms.new_items``); None: no new-item split.
        new_items_after: hold out the items first interacted with after this time (epoch ms) instead.
        shard_max_samples: most samples per item or train shard.
        shard_max_bytes: most bytes per shard (a single bigger sample gets a shard of its own).
        train_frames: train samples hold item indices only (``reference``) or also frames (``embedded``).
        sampler: frame-sampler settings as ``SamplerConfig`` keyword arguments.
        work_dir: scratch folder for frame fragments (default ``OUTPUT/_work``), removed at the end.
        dataset_root: write a new version under this dataset root and publish it as ``LATEST``
            (then ``output`` is the version's folder, set when the run takes the root's lease).
        dataset_version: the manifest's ``dataset_version``; None uses the content hash.
        keep: with ``dataset_root``, prune the root to this many published versions after publishing
            (``pipeline.versions.prune``); None keeps every version.
        lease_ttl_s: with ``dataset_root``, how long the run's lease on the root lasts (seconds): a
            run killed before releasing it blocks the root until then (a waiting run renews it; a
            launched one must finish within it).
        overwrite: with ``output``, replace an existing dataset folder (else the run stops before it starts).
        max_dropped_fraction: gate: the run fails and publishes nothing when more than this fraction
            of the rows read were invalid, or of the videos tried failed (``pipeline.gates``).
        max_attempts: with ``dataset_root``, a video that failed this many times with the same
            fingerprint is not decoded again (its failure is carried over); None retries forever.
        compact_below: with ``dataset_root`` and the ``reference`` layout, an earlier version whose files
            this run would index less than this fraction of (by bytes) is copied from instead, so it
            can be pruned (``transforms.compaction``); 0 never copies.
    """

    interactions: str
    output: str | None
    format: str | None = None
    timestamp_format: str = DEFAULT_TIMESTAMP_FORMAT
    videos: str | None = None
    video_pattern: str = "{item}.mp4"
    video_map: str | None = None
    allow_any_uri: bool = False
    titles: str | None = None
    min_user_interactions: int = 5
    min_item_interactions: int = 1
    max_seq_len: int = 10
    new_items: float | None = None
    new_items_after: int | None = None
    shard_max_samples: int = DEFAULT_SHARD_MAX_SAMPLES
    shard_max_bytes: int = DEFAULT_SHARD_MAX_BYTES
    train_frames: str = DEFAULT_TRAIN_FRAMES
    sampler: dict = field(default_factory=dict)
    work_dir: str | None = None
    dataset_root: str | None = None
    dataset_version: str | None = None
    keep: int | None = None
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S
    overwrite: bool = False
    max_dropped_fraction: float = DEFAULT_MAX_DROPPED_FRACTION
    max_attempts: int | None = DEFAULT_MAX_ATTEMPTS
    compact_below: float = DEFAULT_COMPACT_BELOW

    @property
    def has_videos(self) -> bool:
        return self.videos is not None or self.video_map is not None

    def content_config(self) -> dict:
        """The settings that change the dataset's content (recorded in the manifest)."""
        return {
            "interactions": self.interactions,
            "format": self.format,
            **(
                {"timestamp_format": self.timestamp_format}
                if self.timestamp_format != DEFAULT_TIMESTAMP_FORMAT
                else {}
            ),
            "videos": self.videos,
            "video_pattern": self.video_pattern if self.videos else None,
            "video_map": self.video_map,
            "titles": self.titles,
            "min_user_interactions": self.min_user_interactions,
            "min_item_interactions": self.min_item_interactions,
            "max_seq_len": self.max_seq_len,
            "shard_max_samples": self.shard_max_samples,
            "shard_max_bytes": self.shard_max_bytes,
            **({"new_items": self.new_items} if self.new_items is not None else {}),
            **({"new_items_after": self.new_items_after} if self.new_items_after is not None else {}),
        }

    @property
    def splits_new_items(self) -> bool:
        return self.new_items is not None or self.new_items_after is not None


def parser() -> argparse.ArgumentParser:
    """The ``videorec ingest`` flags; every one has help, and a default where it is optional."""
    p = Parser(
        prog="videorec ingest",
        description="Turn interaction logs and raw videos into a WebDataset dataset version. "
        "Apache Beam options (--runner, --project, --region, --temp_location, --direct_num_workers...) "
        "are accepted too; without --runner the job runs locally on Beam's FnApiRunner, one worker process per "
        "core (docs/INGEST.md, Runners). Exit status: 0 written "
        "(or published), 2 bad flags or input (nothing started), 3 the dataset root refused the run, "
        "4 a gate refused the result (nothing published), 130/143 interrupted (cleaned up).",
    )
    inputs = p.add_argument_group("inputs")
    inputs.add_argument(
        "--interactions",
        required=True,
        metavar="FILES",
        help="interaction file, glob or comma-separated list (local or gs://)",
    )
    inputs.add_argument(
        "--format", choices=FORMATS, default=None, help="format of every interaction file (default: detected)"
    )
    inputs.add_argument(
        "--timestamp-format",
        choices=TIMESTAMP_FORMATS,
        default=DEFAULT_TIMESTAMP_FORMAT,
        help="how the timestamp column is written: unix (integers, kept as they are), or unix_ms, "
        "float (seconds with a fraction) or iso8601 (dates, UTC unless an offset is given), each "
        "converted to integer seconds (default: unix)",
    )
    inputs.add_argument(
        "--videos", default=None, metavar="ROOT", help="folder of videos; without it the dataset is ID-only"
    )
    inputs.add_argument(
        "--video-pattern",
        default="{item}.mp4",
        metavar="PATTERN",
        help="file under --videos: {item} = item ID, {key} = sanitised key; {item}.* takes any extension",
    )
    inputs.add_argument(
        "--video-map", default=None, metavar="CSV", help="CSV with item and uri columns, instead of --videos"
    )
    inputs.add_argument(
        "--allow-any-uri",
        action="store_true",
        help="let --video-map name videos outside the CSV's own folder, and links in the video "
        "folder (or the map's) lead outside it",
    )
    inputs.add_argument("--titles", default=None, metavar="CSV", help="CSV with item and title columns")
    filters = p.add_argument_group("sequences")
    filters.add_argument(
        "--min-user-interactions",
        type=positive_int,
        default=5,
        metavar="N",
        help="drop users with fewer interactions (3 always applies: train, validation and test)",
    )
    filters.add_argument(
        "--min-item-interactions",
        type=positive_int,
        default=1,
        metavar="N",
        help="drop items with fewer interactions first",
    )
    filters.add_argument(
        "--max-seq-len",
        type=positive_int,
        default=10,
        metavar="N",
        help="training samples hold a user's last N + 1 training items",
    )
    new = filters.add_mutually_exclusive_group()
    new.add_argument(
        "--new-items",
        type=fraction,
        default=None,
        metavar="FRACTION",
        help="hold out the items first interacted with last as new items (test targets only; "
        "ties of first-interaction time broken by item ID hash, see docs/FORMAT.md)",
    )
    new.add_argument(
        "--new-items-after",
        type=int,
        default=None,
        metavar="EPOCH_MS",
        help="hold out the items first interacted with after this time as new items",
    )
    out = p.add_argument_group("output")
    where = out.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", metavar="DIR", help="dataset folder to write (local or gs://)")
    where.add_argument(
        "--dataset-root", metavar="ROOT", help="write ROOT/versions/<id>/ and publish it as ROOT/LATEST"
    )
    out.add_argument(
        "--overwrite",
        action="store_true",
        help="with --output: replace an existing dataset folder (the new one is swapped in only when complete)",
    )
    out.add_argument(
        "--max-dropped-fraction",
        type=fraction,
        default=DEFAULT_MAX_DROPPED_FRACTION,
        metavar="F",
        help="refuse to publish when more than this fraction of the rows were unreadable or of the "
        "videos failed",
    )
    out.add_argument(
        "--max-attempts",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --dataset-root: a video that failed N times is not decoded again until it changes "
        f"(default: {DEFAULT_MAX_ATTEMPTS})",
    )
    out.add_argument(
        "--compact-below",
        type=fraction,
        default=None,
        metavar="F",
        help="with --dataset-root: copy the unchanged items of an earlier version into this one, instead "
        "of pointing into it, when they are less than this fraction of the bytes it wrote, so old versions can be "
        f"pruned (default: {DEFAULT_COMPACT_BELOW}; 0: never copy)",
    )
    out.add_argument(
        "--keep",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --dataset-root: after publishing, delete all but the N newest published versions "
        "(default: keep all)",
    )
    out.add_argument(
        "--lease-ttl",
        type=positive_float,
        default=DEFAULT_LEASE_TTL_S,
        metavar="S",
        help="with --dataset-root: seconds the run's lease on the root lasts; a waiting run renews it, "
        "a launched one must finish within it",
    )
    out.add_argument(
        "--shard-max-samples",
        type=positive_int,
        default=DEFAULT_SHARD_MAX_SAMPLES,
        metavar="N",
        help="most samples per item or train shard",
    )
    out.add_argument(
        "--shard-max-bytes",
        type=positive_int,
        default=DEFAULT_SHARD_MAX_BYTES,
        metavar="BYTES",
        help="most bytes per shard (a bigger single sample gets a shard of its own)",
    )
    out.add_argument(
        "--train-frames",
        choices=TRAIN_FRAMES_LAYOUTS,
        default=DEFAULT_TRAIN_FRAMES,
        help="reference: train samples hold item indices, frames only in the item shards; embedded: "
        f"train samples also hold their items' frames (default: {DEFAULT_TRAIN_FRAMES}; docs/FORMAT.md)",
    )
    out.add_argument(
        "--work-dir",
        default=None,
        metavar="DIR",
        help="scratch folder for frame fragments, removed at the end (default: OUTPUT/_work)",
    )
    add_frame_flags(p, threads=INGEST_DECODE_THREADS)
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    return p


def parse(argv: list[str]) -> tuple[IngestConfig, list[str], bool]:
    """``(config, Beam flags as given, quiet)`` from the command line, without touching any file.

    ``pipeline.local_runner.choose_runner`` turns the Beam flags into the runner's.

    A flag that is neither ours nor Beam's, or a bad value, prints one line and exits 2 (SystemExit).
    """
    p = parser()
    args, beam_args = p.parse_known_args(argv)
    problem = beam_flag_problem(beam_args, p)
    if problem:
        p.error(problem)
    if args.videos and args.video_map:
        p.error("give --videos or --video-map, not both")
    if args.dataset_root is None:
        for flag, value in (
            ("--keep", args.keep),
            ("--max-attempts", args.max_attempts),
            ("--compact-below", args.compact_below),
        ):
            if value is not None:
                p.error(f"{flag} needs --dataset-root")
    elif args.overwrite:
        p.error("--overwrite is for --output; a dataset root never overwrites a version")
    if args.allow_any_uri and not (args.video_map or args.videos):
        p.error("--allow-any-uri needs --video-map or --videos")
    config = IngestConfig(
        interactions=args.interactions,
        output=args.output.rstrip("/") if args.output else None,
        format=args.format,
        timestamp_format=args.timestamp_format,
        videos=args.videos,
        video_pattern=args.video_pattern,
        video_map=args.video_map,
        allow_any_uri=args.allow_any_uri,
        titles=args.titles,
        min_user_interactions=args.min_user_interactions,
        min_item_interactions=args.min_item_interactions,
        max_seq_len=args.max_seq_len,
        new_items=args.new_items,
        new_items_after=args.new_items_after,
        shard_max_samples=args.shard_max_samples,
        shard_max_bytes=args.shard_max_bytes,
        train_frames=args.train_frames,
        sampler=sampler_settings(args),
        work_dir=args.work_dir,
        dataset_root=args.dataset_root.rstrip("/") if args.dataset_root else None,
        keep=args.keep,
        lease_ttl_s=args.lease_ttl,
        overwrite=args.overwrite,
        max_dropped_fraction=args.max_dropped_fraction,
        max_attempts=args.max_attempts or DEFAULT_MAX_ATTEMPTS,
        compact_below=DEFAULT_COMPACT_BELOW if args.compact_below is None else args.compact_below,
    )
    return config, beam_args, args.quiet


def fraction(text: str) -> float:
    """A number in [0, 1] (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
