"""Wrong rows, links and manifests (issue 23, items 9-13): a real CSV parser, row faults that stay row faults,
``inspect`` that refuses unsound manifests and reads only inside the dataset.

- CSV records whose quoted fields hold commas and newlines are one row each, read whole across the
  byte splits the job reads in parallel (checked against Python's ``csv`` module for many split
  sizes, and once through a real Beam pipeline); a duplicated header name is refused in one line;
- a timestamp beyond 64 bits is one ``bad_timestamp`` failure, not a crashed job;
- a video path that leads out of its folder through a symbolic link is ``bad_uri`` (by the resolved
  path), for ``--videos`` and ``--video-map`` alike, unless ``--allow-any-uri``;
- ``inspect`` refuses ``tables: []``, ``shards: null`` and a manifest that is a list, and never
  reads a listed path that leads outside the dataset, nor more bytes than the manifest gives it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import shutil
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli import main as videorec
from pipeline.inspect import main as inspect_main
from pipeline.inspect import verify_dataset
from pipeline.synth import SynthConfig, generate
from tests.dataset_files import dataset_failures, dataset_table
from tests.test_bad_input import LOCAL, one_error_line, write_csv
from transforms.csv_records import MAX_RECORD_LINES
from transforms.input_splits import plan_splits
from transforms.interactions import Interaction, parse_text
from transforms.packed_rows import unpack_rows, unpack_user_rows
from transforms.read_interactions import FAILED, ReadInteractions
from transforms.text_splits import count_newlines, split_context, split_lines

# ---------------------------------------------------------------------------------------------- 9. CSV


def quoted_log(rows: int = 60, seed: int = 7) -> str:
    """A CSV whose IDs hold commas, doubled quotes, newlines and CRLFs, some quoted and some not."""
    rng = random.Random(seed)
    pieces = ["plain", "with,comma", 'say ""hi""', "two\nlines", "three\r\nlines\nhere", "", "x"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["user", "item", "timestamp"])
    for k in range(rows):
        user = f"u{k % 7}" + rng.choice(["", " " + rng.choice(pieces).replace('""', '"')])
        item = f"i{k % 11}" + rng.choice(["", rng.choice(pieces).replace('""', '"')])
        writer.writerow([user, item, 1000 + k])
        if k % 13 == 0:
            out.write("\n")  # a blank line between records
    return out.getvalue()


def expected_rows(text: str) -> list[tuple[str, str, int, int]]:
    """``(user, item, timestamp, first line)`` of every record, as Python's csv module reads them."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return rows
        if fields and line > 1:
            rows.append((fields[0].strip(), fields[1].strip(), int(fields[2]), line))


def read_in_splits(path: Path, split_bytes: int) -> list:
    """What the job's splits read (``count_newlines``, ``split_context``, ``split_lines``, ``parse_text``),
    in this process."""
    splits = plan_splits([(0, str(path), "microlens-csv")], split_bytes)
    context = split_context([count_newlines(s) for s in splits])
    results = []
    for s in splits:
        newlines_before, state = context[(s.file_index, s.number)]
        with open(path, "rb") as reader:
            skipped, lines, limit = split_lines(reader, s.start, s.end, state)
            first = 1 + newlines_before + skipped
            results += parse_text(lines, s.format, 0, str(path), first, s.columns, limit=limit)
    return results


def test_quoted_fields_with_commas_and_newlines_are_one_row_each():
    text = 'user,item,timestamp\n"u\n1","i,1",100\nu2,"say ""hi""",101\n"u3","multi\r\nline\n\nitem",102\n'
    parsed = list(parse_text(io.BytesIO(text.encode()), "microlens-csv", 0, "log"))
    assert parsed == [
        Interaction("u\n1", "i,1", 100, 0, 2, 0),
        Interaction("u2", 'say "hi"', 101, 0, 4, 0),
        Interaction("u3", "multi\r\nline\n\nitem", 102, 0, 5, 0),
    ]


