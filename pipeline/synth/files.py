"""Synthetic MicroLens-format dataset: interaction logs, titles and really encoded videos.

``generate(out_dir, SynthConfig(...))`` (or ``videorec synth --out DIR``) writes::

    DIR/pairs.csv          user,item,timestamp (header; epoch milliseconds; rows in log order)
    DIR/pairs.tsv          user<TAB>item item ... (one line per user, items in time order, no header)
    DIR/titles.csv         item,title (header; CSV-quoted, some titles with commas, quotes, non-ASCII)
    DIR/videos/{item}.mp4  H.264 or HEVC with B-frames, varied size / fps / GOP, some portrait, some rotated
    DIR/synth.json         ground truth: config, each item's hidden category and video, every planted fault

Output is byte-identical for a given config (seed included), whatever the number of worker
processes: every random choice draws from a generator seeded by ``(seed, purpose, id)``, the
encoders run single-threaded and the MP4 muxer writes no version strings or creation times.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from pipeline.synth.catalogue import (
    assign_categories,
    generate_interactions,
    make_title,
    new_item_mask,
    plant_video_faults,
    release_ms,
    video_spec,
)
from pipeline.synth.config import (
    BAD_ROW_KINDS,
    MOTIONS,
    SEED_BAD_ROWS,
    Interactions,
    SynthConfig,
    VideoSpec,
    seeded_rng,
)
from pipeline.synth.render import category_palette, write_videos

SYNTH_FORMAT_VERSION = 1

# What a reader should make of each planted fault: the failure reason (ingest's names), or for truncated
# files, that they decode only in part.
EXPECTED_OUTCOMES = {
    "missing_videos": "not_found",
    "truncated_videos": "decodes only the frames before the cut; a sampler falls back to their middle",
    "no_video_stream": "no_video_stream",
    "corrupt_videos": "corrupt",
    "bad_rows": "the row's kind (missing_field, bad_timestamp, empty_user or empty_item)",
}


def bad_row(kind: str, user: int, item: int, timestamp: int) -> str:
    """One malformed ``pairs.csv`` line of the given kind (see ``BAD_ROW_KINDS``)."""
    return {
        "missing_field": f"{user},{item}",
        "bad_timestamp": f"{user},{item},not-a-time",
        "empty_user": f",{item},{timestamp}",
        "empty_item": f"{user},,{timestamp}",
    }[kind]


def pairs_csv_lines(config: SynthConfig, interactions: Interactions) -> tuple[list[str], list[dict]]:
    """Data lines of ``pairs.csv`` in log order (by time, then user, then item), bad rows mixed in.

    Returns the lines (without the header) and one record per bad row with its 1-based file line
    number (the header is line 1).
    """
    rows = sorted(
        (timestamp, user, item) for user, seq in interactions.sequences.items() for item, timestamp in seq
    )
    lines = [f"{user},{item},{timestamp}" for timestamp, user, item in rows]
    rng = seeded_rng(config.seed, SEED_BAD_ROWS)
    positions = sorted(int(p) for p in rng.integers(0, len(lines) + 1, config.bad_rows))
    planted = []
    for offset, position in enumerate(positions):
        kind = BAD_ROW_KINDS[offset % len(BAD_ROW_KINDS)]
        timestamp, user, item = rows[int(rng.integers(len(rows)))]
        line = bad_row(kind, user, item, timestamp)
        lines.insert(position + offset, line)
        planted.append({"kind": kind, "line": position + offset + 2, "text": line})
    return lines, planted


def write_tables(out_dir: Path, config: SynthConfig, interactions: Interactions) -> list[dict]:
    """Write pairs.csv, pairs.tsv and titles.csv; return the planted bad rows."""
    lines, planted = pairs_csv_lines(config, interactions)
    (out_dir / "pairs.csv").write_text("user,item,timestamp\n" + "".join(f"{ln}\n" for ln in lines))
    with open(out_dir / "pairs.tsv", "w", encoding="utf-8", newline="\n") as tsv:
        for user, seq in sorted(interactions.sequences.items()):
            tsv.write(f"{user}\t{' '.join(str(item) for item, _ in seq)}\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["item", "title"])
    writer.writerows([item, make_title(config.seed, item)] for item in range(1, config.items + 1))
    (out_dir / "titles.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return planted


SYNTH_FILES = ("pairs.csv", "pairs.tsv", "titles.csv", "synth.json")
SYNTH_VIDEO = re.compile(r"^\d+\.mp4$")


def _prepare(out_dir: Path, overwrite: bool) -> None:
    """Make ``out_dir`` ready for new synth output; with ``overwrite`` delete only what synth wrote there.

    Earlier output is recognised by its ``synth.json``; only the files synth writes are deleted
    (the three tables, ``synth.json`` and ``videos/<item>.mp4``), and nothing at all when ``videos/``
    holds a file of another name or there is no ``synth.json``: then ``FileExistsError`` says why.
    """
    present = [out_dir / name for name in SYNTH_FILES if (out_dir / name).exists()]
    videos = out_dir / "videos"
    if videos.exists():
        present.append(videos)
    if present and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds synth output ({present[0].name}); pass overwrite=True"
        )
    if present:
        _check_synth_output(out_dir, videos)
    for path in present:
        if path != videos:
            path.unlink()
    if videos.exists():
        for video in videos.iterdir():
            video.unlink()
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)


def _check_synth_output(out_dir: Path, videos: Path) -> None:
    """``FileExistsError`` unless ``out_dir`` holds synth output and ``videos/`` only synth's videos."""
    try:
        json.loads((out_dir / "synth.json").read_text(encoding="utf-8"))["synth_format_version"]
    except (OSError, ValueError, KeyError, TypeError):
        raise FileExistsError(
            f"{out_dir} holds no synth.json, so its files are not synth output; they are not replaced: "
            "choose another --out, or remove them yourself"
        ) from None
    if not videos.exists():
        return
    if not videos.is_dir():
        raise FileExistsError(f"{videos} is a file, not synth's videos folder; it is not replaced")
    foreign = sorted(p.name for p in videos.iterdir() if not (SYNTH_VIDEO.match(p.name) and p.is_file()))
    if foreign:
        raise FileExistsError(
            f"{videos} holds files synth did not write (e.g. {foreign[0]}); nothing was replaced: "
            "move them, or choose another --out"
        )


