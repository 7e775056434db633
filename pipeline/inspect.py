"""``videorec inspect DATASET``: print a dataset version's summary and check it is whole.

Checks: every file the manifest lists exists with the recorded size and sha256; every shard opens
as a tar and holds the recorded number of samples; the tables have ``num_items`` / ``num_users``
rows; the counts reconcile; the failures parts hold one record per dropped row, item and user.
``--sample N --out DIR`` also writes the frames of the first N item samples (train samples for
datasets without item shards) as JPEG files for a person to look at, and one contact sheet per
sample (``KEY.sheet.png``: the frames in a row, labelled with the item ID and title).

Every path the manifest lists must be relative and stay inside the dataset folder (``path_problem``),
and no listed file is read beyond the size the manifest gives it.

Exit status: 0 the dataset is whole, 1 it has problems (each printed as a ``PROBLEM:`` line: a
damaged shard, table part or failures part, or a path that leads outside the dataset, is one of
them, never a traceback), 2 its manifest cannot be read or is unsound in shape (not an object,
``tables: []``, ``shards: null``...).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import sys
import tarfile
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from dataformat.format import (
    ITEM_FAILURES_TABLE,
    ITEM_SHARDS,
    ITEMS_TABLE,
    MANIFEST_FILE,
    SHARD_KINDS,
    TRAIN_SHARDS,
    VERSIONS_DIR,
    split_member,
)
from dataformat.manifest import content_problems, manifest_shape_problems, read_manifest, size_problem
from pipeline.contact_sheet import contact_sheet, frames_by_sample
from pipeline.report_text import one_line
from pipeline.summary import format_summary
from transforms import storage
from transforms.manifest import ReconciliationError, reconcile

ERROR_CHARS = 120
"""Longest error text quoted in a problem line."""


def path_problem(dataset: str, path) -> str | None:
    """Why a path the manifest lists may not be read, or None: it must be relative, without ``.`` or
    ``..`` parts, and resolve (symbolic links followed) inside the dataset folder. The one exception
    is the project's own reuse of item shards in a dataset root: ``../<version>/...`` from
    ``ROOT/versions/<id>/``, which must resolve inside ``ROOT/versions``."""
    if not isinstance(path, str) or not path:
        return f"{path!r}: not a file path"
    parts = path.split("/")
    reuse = len(parts) > 2 and parts[0] == ".." and _in_versions(dataset)
    rest = parts[1:] if reuse else parts
    if "://" in path or path.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in rest):
        return f"{path}: not a relative path inside the dataset folder; the manifest may not name it"
    if storage.is_remote(dataset):
        return None
    base = os.path.realpath(os.path.dirname(os.path.abspath(dataset)) if reuse else dataset)
    resolved = os.path.realpath(os.path.join(dataset, path))
    if not resolved.startswith(base.rstrip(os.sep) + os.sep):
        return f"{path}: resolves outside the dataset folder ({resolved}); it is not read"
    return None


def _in_versions(dataset: str) -> bool:
    parent = dataset.rstrip("/").rsplit("/", 2)
    return len(parent) == 3 and parent[1] == VERSIONS_DIR


def _check_file(dataset: str, entry: dict) -> tuple[list[str], bytes | None]:
    """Problems of one listed file, and its bytes when they could be read: never more bytes than
    the manifest says it has (a bigger file is not read at all), and nothing but a regular file."""
    if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int):
        return [f"{entry!r}: not a file entry with a byte count"], None
    unsafe = path_problem(dataset, entry.get("path"))
    if unsafe:
        return [unsafe], None
    path = storage.join(dataset, entry["path"])
    if not storage.path_exists(path):
        return [f"{entry['path']}: missing"], None
    if not storage.is_remote(path) and not stat.S_ISREG(os.stat(path).st_mode):
        return [f"{entry['path']}: not a regular file"], None
    size = storage.size(path)
    if size > entry["bytes"]:  # never read more than the manifest says the file holds
        return [size_problem(entry["path"], size, entry)], None
    with storage.open_read(path) as reader:
        data = reader.read(entry["bytes"] + 1)
    return content_problems(entry["path"], data, entry), data


def _listing_problems(manifest: dict) -> list[str]:
    """Paths listed without a size and checksum, or the other way round: every table part and
    failures part must be in both ``tables``/``failures`` and ``table_files``/``failure_files``."""
    problems = []
    files = manifest.get("table_files")
    for name, paths in manifest["tables"].items():
        entries = files.get(name) if isinstance(files, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            problems.append(f"table {name}: table_files lists no parts with sizes and checksums")
        elif sorted(paths) != sorted(str(e.get("path")) for e in entries):
            problems.append(f"table {name}: its parts differ from those table_files lists")
    entries = manifest.get("failure_files")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append("failure_files lists no parts with sizes and checksums")
    elif sorted(manifest["failures"]) != sorted(str(e.get("path")) for e in entries):
        problems.append("the failures parts differ from those failure_files lists")
    return problems


def count_tar_samples(data: bytes) -> int:
    """Distinct WebDataset keys (member name up to the first dot) in a tar archive (gzip-compressed or not)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        return len({split_member(m.name)[0] for m in archive if m.isfile()})


