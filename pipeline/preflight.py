"""Checks ``videorec ingest`` makes before the job starts, so a wrong input costs seconds, not a run.

:func:`check_inputs` reads a little of every input and touches every output location, and raises
:class:`BadInput` (a ``ValueError``: exit status 2, one line naming the problem and the fix) on the
first problem found:
- ``gs://`` locations: one listing per bucket with a bounded retry; the message says whether
  credentials, permissions, the bucket or the network is the problem;
- interaction files: they exist, their format is known, a CSV header names user, item and
  timestamp columns, and the first :data:`SAMPLE_ROWS` rows of each file parse with
  ``--timestamp-format`` (an empty or header-only file, timestamps written otherwise, such as ISO
  dates or fractional seconds, with the ``--timestamp-format`` to pass, and a wrong ``--format`` are
  caught here);
- ``--videos`` is a folder that exists and holds the videos of at least one of the sampled items;
  ``--video-map`` and ``--titles`` exist and name the columns they need;
- ``--output`` is not a file, is new, empty or a dataset the project wrote (replaced only with
  ``--overwrite``), holds no input and is no mount point, and its parent is writable
  (:mod:`pipeline.ownership`); ``--dataset-root`` is writable; ``--work-dir`` is new or empty, and writable.

Nothing is written except a probe that is removed at once.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections import Counter
from dataclasses import replace

from blobstore import gcs
from pipeline import ownership
from pipeline.options import IngestConfig
from pipeline.report_text import one_line
from transforms import storage
from transforms.interactions import (
    HeaderError,
    Interaction,
    parse_parquet,
    parse_text,
    read_head,
    resolve_inputs,
    unreadable_encoding,
)

SAMPLE_ROWS = 200
"""Rows of each interaction file parsed before the job starts."""

HEAD_BYTES = 256 * 1024
"""Bytes read from the start of each text input for the checks."""

GCS_CHECK_S = 30.0
"""Longest a ``gs://`` access check may take, retries included, before the run gives up on it."""

ERROR_CHARS = 160
"""Longest error text quoted in a message."""

SAMPLE_ITEMS = 20
"""Items whose video files are looked for before the job starts (at least one must exist)."""

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


class BadInput(ValueError):
    """An input or output the job cannot use; the message names the problem and the fix, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


def check_inputs(config: IngestConfig) -> list[tuple[int, str, str]]:
    """Check every input and output of ``config``; return the interaction sources (``resolve_inputs``).

    Raises:
        BadInput: the first problem found (see the module docstring).
    """
    for url in _gcs_locations(config):
        check_gcs_access(url)
    _check_output(config)
    try:
        sources = resolve_inputs(config.interactions, config.format)
    except FileNotFoundError as err:
        raise BadInput(f"{err}; check the path or glob given to --interactions") from None
    items: list[str] = []
    for _, path, fmt in sources:
        items += sample_rows(path, fmt, config.max_dropped_fraction, config.timestamp_format)
    if config.videos is not None:
        _check_videos(config, items)
    if config.video_map is not None:
        _check_csv_header(config.video_map, "--video-map", _video_map_header)
    if config.titles is not None:
        _check_csv_header(config.titles, "--titles", _titles_header)
    return sources


# ---------------------------------------------------------------------------------------------- gs://


def _gcs_locations(config: IngestConfig) -> list[str]:
    candidates = [
        *config.interactions.split(","),
        config.videos,
        config.video_map,
        config.titles,
        config.output,
        config.dataset_root,
        config.work_dir,
    ]
    buckets = {}
    for url in candidates:
        if url and url.strip().startswith("gs://"):
            buckets.setdefault(gcs.split_gcs_url(url.strip())[0], url.strip())
    return list(buckets.values())


def check_gcs_access(url: str, timeout_s: float = GCS_CHECK_S) -> None:
    """List one object of ``url``'s bucket, retrying transient errors for at most ``timeout_s``.

    Raises:
        BadInput: no credentials, credentials refused, no permission, no such bucket, or no answer.
    """
    bucket, _ = gcs.split_gcs_url(url)
    outcome: dict = {}

    def attempt() -> None:
        try:
            from google.api_core.retry import Retry, if_transient_error

            client = gcs.gcs_client()
            retry = Retry(predicate=if_transient_error, initial=0.5, maximum=4.0, timeout=timeout_s / 2)
            list(client.list_blobs(bucket, max_results=1, timeout=(5, 10), retry=retry))
        except BaseException as exc:  # noqa: BLE001 - every failure is turned into a message below
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, daemon=True, name="gcs-access-check")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise BadInput(
            f"gs://{bucket} did not answer within {timeout_s:.0f} s; check the network connection "
            "to Google Cloud Storage (proxy, firewall, offline?)"
        )
    if "error" in outcome:
        raise BadInput(gcs_problem(bucket, outcome["error"]))


def gcs_problem(bucket: str, exc: BaseException) -> str:
    """One line saying what the exception from a ``gs://`` call means for the user, and the fix."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, auth.DefaultCredentialsError):
        return (
            f"no Google Cloud credentials to read gs://{bucket}; run 'gcloud auth application-default login' "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key"
        )
    if isinstance(exc, auth.RefreshError | api.Unauthorized):
        return (
            f"the Google Cloud credentials were refused for gs://{bucket} ({one_line(exc, ERROR_CHARS)}); "
            "log in again with 'gcloud auth application-default login'"
        )
    if isinstance(exc, api.Forbidden):
        return f"no permission to use gs://{bucket} ({one_line(exc, ERROR_CHARS)}); grant the account storage access to it"
    if isinstance(exc, api.NotFound):
        return f"bucket gs://{bucket} does not exist; check the gs:// path"
    return (
        f"cannot reach gs://{bucket} ({type(exc).__name__}: {one_line(exc, ERROR_CHARS)}); "
        "check the network connection to Google Cloud Storage"
    )