def generate(
    out_dir: str | os.PathLike,
    config: SynthConfig | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a synthetic dataset to ``out_dir``; return the ground truth also saved as ``synth.json``.

    ``workers`` is the number of encoding processes (default: all CPUs); it never changes the output.
    ``overwrite`` replaces earlier synth output in ``out_dir`` (other files there are left alone, and
    a ``videos/`` folder holding other files is refused).
    ``progress(done, total)`` is called after each video.
    """
    config = config or SynthConfig()
    config.validate()
    out_dir = Path(out_dir)
    _prepare(out_dir, overwrite)
    categories = assign_categories(config)
    interactions = generate_interactions(config, categories)
    faults = plant_video_faults(config, interactions)
    fault_of = {item: kind for kind, items in faults.items() for item in items}
    specs = [
        replace(video_spec(config, item, int(categories[item - 1])), fault=fault_of.get(item))
        for item in range(1, config.items + 1)
    ]
    bad_rows = write_tables(out_dir, config, interactions)
    details = write_videos(out_dir / "videos", specs, workers or os.cpu_count() or 1, progress)
    summary = ground_truth(config, interactions, specs, faults, details, bad_rows)
    (out_dir / "synth.json").write_text(
        json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary


def ground_truth(
    config: SynthConfig,
    interactions: Interactions,
    specs: list[VideoSpec],
    faults: dict[str, list[int]],
    details: dict[int, dict],
    bad_rows: list[dict],
) -> dict:
    """The ``synth.json`` document. IDs are strings, exactly as they appear in the files."""
    popularity = {spec.item: 0 for spec in specs}
    for seq in interactions.sequences.values():
        for item, _ in seq:
            popularity[item] += 1
    num_interactions = sum(popularity.values())
    new = new_item_mask(config)
    return {
        "synth_format_version": SYNTH_FORMAT_VERSION,
        "config": asdict(config),
        "files": {
            "pairs_csv": "pairs.csv",
            "pairs_tsv": "pairs.tsv",
            "titles_csv": "titles.csv",
            "videos": "videos/{item}.mp4",
        },
        "notes": {
            "pairs_tsv": "holds exactly the well-formed rows of pairs.csv; bad rows exist only in pairs.csv",
            "rotation": "counter-clockwise degrees as PyAV's VideoFrame.rotation reads it; stored frames are "
            "the displayed picture turned the other way, so applying the rotation shows it upright",
            "timestamps": "epoch milliseconds; no two interactions of one user share a timestamp",
            "bad_rows": "line is the 1-based line number in pairs.csv, whose line 1 is the header",
            "faults": "faulty videos are all referenced by pairs.csv; their interactions are left in the log",
            "new_items": "items released late: no interaction with one is before release_ms; after it each "
            "weighs as much as an average item; categories are drawn as for any other item",
        },
        "new_items": {
            "release_ms": release_ms(config),
            "items": [str(spec.item) for spec in specs if new[spec.item - 1]],
        },
        "expected_outcomes": EXPECTED_OUTCOMES,
        "counts": {
            "users": len(interactions.sequences),
            "items": len(specs),
            "interactions": num_interactions,
            "csv_data_rows": num_interactions + len(bad_rows),
            "bad_rows": len(bad_rows),
            "video_files": sum(1 for spec in specs if spec.fault != "missing_videos"),
            "faulty_videos": sum(len(items) for items in faults.values()),
        },
        "categories": [
            {
                "category": c,
                "motion": MOTIONS[c % len(MOTIONS)],
                "background_rgb": list(category_palette(c, config.categories)[0]),
                "foreground_rgb": list(category_palette(c, config.categories)[1]),
            }
            for c in range(config.categories)
        ],
        "items": [
            {
                "item": str(spec.item),
                "category": spec.category,
                "popularity": popularity[spec.item],
                "new": bool(new[spec.item - 1]),
                "fault": spec.fault,
                "video": spec.describe(),
            }
            for spec in specs
        ],
        "users": [
            {
                "user": str(user),
                "interactions": len(seq),
                "preferred_categories": interactions.preferences[user],
            }
            for user, seq in sorted(interactions.sequences.items())
        ],
        "faults": {
            **{
                kind: [{"item": str(item), "path": f"videos/{item}.mp4", **details[item]} for item in items]
                for kind, items in faults.items()
            },
            "bad_rows": bad_rows,
        },
    }
