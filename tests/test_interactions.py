"""Interaction readers and row validation: format detection, every format's parser, rejected rows."""

from __future__ import annotations

import io

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.input_splits import plan_splits, text_bytes
from transforms.interactions import Interaction, detect_format, parse_parquet, parse_text, resolve_inputs
from transforms.read_interactions import VALID, ReadInteractions


def parse(text: str, fmt: str):
    return list(parse_text(io.BytesIO(text.encode("utf-8")), fmt, 0, "log"))


@pytest.mark.parametrize(
    ("path", "head", "expected"),
    [
        ("pairs.csv", b"user,item,timestamp\n1,2,3\n", "microlens-csv"),
        ("pairs.tsv", b"1\t2 3 4\n", "microlens-tsv"),
        ("u.data", b"196\t242\t3\t881250949\n", "movielens"),
        ("dump", b"PAR1....", "parquet"),
        ("x.parquet", b"", "parquet"),
        ("log", b"u1\ti1 i2\n", "microlens-tsv"),
    ],
)
def test_detect_format_from_name_and_first_line(path, head, expected):
    assert detect_format(path, head) == expected


def test_detect_format_refuses_to_guess():
    with pytest.raises(ValueError, match="--format"):
        detect_format("notes.txt", b"hello world\n")


def test_microlens_csv_validates_each_row_and_numbers_lines():
    text = "item,user,timestamp\n5,u1,100\n6,u1\n7,,101\n,u2,102\n8,u2,soon\n9,u3,103.0\n"
    parsed = parse(text, "microlens-csv")
    rows = [p for p in parsed if isinstance(p, Interaction)]
    failures = [p for p in parsed if isinstance(p, dict)]
    assert rows == [Interaction("u1", "5", 100, 0, 2, 0), Interaction("u3", "9", 103, 0, 7, 0)]
    assert [(f["row"], f["reason"]) for f in failures] == [
        (3, "missing_field"),
        (4, "empty_user"),
        (5, "empty_item"),
        (6, "bad_timestamp"),
    ]
    assert all(
        f["kind"] == "row" and f["stage"] == "read" and f["file"] == "log" and f["text"] for f in failures
    )


def test_csv_without_the_needed_columns_is_a_clear_error():
    with pytest.raises(ValueError, match="no timestamp column"):
        parse("user,item,rating\n1,2,3\n", "microlens-csv")


def test_movielens_rows_ignore_the_rating():
    parsed = parse("196\t242\t3\t881250949\n186\t302\t3\n", "movielens")
    assert parsed[0] == Interaction("196", "242", 881250949, 0, 1, 0)
    assert parsed[1]["reason"] == "missing_field"


def test_microlens_tsv_positions_are_timestamps_and_columns():
    parsed = parse("u1\ti1 i2 i1\nu2\t\n", "microlens-tsv")
    assert parsed[:3] == [
        Interaction("u1", "i1", 0, 0, 1, 0),
        Interaction("u1", "i2", 1, 0, 1, 1),
        Interaction("u1", "i1", 2, 0, 1, 2),
    ]
    assert parsed[3]["reason"] == "empty_item"


def test_lines_that_are_not_utf8_are_recorded_not_lost():
    parsed = list(parse_text(io.BytesIO(b"1\t2\t3\t4\n\xff\xfe\t2\t3\t4\n"), "movielens", 0, "log"))
    assert isinstance(parsed[0], Interaction)
    assert parsed[1]["reason"] == "bad_encoding" and parsed[1]["row"] == 2


