"""The format contract (transforms/format.py): docs/FORMAT.md states what it says, and manifests are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transforms import format as fmt

FORMAT_MD = (Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_text(encoding="utf-8")


def test_the_document_names_this_format_version_and_every_file_pattern():
    assert f"# Dataset format (format_version {fmt.FORMAT_VERSION})" in FORMAT_MD
    assert f'"format_version": {fmt.FORMAT_VERSION}' in FORMAT_MD
    for example in (
        fmt.ITEM_SHARD_PATTERN.format(0),
        fmt.TRAIN_SHARD_PATTERN.format(0),
        fmt.table_part_path(fmt.ITEMS_TABLE, 0),
        fmt.FAILURE_PART_PATTERN.format(0),
        fmt.MANIFEST_FILE,
        fmt.RUN_STATS_FILE,
        fmt.LATEST_FILE,
    ):
        assert example in FORMAT_MD, example
    assert fmt.version_manifest_path("V") == "versions/V/manifest.json"
    assert "`{key}.json`" in FORMAT_MD and fmt.metadata_member("{key}") == "{key}.json"
    assert "`{key}.0.jpg`" in FORMAT_MD and fmt.item_frame_member("{key}", 0) == "{key}.0.jpg"
    assert "`{key}.{item_index}.{j}.jpg`" in FORMAT_MD
    assert fmt.train_frame_member("{key}", "{item_index}", "{j}") == "{key}.{item_index}.{j}.jpg"


@pytest.mark.parametrize("table", fmt.TABLES)
def test_the_document_lists_each_table_column_with_its_type(table):
    words = {"string": "string", "int32": "int32", "int64": "int64"}
    for field in fmt.SCHEMAS[table]:
        kind = str(field.type)
        shown = words.get(kind) or kind.replace("list<item: ", "list<").replace(">", ">")
        assert f"{field.name}: {shown}" in FORMAT_MD, (table, field.name, shown)


def test_frame_fields_are_parsed_as_they_are_written():
    """What WebDataset hands the trainer (the member name without ``{key}.``) reads back as a frame."""
    key = fmt.sanitize_key("u1")
    item_field = fmt.item_frame_member(key, 3).removeprefix(f"{key}.")
    train_field = fmt.train_frame_member(key, 12, 4).removeprefix(f"{key}.")
    assert fmt.frame_number(item_field, fmt.ITEM_FRAME_PREFIX) == 3
    assert fmt.frame_number(train_field, fmt.train_frame_prefix(12)) == 4
    assert fmt.frame_number(train_field, fmt.train_frame_prefix(1)) is None  # item 12, not item 1
    assert fmt.frame_number(train_field, fmt.ITEM_FRAME_PREFIX) is None
    assert fmt.frame_number(fmt.METADATA_FIELD, fmt.ITEM_FRAME_PREFIX) is None
    assert fmt.metadata_member(key) == f"{key}.{fmt.METADATA_FIELD}"
    assert fmt.is_metadata_member(fmt.metadata_member(key))
    assert not fmt.is_metadata_member(fmt.item_frame_member(key, 0))


def test_keys_are_safe_and_reversible():
    for identifier in ["u1", "../secret", "/abs", "-x", "a.b", "é", "", "_5f"]:
        key = fmt.sanitize_key(identifier)
        assert fmt.unsanitize_key(key) == identifier
        assert "/" not in key and "." not in key and not key.startswith("-") and key


def good_manifest() -> dict:
    return {
        "format_version": fmt.FORMAT_VERSION,
        "dataset_version": "v",
        "num_items": 2,
        "num_users": 1,
        "tables": {"items": ["tables/items/part-00000.parquet"], "sequences": []},
        "shards": {"items": [], "train": []},
        "failures": [],
        "counts": {
            "rows_read": 5,
            "rows_used": 4,
            "rows_dropped": {"duplicate": 1},
            "items_seen": 2,
            "items_encoded": 2,
            "items_failed": {},
            "users_seen": 1,
            "users_kept": 1,
            "users_dropped": {},
        },
    }


def test_manifest_checks_name_every_problem():
    assert fmt.manifest_problems(good_manifest()) == []
    assert fmt.parse_manifest(json.dumps(good_manifest()).encode(), "m") == good_manifest()
    old = {**good_manifest(), "format_version": 1}
    assert fmt.manifest_problems(old) == ["format_version is 1, this code reads 2"]
    broken = good_manifest()
    broken["tables"]["sequences"] = "sequences.parquet"
    broken["counts"]["rows_read"] = 9
    del broken["shards"]["train"]
    assert fmt.manifest_problems(broken) == [
        "tables.sequences is not a list of part paths",
        "shards.train is not a list",
        "rows: 9 seen != 5 accounted for",
    ]
    with pytest.raises(ValueError, match="m: not a JSON manifest"):
        fmt.parse_manifest(b"{trunc", "m")
    without_users = {key: value for key, value in good_manifest().items() if key != "num_users"}
    with pytest.raises(ValueError, match="num_users is missing"):
        fmt.parse_manifest(json.dumps(without_users).encode(), "m")
