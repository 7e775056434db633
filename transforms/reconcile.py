"""Reconciliation: the job's counts, its shard and part summaries, and the files beside them.

The manifest is built from per-shard and per-part summaries only; before it is written the job
checks that they add up (:func:`reconcile`, :func:`check_summaries`) and that the dataset's
folders hold exactly the files they describe (:func:`check_dataset_files`):

- every row, item and user is kept or dropped with a reason (``COUNT_CHECKS``);
- no path is summarised twice; shards are numbered 0..n-1 with none missing;
- each bucket's table part names the shards its cut planned, with their sample counts: every
  planned shard has exactly one summary with that many samples, and no summary is of a shard no
  bucket planned; the train shards' samples add up to the users with a training window, the item
  shards' to the items with frames;
- every summarised file is on storage with the summarised size;
- a data file that no summary lists is either a leftover attempt of a retried bundle (a listed
  file's :func:`transforms.storage.atomic_writer` temporary, ``<path>.tmp-<pid>-<thread>``: it is
  removed, and the caller counts it in ``run_stats.json`` and the summary) or a reconciliation
  failure: the dataset is not published.

Nothing is deleted before every check has passed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from dataformat.format import (
    FAILURE_PART_PATTERN,
    ITEM_SHARD_PATTERN,
    ITEMS_TABLE,
    MANIFEST_FILE,
    RUN_STATS_FILE,
    SEQUENCES_TABLE,
    TABLE_PART_PATTERN,
    TRAIN_SHARD_PATTERN,
    is_earlier_version_path,
)
from dataformat.manifest import COUNT_CHECKS
from transforms import storage

PLANNED_SHARDS = "shards"
"""Key of a table part summary: ``{shard path: samples}`` of the shards its bucket's cut planned."""
REFERENCED_SHARDS = "referenced_shards"
"""Key of an items part summary: earlier versions' item shards its rows point into (``../<id>/...``)."""
TRAIN_SAMPLES = "train_samples"
"""Key of a sequences part summary: users of the bucket with a training window (one sample each)."""

DATA_FOLDERS = tuple(
    sorted(
        {
            pattern.split("/")[0]
            for pattern in (ITEM_SHARD_PATTERN, TRAIN_SHARD_PATTERN, TABLE_PART_PATTERN, FAILURE_PART_PATTERN)
        }
    )
)
"""The dataset folders the job writes data files into (shards, table parts, failures parts)."""

LEFTOVERS_REMOVED = "leftover_files_removed"
"""``run_stats.json`` key (and Beam counter): leftover attempts (and, after the job, scratch files)
removed from the dataset folder."""

_SHOWN = 10  # paths named in one message


class ReconciliationError(RuntimeError):
    """The job's counts or files do not add up: an input, a shard or a summary was lost or counted
    twice (a bug, never bad input); nothing is published.

    Not an ``AssertionError``: that names a failed ``assert`` statement, the kind ``python -O``
    strips and test harnesses treat as their own; this check always runs and always raises.
    """


def reconcile(counts: Mapping) -> None:
    """Raise :class:`ReconciliationError` unless rows, items and users each add up exactly."""
    broken = []
    for name, total, kept, dropped in COUNT_CHECKS:
        accounted = counts[kept] + sum(counts[dropped].values())
        if counts[total] != accounted:
            broken.append(f"{name}: {counts[total]} seen != {accounted} accounted for")
    if broken:
        raise ReconciliationError("counts do not reconcile: " + "; ".join(broken))


def _named(paths: Iterable[str]) -> str:
    paths = sorted(paths)
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(paths[:_SHOWN]) + more


def _shard_numbers(shards: list[dict], pattern: str) -> list[str]:
    """Problems with the numbering of one kind of shard: each of 0..n-1 once."""
    prefix, suffix = pattern.split("{:06d}")
    numbers = []
    for shard in shards:
        number = shard["path"].removeprefix(prefix).removesuffix(suffix)
        if not (shard["path"].startswith(prefix) and shard["path"].endswith(suffix) and number.isdigit()):
            return [f"{shard['path']} is not named like {pattern}"]
        numbers.append(int(number))
    gaps = sorted(set(range(max(numbers, default=-1) + 1)) - set(numbers))
    if gaps:
        return [
            f"no summary of {_named(pattern.format(n) for n in gaps)} (shards up to {max(numbers)} summarised)"
        ]
    return []