def _read_manifest(dataset: str) -> dict:
    """The manifest of ``dataset``, unchecked: its problems are reported here, each as one line."""
    return read_manifest(dataset, storage.read_whole_file, checked=False)


def verify_dataset(dataset: str) -> list[str]:
    """Everything wrong with the dataset at ``dataset`` (an empty list means it is whole)."""
    manifest = _read_manifest(dataset)
    problems = manifest_shape_problems(manifest)
    if problems:
        return problems
    problems = _listing_problems(manifest)
    try:
        reconcile(manifest["counts"])
    except ReconciliationError as err:
        problems.append(str(err))
    except (KeyError, TypeError, AttributeError) as err:
        problems.append(f"counts are incomplete ({one_line(err, ERROR_CHARS)})")
    for kind in SHARD_KINDS:
        for shard in manifest["shards"][kind]:
            found, data = _check_file(dataset, shard)
            problems += found
            if data is None:
                continue
            try:
                samples = count_tar_samples(data)
            except tarfile.TarError as err:
                problems.append(f"{shard['path']}: does not open as tar ({err})")
                continue
            if samples != shard["samples"]:
                problems.append(f"{shard['path']}: {samples} samples, manifest says {shard['samples']}")
    table_files = manifest.get("table_files")
    for name, parts in table_files.items() if isinstance(table_files, dict) else []:
        if not isinstance(parts, list):
            continue  # reported by _listing_problems
        rows, counted = 0, True
        for entry in parts:
            found, data = _check_file(dataset, entry)
            problems += found
            if data is None and not found[-1].endswith(": missing"):
                counted = False  # not read (outside the dataset, too big...): its rows are unknown
                continue
            try:
                rows += pq.read_metadata(io.BytesIO(data)).num_rows if data is not None else 0
            except (pa.ArrowException, OSError) as err:
                problems.append(
                    f"{entry['path']}: not a readable Parquet file ({one_line(err, ERROR_CHARS)})"
                )
                counted = False  # its rows are unknown: the count below would only repeat the problem
        if name == ITEM_FAILURES_TABLE:  # one row per failed video that was tried: at most the failed items
            failed = sum((manifest["counts"].get("items_failed") or {}).values())
            if counted and rows > failed:
                problems.append(f"table {name}: {rows} rows in its parts, only {failed} items failed")
            continue
        expected = manifest["num_items"] if name == ITEMS_TABLE else manifest["num_users"]
        if counted and rows != expected:
            problems.append(f"table {name}: {rows} rows in its parts, manifest says {expected}")
    records = Counter()
    failure_files = manifest.get("failure_files")
    for entry in failure_files if isinstance(failure_files, list) else []:
        found, data = _check_file(dataset, entry)
        problems += found
        if data is None:
            continue
        try:
            records += failure_records_by_reason(data)
        except (ValueError, KeyError, TypeError) as err:  # not JSON lines, or records without kind/reason
            problems.append(f"{entry['path']}: not readable failure records ({one_line(err, ERROR_CHARS)})")
    problems += _check_failures(records, manifest["counts"])
    return problems


