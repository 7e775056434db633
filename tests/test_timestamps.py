"""``--timestamp-format``: each way of writing a timestamp becomes integer seconds; ``unix`` is unchanged."""

from __future__ import annotations

import datetime
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.interactions import Interaction, parse_parquet, parse_text
from transforms.timestamps import convert_timestamp


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("881250949", "unix", 881250949),
        ("881250949.0", "unix", 881250949),
        ("1690000000123", "unix", 1690000000123),  # unix keeps the log's unit
        ("1690000000999", "unix_ms", 1690000000),
        ("1700000000.75", "float", 1700000000),
        ("-0.5", "float", -1),
        ("2024-03-01", "iso8601", 1709251200),
        ("2024-03-01T10:00:00Z", "iso8601", 1709287200),
        ("2024-03-01 10:00:00.5+02:00", "iso8601", 1709280000),
        (datetime.datetime(2024, 3, 1, 10), "iso8601", 1709287200),
    ],
)
def test_each_timestamp_format_becomes_integer_seconds(value, fmt, expected):
    assert convert_timestamp(value, fmt) == expected


@pytest.mark.parametrize(
    ("value", "fmt", "message"),
    [
        ("1700000000.5", "unix", "is not an integer"),
        ("soon", "unix_ms", "is not a number"),
        ("inf", "float", "is not a finite number"),
        ("1700000000", "iso8601", "is not an ISO 8601 date"),
    ],
)
def test_a_value_not_written_as_the_format_says_is_a_bad_timestamp(value, fmt, message):
    text = f"user,item,timestamp\nu1,i1,{value}\n"
    (failure,) = parse_text(io.BytesIO(text.encode()), "microlens-csv", 0, "log", timestamp_format=fmt)
    assert failure["reason"] == "bad_timestamp" and message in failure["message"]


def test_movielens_and_parquet_rows_are_converted_too():
    (row,) = parse_text(
        io.BytesIO(b"1\t2\t3\t881250949000\n"), "movielens", 0, "u", timestamp_format="unix_ms"
    )
    assert row == Interaction("1", "2", 881250949, 0, 1)
    buffer = io.BytesIO()
    moment = datetime.datetime(2024, 3, 1, 10, tzinfo=datetime.UTC)
    pq.write_table(pa.table({"user": ["u"], "item": ["i"], "timestamp": pa.array([moment])}), buffer)
    buffer.seek(0)
    (row,) = parse_parquet(buffer, 0, "t.parquet", "iso8601")
    assert row.timestamp == 1709287200