# ---------------------------------------------------------------------------------------------- output


def _check_output(config: IngestConfig) -> None:
    if config.output is not None:
        check_output_folder(config.output, overwrite=config.overwrite, config=config)
    if config.dataset_root is not None:
        _check_writable_folder(config.dataset_root, "--dataset-root")
    if config.work_dir is not None:
        ownership.check_work_dir(config.work_dir)
        _check_writable_folder(config.work_dir, "--work-dir")


def check_output_folder(
    output: str, *, overwrite: bool, flag: str = "--output", config: IngestConfig | None = None
) -> None:
    """``output`` can take a new dataset: not a file, a link or a mount point, holding none of
    ``config``'s inputs, new, empty or (with ``overwrite``) a dataset the project wrote, and its
    parent writable (``pipeline.ownership``).

    Raises:
        BadInput: otherwise (``ownership.NotOurs``, a ``ValueError`` too, for a folder not ours).
    """
    if not storage.is_remote(output) and os.path.isfile(output):
        raise BadInput(f"{flag} {output} is a file; give a folder path")
    config = config or IngestConfig(interactions="", output=output)
    ownership.check_output_is_ours(replace(config, output=output, overwrite=overwrite), flag)
    if storage.is_remote(output):
        _probe_gcs(output, flag)
        return
    _check_writable_folder(os.path.dirname(os.path.abspath(output)), f"the folder of {flag}")


def _check_writable_folder(folder: str, what: str) -> None:
    """Create ``folder`` if needed and a probe file in it (removed at once)."""
    if storage.is_remote(folder):
        _probe_gcs(folder, what)
        return
    probe = os.path.join(folder, f".videorec-probe-{secrets.token_hex(4)}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise BadInput(f"cannot write to {what} ({folder}: {reason}); choose a writable location") from None


def _probe_gcs(url: str, what: str) -> None:
    """Write and delete an empty probe object under ``url`` (bounded retry)."""
    from google.api_core.retry import Retry, if_transient_error

    bucket, prefix = gcs.split_gcs_url(url)
    name = f"{prefix}/" if prefix else ""
    blob = gcs.gcs_client().bucket(bucket).blob(f"{name}.videorec-probe-{secrets.token_hex(4)}")
    retry = Retry(predicate=if_transient_error, initial=0.5, maximum=4.0, timeout=GCS_CHECK_S / 2)
    try:
        blob.upload_from_string(b"", timeout=(5, 10), retry=retry)
        blob.delete(timeout=(5, 10), retry=retry)
    except Exception as err:  # noqa: BLE001 - any failure to write means the location is unusable
        raise BadInput(f"cannot write to {what} ({url}): {gcs_problem(bucket, err)}") from None


# ---------------------------------------------------------------------------------------------- rows


def sample_rows(path: str, fmt: str, max_bad_fraction: float, timestamp_format: str = "unix") -> list[str]:
    """Parse the first :data:`SAMPLE_ROWS` rows of one interaction file; return their item IDs.

    Raises:
        BadInput: the header names no user, item or timestamp column; the file has no rows; or more than
            ``max_bad_fraction`` of the sampled rows are invalid (the message says what they look like).
    """
    try:
        if fmt == "parquet":
            with storage.open_read(path) as reader:
                results = _first(parse_parquet(reader, 0, path, timestamp_format), SAMPLE_ROWS)
        else:
            head = read_head(path, HEAD_BYTES)
            if unreadable_encoding(path, head):
                raise BadInput(unreadable_encoding(path, head))
            lines = head.splitlines(True)
            if len(head) == HEAD_BYTES and lines and not lines[-1].endswith(b"\n"):
                lines = lines[:-1]  # cut off mid-line
            results = _first(parse_text(lines, fmt, 0, path, timestamp_format=timestamp_format), SAMPLE_ROWS)
    except BadInput:
        raise
    except HeaderError as err:  # its message names the fix
        raise BadInput(str(err)) from None
    except ValueError as err:
        raise BadInput(f"{err}; name the columns user, item and timestamp (or pass --format)") from None
    except Exception as err:  # noqa: BLE001 - an unreadable file is bad input whatever the reader raised
        raise BadInput(
            f"cannot read {path} as {fmt} ({type(err).__name__}: {one_line(err, ERROR_CHARS)}); check --format"
        ) from None
    rows = [r for r in results if isinstance(r, Interaction)]
    bad = [r for r in results if not isinstance(r, Interaction)]
    if not results:
        raise BadInput(f"{path} has no data rows; give a file with interactions")
    if len(bad) > max_bad_fraction * len(results):
        raise BadInput(_bad_rows_message(path, fmt, bad, len(results), timestamp_format))
    return [r.item_id for r in rows]


def _first(results, n: int) -> list:
    out = []
    for result in results:
        out.append(result)
        if len(out) >= n:
            break
    return out


def _bad_rows_message(path: str, fmt: str, bad: list[dict], sampled: int, timestamp_format: str) -> str:
    reasons = Counter(r["reason"] for r in bad)
    first = bad[0]
    where = f"line {first['row']}" if fmt != "parquet" else f"row {first['row']}"
    if reasons.most_common(1)[0][0] == "bad_timestamp":
        values = [_timestamp_text(r) for r in bad if r["reason"] == "bad_timestamp"]
        values = [v for v in values if v]
        given = f"not --timestamp-format {timestamp_format}"
        if values and all(ISO_DATE.match(v) for v in values):
            return (
                f"{path}: timestamps are dates ({where}: {values[0]!r}), {given}; pass --timestamp-format "
                "iso8601 (converted to integer seconds, UTC unless the dates have an offset)"
            )
        if values and all(_is_float(v) for v in values):
            return (
                f"{path}: timestamps have fractions of a second ({where}: {values[0]!r}), {given}; pass "
                "--timestamp-format float (converted to integer seconds), or convert the column to "
                "integer milliseconds yourself to keep sub-second order"
            )
        if values and all(_is_integer(v) for v in values):
            return (
                f"{path}: timestamps are integers ({where}: {values[0]!r}), {given}; pass "
                "--timestamp-format unix (kept as they are) or unix_ms (milliseconds, converted to seconds)"
            )
    counts = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common())
    return (
        f"{path}: {len(bad)} of the first {sampled} rows are not valid {fmt} rows ({counts}; {where}: "
        f"{first['message']}); check --format, or the file"
    )