def failure_records_by_reason(data: bytes) -> Counter:
    """``Counter((kind, reason))`` of the records in one failures part."""
    return Counter((r["kind"], r["reason"]) for r in map(json.loads, data.decode("utf-8").splitlines()) if r)


def _check_failures(found: Counter, counts: dict) -> list[str]:
    expected = Counter()
    for kind, key in (("row", "rows_dropped"), ("item", "items_failed"), ("user", "users_dropped")):
        expected.update({(kind, reason): n for reason, n in counts[key].items()})
    if found != expected:
        return [f"failure records by kind and reason {dict(found)} differ from the counts {dict(expected)}"]
    return []


def dump_samples(dataset: str, count: int, out_dir: str) -> list[str]:
    """Write the frames (and JSON) of the first ``count`` samples to ``out_dir``, and one contact
    sheet per sample (``KEY.sheet.png``, :mod:`pipeline.contact_sheet`); return the file paths."""
    manifest = _read_manifest(dataset)
    shards = manifest["shards"][ITEM_SHARDS] or manifest["shards"][TRAIN_SHARDS]
    os.makedirs(out_dir, exist_ok=True)
    written, keys, members = [], set(), {}

    def write_sheet():
        if members:
            key = next(iter(members))[0]
            target = os.path.join(out_dir, f"{key}.sheet.png")
            contact_sheet(frames_by_sample({name: data for (_, name), data in members.items()})).save(target)
            written.append(target)
            members.clear()

    for shard in shards:
        found, data = _check_file(dataset, shard)
        if found or data is None:
            continue  # reported by verify_dataset
        for member_name, content in _members(data):
            key, name = split_member(member_name)
            if key not in keys:
                write_sheet()
                if len(keys) == count:
                    return written
            keys.add(key)
            members[(key, name)] = content
            target = os.path.join(out_dir, os.path.basename(member_name))
            with open(target, "wb") as out:
                out.write(content)
            written.append(target)
    write_sheet()
    return written


def _members(data: bytes):
    """``(name, content)`` of a shard's files, up to the first damage (which verify_dataset reports)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                if member.isfile():
                    yield member.name, archive.extractfile(member).read()
    except tarfile.TarError:
        return


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="videorec inspect", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help=f"dataset folder or its {MANIFEST_FILE} (local or gs://)")
    parser.add_argument("--sample", type=int, default=0, metavar="N", help="dump the frames of N samples")
    parser.add_argument(
        "--output",
        "--out",
        dest="out",
        default="inspect-samples",
        metavar="DIR",
        help="folder for --sample output (default: inspect-samples)",
    )
    args = parser.parse_args(argv)
    dataset = args.dataset.removesuffix(f"/{MANIFEST_FILE}")
    try:
        manifest = _read_manifest(dataset)
    except (FileNotFoundError, OSError, ValueError) as err:
        print(f"videorec inspect: cannot read the manifest of {dataset}: {err}", file=sys.stderr)
        return 2
    shape = manifest_shape_problems(manifest)
    if shape:
        print(f"videorec inspect: the manifest of {dataset} is unsound: {'; '.join(shape)}", file=sys.stderr)
        return 2
    if args.sample and os.path.exists(args.out) and not os.path.isdir(args.out):
        print(
            f"videorec inspect: error: --output {args.out} is a file; give a folder for the samples",
            file=sys.stderr,
        )
        return 2
    print(format_summary(manifest))
    problems = verify_dataset(dataset)
    if args.sample:
        files = dump_samples(dataset, args.sample, args.out)
        print(f"wrote {len(files)} files of {args.sample} sample(s) to {args.out}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("dataset OK" if not problems else f"dataset has {len(problems)} problem(s)")
    return 0 if not problems else 1