@pytest.mark.parametrize("split_bytes", [1, 7, 16, 33, 64, 101, 257, 10_000])
def test_records_are_read_once_and_whole_whatever_the_splits(tmp_path, split_bytes):
    text = quoted_log()
    path = tmp_path / "log.csv"
    path.write_text(text, newline="")
    parsed = read_in_splits(path, split_bytes)
    assert [p for p in parsed if not isinstance(p, Interaction)] == []
    assert [(r.user_id, r.item_id, r.timestamp, r.row) for r in parsed] == expected_rows(text)


def test_a_quoted_field_left_open_drops_each_of_its_lines_not_the_file(tmp_path):
    lines = ["user,item,timestamp", "u1,i1,1", 'u2,"never closed,2']
    lines += [f"u{k},i{k},{k}" for k in range(3, MAX_RECORD_LINES + 10)]
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    parsed = read_in_splits(path, 64 * 1024)
    rows = [p for p in parsed if isinstance(p, Interaction)]
    failures = [p for p in parsed if not isinstance(p, Interaction)]
    assert [r.row for r in rows] == [2]
    assert len(failures) == len(lines) - 2 and {f["reason"] for f in failures} == {"bad_quoting"}
    assert [f["row"] for f in failures] == list(range(3, len(lines) + 1))


def test_a_real_job_reads_split_records_whole(tmp_path):
    text = quoted_log(rows=40, seed=3)
    path = tmp_path / "log.csv"
    path.write_text(text, newline="")

    def rows_of(batch):
        _, blob = batch
        for user, packed in unpack_user_rows(blob):
            for row in unpack_rows(user, packed):
                yield (row.user_id, row.item_id, row.timestamp, row.row)

    with BeamTestPipeline(runner="FnApiRunner") as p:
        outputs = p | ReadInteractions([(0, str(path), "microlens-csv")], split_bytes=29)
        assert_that(outputs.rows | beam.FlatMap(rows_of), equal_to(expected_rows(text)), label="Rows")
        assert_that(outputs[FAILED], equal_to([]), label="NoFailures")


def test_an_ingest_of_quoted_newlines_counts_records_not_lines(tmp_path, capsys):
    text = "user,item,timestamp\n" + "".join(f'"u{k % 3}","item\n{k % 4}",{k}\n' for k in range(30))
    (tmp_path / "log.csv").write_text(text)
    out = tmp_path / "out"
    argv = ["ingest", "--interactions", str(tmp_path / "log.csv"), "--output", str(out), *LOCAL]
    assert videorec([*argv, "--min-user-interactions", "3"]) == 0, capsys.readouterr().err
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["rows_read"] == 30 and counts["rows_dropped"] == {}
    assert sorted(dataset_table(out, "items").column("item_id").to_pylist()) == [
        f"item\n{k}" for k in range(4)
    ]


def test_a_header_that_names_a_column_twice_is_refused(tmp_path, capsys):
    log = write_csv(tmp_path / "log.csv", [(1, 2, 3, 4)] * 5, header="user,item,item,timestamp")
    out = tmp_path / "out"
    try:
        status = videorec(["ingest", "--interactions", str(log), "--output", str(out), *LOCAL])
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    line = one_error_line(capsys.readouterr().err)
    assert "names column 'item' twice (columns 2 and 3); name each column once" in line
    assert not out.exists()