TIMESTAMP_MESSAGE = re.compile(
    r"^timestamp '(.*)' is not (a number|an integer|a finite number|an ISO 8601 date)$"
)


def _timestamp_text(record: dict) -> str | None:
    """The rejected timestamp of a ``bad_timestamp`` row, from its message (``parse_timestamp``'s)."""
    match = TIMESTAMP_MESSAGE.match(record.get("message", ""))
    return match.group(1).strip() if match else None


def _is_integer(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return not text.strip().lstrip("-").isdigit()


# ---------------------------------------------------------------------------------------------- videos


def _check_videos(config: IngestConfig, items: list[str]) -> None:
    from transforms.locate_videos import any_extension_problem, escapes_folder, video_exists, video_uri

    root = config.videos
    if storage.is_remote(root):
        if not ownership.holds_objects(root):
            raise BadInput(f"--videos {root} holds no objects; check the gs:// path")
    elif not os.path.isdir(root):
        what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise BadInput(f"--videos {root} {what}; give the folder that holds the videos")
    pattern = config.video_pattern
    if problem := any_extension_problem(pattern):
        raise BadInput(problem)
    tried = []
    for item in list(dict.fromkeys(items))[:SAMPLE_ITEMS]:
        try:
            relative = pattern.format(item=item, key=item)
        except (KeyError, IndexError, ValueError) as err:
            raise BadInput(
                f"--video-pattern {pattern!r} is not a valid pattern ({err}); use {{item}} or {{key}}"
            ) from None
        if escapes_folder(relative):
            continue  # fails in the job as bad_item_id; never looked for outside the folder
        uri = video_uri(root, pattern, item)
        if video_exists(uri):
            return
        tried.append(uri)
    if tried:
        raise BadInput(
            f"none of the first {len(tried)} items has a video (e.g. {tried[0]} does not exist); check --videos "
            "and --video-pattern ({item}.* takes any extension), or list each item's video in a --video-map CSV"
        )


def _check_csv_header(path: str, flag: str, check) -> None:
    if not storage.path_exists(path):
        raise BadInput(f"{flag} {path} does not exist; check the path")
    head = read_head(path, 64 * 1024).decode("utf-8", "replace")
    check(head, path, flag)


def _video_map_header(head: str, path: str, flag: str) -> None:
    from transforms.keyed_csv import VIDEO_MAP, keyed_columns

    try:
        keyed_columns(head.split("\n", 1)[0], path, VIDEO_MAP)
    except ValueError as err:
        raise BadInput(f"{flag}: {err} (e.g. item,uri)") from None


def _titles_header(head: str, path: str, flag: str) -> None:
    from transforms.keyed_csv import TITLES, keyed_columns

    try:
        keyed_columns(head.split("\n", 1)[0], path, TITLES)
    except ValueError as err:
        raise BadInput(f"{flag}: {err}; is this the titles file? It needs a header like item,title") from None