def test_parquet_rows_are_validated_in_order():
    table = pa.table({"user_id": ["a", None, "b"], "item_id": ["x", "y", ""], "timestamp": [1, 2, 3]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    parsed = list(parse_parquet(buffer, 2, "t.parquet"))
    assert parsed[0] == Interaction("a", "x", 1, 2, 1, 0)
    assert [p["reason"] for p in parsed[1:]] == ["empty_user", "empty_item"]


def write_log(path, rows: int, row_group_size: int, bad_every: int = 0) -> None:
    """A Parquet log of ``rows`` rows in row groups of ``row_group_size``; every ``bad_every``-th user empty."""
    users = [("" if bad_every and k % bad_every == 0 else f"u{k % 7}") for k in range(rows)]
    table = pa.table(
        {"user": users, "item": [f"i{k % 5}" for k in range(rows)], "timestamp": list(range(rows))}
    )
    pq.write_table(table, path, row_group_size=row_group_size)


def test_a_parquet_file_splits_by_row_group_into_bounded_slices_that_read_every_row_once(tmp_path):
    path = tmp_path / "log.parquet"
    write_log(path, 23, row_group_size=10, bad_every=6)
    splits = plan_splits([(1, str(path), "parquet")], split_rows=4)
    assert [(s.number, s.start, s.end) for s in splits] == [
        (0, 0, 4), (1, 4, 8), (2, 8, 10), (3, 10, 14), (4, 14, 18), (5, 18, 20), (6, 20, 23)
    ]  # fmt: skip
    with open(path, "rb") as reader:
        whole = list(parse_parquet(reader, 1, str(path)))
    pieces = []
    for split in splits:
        with open(path, "rb") as reader:
            piece = list(parse_parquet(reader, 1, str(path), rows=(split.start, split.end)))
        assert len(piece) == split.end - split.start
        pieces += piece
    assert pieces == whole and len(whole) == 23
    rows = [p.row if isinstance(p, Interaction) else p["row"] for p in pieces]
    assert rows == list(range(1, 24))  # row index + 1, as before the split
    assert [p["reason"] for p in pieces if isinstance(p, dict)] == ["empty_user"] * 4


def test_a_slice_of_a_large_row_group_reads_only_its_rows(tmp_path, monkeypatch):
    monkeypatch.setattr("transforms.interactions.PARQUET_BATCH_ROWS", 3)  # slices cross batches
    path = tmp_path / "log.parquet"
    write_log(path, 20, row_group_size=20)
    with open(path, "rb") as reader:
        piece = list(parse_parquet(reader, 0, str(path), rows=(7, 12)))
    assert [(p.row, p.timestamp) for p in piece] == [(k + 1, k) for k in range(7, 12)]


def test_an_empty_parquet_file_is_one_empty_split(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"user": pa.array([], pa.string()), "item": pa.array([], pa.string()),
                             "timestamp": pa.array([], pa.int64())}), path)  # fmt: skip
    (split,) = plan_splits([(0, str(path), "parquet")])
    with open(path, "rb") as reader:
        assert list(parse_parquet(reader, 0, str(path), rows=(split.start, split.end))) == []


def test_parquet_rows_size_the_history_shuffle_not_the_compressed_file(tmp_path):
    path = tmp_path / "log.parquet"
    write_log(path, 1000, row_group_size=1000)
    assert text_bytes(plan_splits([(0, str(path), "parquet")])) == 1000 * 32


def test_one_parquet_file_is_parsed_by_many_splits_in_the_job(tmp_path):
    path = tmp_path / "log.parquet"
    write_log(path, 23, row_group_size=10, bad_every=6)
    with BeamTestPipeline(runner="FnApiRunner") as pipeline:
        rows = pipeline | ReadInteractions([(0, str(path), "parquet")], split_rows=4)
        assert_that(rows[VALID], equal_to([3, 3, 2, 3, 4, 1, 3]), label="ValidRowsPerSplit")
        blobs = rows.rows | beam.combiners.Count.Globally()
        assert_that(blobs | beam.Map(lambda n: n >= 7), equal_to([True]), label="BlobsPerSplit")


def test_resolve_inputs_sorts_files_and_detects_each_format(tmp_path):
    (tmp_path / "b.csv").write_text("user,item,timestamp\n1,2,3\n")
    (tmp_path / "a.tsv").write_text("1\t2 3\n")
    sources = resolve_inputs(str(tmp_path / "*"), None)
    assert sources == [
        (0, str(tmp_path / "a.tsv"), "microlens-tsv"),
        (1, str(tmp_path / "b.csv"), "microlens-csv"),
    ]
    assert resolve_inputs(str(tmp_path / "b.csv"), "microlens-csv")[0][2] == "microlens-csv"
    with pytest.raises(FileNotFoundError):
        resolve_inputs(str(tmp_path / "missing*"), None)