def test_interactions_that_name_a_folder_are_one_line(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    write_csv(tmp_path / "logs" / "a.csv", [("u1", 1, 1)])
    try:
        status = videorec(
            ["ingest", "--interactions", str(tmp_path / "logs"), "--output", str(tmp_path / "out"), *LOCAL]
        )
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    assert f"--interactions {tmp_path / 'logs'} is a folder; give its files, e.g." in one_error_line(
        capsys.readouterr().err
    )


@pytest.mark.parametrize("kind", ["utf-16", "gzip"])
def test_utf16_and_gzip_logs_are_named_not_shown_as_garbage_headers(tmp_path, capsys, kind):
    text = "user,item,timestamp\n" + "".join(f"u{k % 3},{k % 4},{k}\n" for k in range(20))
    log = tmp_path / "log.csv"
    log.write_bytes(gzip.compress(text.encode()) if kind == "gzip" else text.encode("utf-16"))
    for extra in ([], ["--format", "microlens-csv"]):
        try:
            status = videorec(
                ["ingest", "--interactions", str(log), *extra, "--output", str(tmp_path / "out"), *LOCAL]
            )
        except SystemExit as stop:
            status = stop.code
        assert status == 2
        line = one_error_line(capsys.readouterr().err)
        assert (
            "is gzip-compressed; decompress it first" if kind == "gzip" else "is UTF-16 or UTF-32 text"
        ) in line


# ---------------------------------------------------------------------------------------------- 11. timestamps


def test_a_timestamp_beyond_64_bits_is_one_bad_timestamp_record(tmp_path, capsys):
    rows = [(f"u{u}", 1 + (u + k) % 4, 1000 * u + k) for u in range(4) for k in range(5)]
    rows += [("u0", 1, 2**63), ("u1", 2, "1e25"), ("u2", 3, -(2**63) - 1), ("u3", 4, 2**63 - 1)]
    log = write_csv(tmp_path / "log.csv", rows)
    out = tmp_path / "out"
    status = videorec(
        ["ingest", "--interactions", str(log), "--output", str(out), "--min-user-interactions", "3", *LOCAL]
    )
    assert status == 0, capsys.readouterr().err
    failures = sorted((f["row"], f["reason"]) for f in dataset_failures(out) if f["kind"] == "row")
    assert failures == [(22, "bad_timestamp"), (23, "bad_timestamp"), (24, "bad_timestamp")]
    assert "out of range (64-bit)" in next(f["message"] for f in dataset_failures(out) if f["kind"] == "row")
    assert json.loads((out / "manifest.json").read_text())["counts"]["rows_read"] == 24


# ---------------------------------------------------------------------------------------------- 12. links


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    config = SynthConfig(
        users=12, items=8, categories=2, seed=4, max_interactions=8, min_seconds=1, max_seconds=1
    )
    generate(out, config, workers=2)
    return out


SMALL = ["--frame-size", "16", "--min-user-interactions", "3"]


def item_reasons(dataset: Path) -> dict[str, str]:
    return {f["item_id"]: f["reason"] for f in dataset_failures(dataset) if f["kind"] == "item"}


def test_a_link_in_the_video_folder_that_leads_outside_is_not_followed(synth, tmp_path, capsys):
    outside = Path(shutil.copytree(synth / "videos", tmp_path / "elsewhere"))
    videos = Path(shutil.copytree(synth / "videos", tmp_path / "videos"))
    (videos / "1.mp4").unlink()
    (videos / "1.mp4").symlink_to(outside / "1.mp4")  # a file outside the folder
    (videos / "2.mp4").unlink()
    (videos / "2.mp4").symlink_to("1.mp4")  # a link that stays inside (to the link above: outside)
    (videos / "3.mp4").unlink()
    (videos / "inner").mkdir()
    (videos / "inner" / "3.mp4").write_bytes((synth / "videos" / "3.mp4").read_bytes())
    (videos / "3.mp4").symlink_to("inner/3.mp4")  # a link inside the folder: followed
    argv = ["ingest", "--interactions", str(synth / "pairs.csv"), "--videos", str(videos), *SMALL]
    assert videorec([*argv, "--output", str(tmp_path / "strict"), *LOCAL]) == 0, capsys.readouterr().err
    reasons = item_reasons(tmp_path / "strict")
    assert reasons.get("1") == reasons.get("2") == "bad_uri" and "3" not in reasons
    failures = dataset_failures(tmp_path / "strict")
    message = next(f["message"] for f in failures if f["kind"] == "item" and f["item_id"] == "1")
    assert f"is a link to {outside / '1.mp4'}, outside the video folder" in message
    assert videorec([*argv, "--output", str(tmp_path / "open"), "--allow-any-uri", *LOCAL]) == 0
    assert {"1", "2"} <= set(dataset_table(tmp_path / "open", "items").column("item_id").to_pylist())


def test_a_video_map_path_that_links_outside_its_folder_is_bad_uri(synth, tmp_path, capsys):
    maps = tmp_path / "maps"
    Path(shutil.copytree(synth / "videos", maps / "videos"))
    (maps / "videos" / "4.mp4").unlink()
    (maps / "videos" / "4.mp4").symlink_to(synth / "videos" / "4.mp4")
    rows = ["item,uri"] + [f"{i},videos/{i}.mp4" for i in range(1, 9)]
    (maps / "map.csv").write_text("\n".join(rows) + "\n")
    argv = ["ingest", "--interactions", str(synth / "pairs.csv"), "--video-map", str(maps / "map.csv")]
    assert videorec([*argv, *SMALL, "--output", str(tmp_path / "out"), *LOCAL]) == 0, capsys.readouterr().err
    assert item_reasons(tmp_path / "out") == {"4": "bad_uri"}


# ---------------------------------------------------------------------------------------------- 10, 13. inspect


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inspect")
    rows = [(f"u{u}", 1 + (u + k) % 5, 1000 * u + k) for u in range(6) for k in range(6)]
    log = write_csv(folder / "log.csv", rows)
    out = folder / "dataset"
    assert videorec(["ingest", "--interactions", str(log), "--output", str(out), *LOCAL]) == 0
    assert verify_dataset(str(out)) == []
    return out


def edited(dataset: Path, tmp_path: Path, change) -> Path:
    copy = Path(shutil.copytree(dataset, tmp_path / "copy"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest = change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: {**m, "tables": []}, "tables is not an object mapping table names to part paths (list)"),
        (lambda m: {**m, "shards": None}, "shards is not an object mapping shard kinds to lists (NoneType)"),
        (lambda m: [m], "the manifest is not a JSON object"),
        (lambda m: {**m, "tables": {**m["tables"], "items": []}}, "table items: its parts differ from"),
    ],
    ids=["tables-list", "shards-null", "list", "unlisted-part"],
)
def test_inspect_refuses_an_unsound_manifest(dataset, tmp_path, capsys, change, problem):
    copy = edited(dataset, tmp_path, change)
    status = inspect_main([str(copy)])
    captured = capsys.readouterr()
    assert status in (1, 2) and "dataset OK" not in captured.out
    assert problem in captured.out + captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    "path",
    [
        "/dev/zero",
        "../../../../../../etc/passwd",
        "tables/../../outside.bin",
        "gs://bucket/x",
        "./manifest.json",
    ],
)
def test_inspect_never_reads_a_listed_path_outside_the_dataset(dataset, tmp_path, capsys, path):
    (tmp_path / "outside.bin").write_bytes(b"secret")

    def point_at(manifest):
        manifest["table_files"]["items"][0]["path"] = manifest["tables"]["items"][0] = path
        return manifest

    copy = edited(dataset, tmp_path, point_at)
    assert inspect_main([str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM: {path}: not a relative path inside the dataset folder" in out
    assert "secret" not in out and "bytes, manifest says" not in out


def test_inspect_does_not_follow_a_link_out_of_the_dataset_nor_read_past_the_listed_size(
    dataset, tmp_path, capsys
):
    copy = edited(dataset, tmp_path, lambda m: m)
    manifest = json.loads((copy / "manifest.json").read_text())
    part = copy / manifest["tables"]["items"][0]
    part.unlink()
    part.symlink_to("/dev/zero")  # endless: a read without a bound would never stop
    assert inspect_main([str(copy)]) == 1
    assert "resolves outside the dataset folder (/dev/zero)" in capsys.readouterr().out
    inside = copy / manifest["tables"]["sequences"][0]
    inside.write_bytes(inside.read_bytes() + b"\0" * 10_000_000)  # bigger than listed: not read at all
    problems = verify_dataset(str(copy))
    assert any(
        p.endswith(f"{inside.stat().st_size} bytes, manifest says {inside.stat().st_size - 10_000_000}")
        for p in problems
    )


def test_inspect_sample_output_that_is_a_file_is_one_line(dataset, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("mine")
    assert inspect_main([str(dataset), "--sample", "1", "--output", str(target)]) == 2
    assert "--output" in capsys.readouterr().err and target.read_text() == "mine"