def _planned_shards(kind: str, shards: list[dict], parts: list[dict]) -> list[str]:
    """Problems between one kind of shard summary and the shards the table parts' buckets planned."""
    problems, planned = [], {}
    for part in parts:
        if not isinstance(part.get(PLANNED_SHARDS), Mapping):
            problems.append(f"{part['path']}: its summary names no planned {kind} shards")
            continue
        for path, samples in part[PLANNED_SHARDS].items():
            if path in planned:
                problems.append(f"{path}: planned by two buckets")
            planned[path] = samples
    summarised = {shard["path"]: shard["samples"] for shard in shards}
    if missing := set(planned) - set(summarised):
        problems.append(f"{kind} shards written by their bucket but never summarised: {_named(missing)}")
    if unplanned := set(summarised) - set(planned):
        problems.append(f"{kind} shards summarised but planned by no bucket: {_named(unplanned)}")
    for path in sorted(set(planned) & set(summarised)):
        if summarised[path] != planned[path]:
            problems.append(
                f"{path}: summary says {summarised[path]} samples, its bucket cut {planned[path]}"
            )
    return problems


def check_summaries(
    item_shards: list[dict],
    train_shards: list[dict],
    tables: Mapping[str, list[dict]],
    failures: list[dict],
    train_pattern: str = TRAIN_SHARD_PATTERN,
) -> None:
    """Raise :class:`ReconciliationError` unless the shard and part summaries describe each file once
    and the shards are exactly those their buckets planned (see the module docstring); train shards
    are named like ``train_pattern`` (``dataformat.format.train_shard_pattern`` of the layout)."""
    problems = []
    groups = [item_shards, train_shards, *tables.values(), failures]
    twice = [path for path, n in Counter(p["path"] for group in groups for p in group).items() if n > 1]
    if twice:
        problems.append(f"summarised more than once: {_named(twice)}")
    own = [shard for shard in item_shards if not is_earlier_version_path(shard["path"])]
    problems += _shard_numbers(own, ITEM_SHARD_PATTERN)
    problems += _shard_numbers(train_shards, train_pattern)
    problems += _planned_shards("item", own, tables.get(ITEMS_TABLE, []))
    pointed = {path for part in tables.get(ITEMS_TABLE, []) for path in part.get(REFERENCED_SHARDS, ())}
    earlier = {shard["path"] for shard in item_shards} - {shard["path"] for shard in own}
    if pointed != earlier:
        problems.append(
            f"the items table points into earlier item shards {_named(pointed)}, "
            f"the summaries list {_named(earlier)}"
        )
    sequence_parts = tables.get(SEQUENCES_TABLE, [])
    problems += _planned_shards("train", train_shards, sequence_parts)
    with_window = sum(part.get(TRAIN_SAMPLES, 0) for part in sequence_parts)
    in_shards = sum(shard["samples"] for shard in train_shards)
    if in_shards != with_window:
        problems.append(
            f"train shards hold {in_shards} samples, {with_window} kept users have a training window"
        )
    for part in sequence_parts:
        if not 0 <= part.get(TRAIN_SAMPLES, -1) <= part["rows"]:
            problems.append(
                f"{part['path']}: {part.get(TRAIN_SAMPLES)} train samples for {part['rows']} users"
            )
    if problems:
        raise ReconciliationError("shard summaries do not reconcile: " + "; ".join(problems))


def summarised_files(manifest: Mapping) -> dict[str, int]:
    """``path -> bytes`` of every data file the manifest lists in the version's own folder (shards,
    table parts, failures parts); earlier versions' item shards (``../<id>/...``), published and never
    changed since, are checked by ``pipeline.versions.validate_manifest`` when the version is published."""
    files = {
        shard["path"]: shard["bytes"]
        for shards in manifest["shards"].values()
        for shard in shards
        if not is_earlier_version_path(shard["path"])
    }
    files |= {part["path"]: part["bytes"] for parts in manifest["table_files"].values() for part in parts}
    files |= {part["path"]: part["bytes"] for part in manifest["failure_files"]}
    return files


