"""``--timestamp-format``: how the timestamp column of an interaction log is written.

``unix`` (the default) keeps integer timestamps as they are (``"12.0"`` is accepted), in whatever
unit the log uses; the rows of a log read with it are exactly those of earlier versions. The other
formats are converted to integer seconds since 1970-01-01 UTC, rounded down:

- ``unix_ms``: integer milliseconds;
- ``float``: seconds with a fraction (``1700000000.25``);
- ``iso8601``: a date or date-time (``2024-03-01``, ``2024-03-01T10:00:00.5Z``, ``2024-03-01 10:00+02:00``);
  without an offset it is UTC. Parquet timestamp columns are read as such.

Rounding to seconds makes rows within the same second tie; ties keep input order, and repeats of
the same user and item within one second become duplicates (docs/INGEST.md).
"""

from __future__ import annotations

import datetime
import math

TIMESTAMP_FORMATS = ("unix", "unix_ms", "float", "iso8601")
DEFAULT_TIMESTAMP_FORMAT = "unix"


def _integer(value: object) -> int:
    """An integer from ``value``; integral floats (``"881250949.0"``) are accepted."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not a number") from None
    if not number.is_integer():
        raise ValueError(f"timestamp {text!r} is not an integer")
    return int(number)


def convert_timestamp(value: object, timestamp_format: str) -> int:
    """``value`` (a field of one row) as an integer timestamp, read as ``timestamp_format``.

    Raises:
        ValueError: the value is not written as ``timestamp_format`` says (the message names it),
            or the format is unknown.
    """
    if timestamp_format == "unix":
        return _integer(value)
    if timestamp_format == "unix_ms":
        return _integer(value) // 1000
    if timestamp_format == "float":
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"timestamp {text!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"timestamp {text!r} is not a finite number")
        return math.floor(number)
    if timestamp_format == "iso8601":
        moment = value
        if not isinstance(moment, datetime.datetime):
            text = str(value).strip()
            try:
                moment = datetime.datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"timestamp {text!r} is not an ISO 8601 date") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return math.floor(moment.timestamp())
    raise ValueError(
        f"unknown timestamp format {timestamp_format!r}; expected one of {', '.join(TIMESTAMP_FORMATS)}"
    )
