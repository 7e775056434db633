"""Interaction readers and row validation: format detection, every format's parser, rejected rows."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.interactions import Interaction, detect_format, parse_parquet, parse_text, resolve_inputs


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