def unlisted_files(found: Mapping[str, int], listed: Mapping[str, int | None]) -> tuple[list[str], list[str]]:
    """``(leftover attempts, problems)`` of the files ``found`` (``path -> bytes``) against ``listed``.

    A listed file must be found with its size (a size of None is not checked); an unlisted one is
    a leftover attempt when it is the temporary of a listed file, else a problem.
    """
    problems, leftovers = [], []
    for path, size in sorted(listed.items()):
        if path not in found:
            problems.append(f"{path}: listed but not on storage")
        elif size is not None and found[path] != size:
            problems.append(f"{path}: {found[path]} bytes on storage, its summary says {size}")
    foreign = []
    for path in sorted(set(found) - set(listed)):
        (leftovers if storage.temporary_target(path) in listed else foreign).append(path)
    if foreign:
        problems.append(f"data files that no summary lists: {_named(foreign)}")
    return leftovers, problems


def check_dataset_files(folder: str, manifest: Mapping) -> list[str]:
    """Check the data folders of the dataset at ``folder`` against ``manifest`` (not yet written);
    remove leftover attempts of retried bundles and return their paths (relative to ``folder``).

    Raises :class:`ReconciliationError`, before deleting anything, when a summarised file is missing
    or of another size, or a data file is neither listed nor a leftover attempt.
    """
    found = {}
    for name in DATA_FOLDERS:
        found |= {
            f"{name}/{path}": size for path, size in storage.file_sizes(storage.join(folder, name)).items()
        }
    leftovers, problems = unlisted_files(found, summarised_files(manifest))
    if problems:
        raise ReconciliationError(f"{folder} does not reconcile with its summaries: " + "; ".join(problems))
    _delete(folder, leftovers)
    return leftovers


def reconcile_dataset_files(folder: str, manifest: Mapping) -> int:
    """:func:`check_dataset_files` inside the job: the leftovers removed are added to the job's
    ``videorec`` counter :data:`LEFTOVERS_REMOVED` (``run_stats.json`` and the summary report it)."""
    leftovers = check_dataset_files(folder, manifest)
    if leftovers:
        from apache_beam.metrics import Metrics

        Metrics.counter("videorec", LEFTOVERS_REMOVED).inc(len(leftovers))
    return len(leftovers)


def remove_leftovers_after_job(folder: str, manifest: Mapping, scratch: str) -> list[str]:
    """After the job, before publishing: every file in the local dataset ``folder`` besides the
    manifest, the run stats and the files the manifest lists must be a leftover attempt of a listed
    file or lie in the scratch folder ``scratch`` (relative; the job removed it, so only a straggler
    writes there). Those are removed, counted in ``run_stats.json`` (:data:`LEFTOVERS_REMOVED`) and
    returned; folders left empty are removed too.

    Raises :class:`ReconciliationError` (deleting nothing) for any other file.
    """
    found = storage.file_sizes(folder)
    listed: dict[str, int | None] = dict(summarised_files(manifest))
    listed |= {MANIFEST_FILE: None, RUN_STATS_FILE: None}
    in_scratch = sorted(path for path in found if path.startswith(scratch.rstrip("/") + "/"))
    leftovers, problems = unlisted_files({p: s for p, s in found.items() if p not in in_scratch}, listed)
    if problems:
        raise ReconciliationError(f"{folder} does not reconcile with its manifest: " + "; ".join(problems))
    removed = leftovers + in_scratch
    _delete(folder, removed)
    for path in sorted((p for p in Path(folder).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(path.iterdir()):
            path.rmdir()
    stats_path = storage.join(folder, RUN_STATS_FILE)
    if removed and storage.path_exists(stats_path):
        stats = json.loads(storage.read_whole_file(stats_path))
        stats[LEFTOVERS_REMOVED] = stats.get(LEFTOVERS_REMOVED, 0) + len(removed)
        storage.write_bytes(stats_path, (json.dumps(stats, indent=2) + "\n").encode())
    return removed


def _delete(folder: str, paths: list[str]) -> None:
    if paths:
        from apache_beam.io.filesystems import FileSystems

        FileSystems.delete([storage.join(folder, path) for path in paths])
