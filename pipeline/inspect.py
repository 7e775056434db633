"""``videorec inspect DATASET``: print a dataset version's summary and check it is whole.

Checks: every file the manifest lists exists with the recorded size and sha256; every shard opens
as a tar and holds the recorded number of samples; the tables have ``num_items`` / ``num_users``
rows; the counts reconcile; the failures parts hold one record per dropped row, item and user.
``--sample N --out DIR`` also writes the frames of the first N item samples (train samples for
datasets without item shards) as JPEG files for a person to look at, and one contact sheet per
sample (``KEY.sheet.png``: the frames in a row, labelled with the item ID and title).

Exit status: 0 the dataset is whole, 1 it has problems (each printed as a ``PROBLEM:`` line: a
damaged shard, table part or failures part is one of them, never a traceback), 2 its manifest
cannot be read.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contact_sheet import contact_sheet, sample_rows
from pipeline.summary import format_summary
from transforms import storage
from transforms.format import (
    ITEM_SHARDS,
    ITEMS_TABLE,
    MANIFEST_FILE,
    SHARD_KINDS,
    TRAIN_SHARDS,
    split_member,
)
from transforms.manifest import ReconciliationError, read_manifest, reconcile


def _check_file(dataset: str, entry: dict) -> tuple[list[str], bytes | None]:
    path = storage.join(dataset, entry["path"])
    if not storage.exists(path):
        return [f"{entry['path']}: missing"], None
    data = storage.read_bytes(path)
    problems = []
    if len(data) != entry["bytes"]:
        problems.append(f"{entry['path']}: {len(data)} bytes, manifest says {entry['bytes']}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        problems.append(f"{entry['path']}: sha256 differs from the manifest")
    return problems, data


def count_tar_samples(data: bytes) -> int:
    """Distinct WebDataset keys (member name up to the first dot) in a tar archive."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return len({split_member(m.name)[0] for m in archive if m.isfile()})


def verify_dataset(dataset: str) -> list[str]:
    """Everything wrong with the dataset at ``dataset`` (an empty list means it is whole)."""
    manifest = read_manifest(dataset)
    problems = []
    try:
        reconcile(manifest["counts"])
    except ReconciliationError as err:
        problems.append(str(err))
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
    for name, parts in manifest.get("table_files", {}).items():
        rows, counted = 0, True
        for entry in parts:
            found, data = _check_file(dataset, entry)
            problems += found
            try:
                rows += pq.read_metadata(io.BytesIO(data)).num_rows if data is not None else 0
            except (pa.ArrowException, OSError) as err:
                problems.append(f"{entry['path']}: not a readable Parquet file ({_short(err)})")
                counted = False  # its rows are unknown: the count below would only repeat the problem
        expected = manifest["num_items"] if name == ITEMS_TABLE else manifest["num_users"]
        if counted and rows != expected:
            problems.append(f"table {name}: {rows} rows in its parts, manifest says {expected}")
    records = Counter()
    for entry in manifest.get("failure_files", []):
        found, data = _check_file(dataset, entry)
        problems += found
        if data is None:
            continue
        try:
            records += failure_records_by_reason(data)
        except (ValueError, KeyError, TypeError) as err:  # not JSON lines, or records without kind/reason
            problems.append(f"{entry['path']}: not readable failure records ({_short(err)})")
    problems += _check_failures(records, manifest["counts"])
    return problems


def _short(err: BaseException, limit: int = 120) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    manifest = read_manifest(dataset)
    shards = manifest["shards"][ITEM_SHARDS] or manifest["shards"][TRAIN_SHARDS]
    os.makedirs(out_dir, exist_ok=True)
    written, keys, members = [], set(), {}

    def write_sheet():
        if members:
            key = next(iter(members))[0]
            target = os.path.join(out_dir, f"{key}.sheet.png")
            contact_sheet(sample_rows({name: data for (_, name), data in members.items()})).save(target)
            written.append(target)
            members.clear()

    for shard in shards:
        path = storage.join(dataset, shard["path"])
        if not storage.exists(path):
            continue  # reported by verify_dataset
        for member_name, content in _members(storage.read_bytes(path)):
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
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
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
        manifest = read_manifest(dataset)
    except (FileNotFoundError, OSError, ValueError) as err:
        print(f"videorec inspect: cannot read the manifest of {dataset}: {err}", file=sys.stderr)
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
