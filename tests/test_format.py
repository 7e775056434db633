"""The format contract (dataformat/): docs/FORMAT.md states what it says, manifests are checked, and
only dataformat/manifest.py opens a manifest or parses its fields."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest

from dataformat import format as fmt
from dataformat import manifest as manifest_format

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
    import random

    rnd = random.Random(3)
    alphabet = "aZ09-_./é\n "
    generated = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 6))) for _ in range(2000)]
    keys = set()
    for identifier in ["u1", "../secret", "/abs", "-x", "a.b", "é", "", "_5f", "x-1", "1-", *generated]:
        key = fmt.sanitize_key(identifier)
        assert fmt.unsanitize_key(key) == identifier
        assert "/" not in key and "." not in key and not key.startswith("-") and key
        assert set(key) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
        keys.add((key, identifier))
    assert len({key for key, _ in keys}) == len(keys)  # injective


def good_manifest() -> dict:
    return {
        "format_version": fmt.FORMAT_VERSION,
        "train_frames": fmt.TRAIN_FRAMES_REFERENCE,
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
    assert manifest_format.manifest_problems(good_manifest()) == []
    assert manifest_format.parse_manifest(json.dumps(good_manifest()).encode(), "m") == good_manifest()
    old = {**good_manifest(), "format_version": 1}
    assert manifest_format.manifest_problems(old) == ["format_version is 1, this code reads 2 and 3"]
    broken = good_manifest()
    broken["tables"]["sequences"] = "sequences.parquet"
    broken["counts"]["rows_read"] = 9
    del broken["shards"]["train"]
    assert manifest_format.manifest_problems(broken) == [
        "tables.sequences is not a list of part paths",
        "shards.train is not a list",
        "rows: 9 seen != 5 accounted for",
    ]
    with pytest.raises(ValueError, match="m: not a JSON manifest"):
        manifest_format.parse_manifest(b"{trunc", "m")
    without_users = {key: value for key, value in good_manifest().items() if key != "num_users"}
    with pytest.raises(ValueError, match="num_users is missing"):
        manifest_format.parse_manifest(json.dumps(without_users).encode(), "m")


def test_the_manifest_reader_locates_reads_and_verifies(tmp_path):
    folder = tmp_path / "ds"
    with pytest.raises(manifest_format.ManifestError, match="manifest.json is missing"):
        manifest_format.read_manifest(str(folder), lambda location: None)
    folder.mkdir()
    shard = b"tar bytes"
    manifest = good_manifest()
    entry = {"path": "../v0/items/items-000000.tar", "samples": 1, "bytes": len(shard)}
    manifest["shards"]["items"] = [{**entry, "sha256": hashlib.sha256(shard).hexdigest()}]
    manifest["sampler"] = {"num_frames": 5, "size": [128, 96], "config": {"resize": "pad"}}
    (folder / fmt.MANIFEST_FILE).write_text(json.dumps(manifest))
    for where in (str(folder), str(folder / fmt.MANIFEST_FILE)):  # a folder or the manifest itself
        assert manifest_format.read_manifest(where) == manifest
    assert manifest_format.read_folder_manifest(lambda path: None, str(folder)) is None
    (listed,) = manifest_format.listed_files(manifest)
    assert (listed.what, listed.path) == ("items shard", entry["path"])
    assert manifest_format.content_problems(listed.path, shard, listed.entry) == []
    assert manifest_format.content_problems(listed.path, b"tar bytez", listed.entry) == [
        "../v0/items/items-000000.tar: sha256 differs from the manifest"
    ]
    assert manifest_format.content_problems(listed.path, b"tar", listed.entry) == [
        "../v0/items/items-000000.tar: 3 bytes, manifest says 9",
        "../v0/items/items-000000.tar: sha256 differs from the manifest",
    ]
    assert manifest_format.earlier_versions(manifest) == {"v0"}
    assert manifest_format.frame_settings(manifest) == manifest_format.FrameSettings(5, 128, 96, "pad")
    assert manifest_format.frame_settings({**manifest, "sampler": {"num_frames": 0}}) is None
    with pytest.raises(manifest_format.ManifestError, match="does not give num_frames and size"):
        manifest_format.frame_settings({**manifest, "sampler": {"num_frames": 5}})


def test_member_and_path_helpers_read_back_what_the_writers_spell():
    key = fmt.sanitize_key("user 1")
    assert fmt.split_member(fmt.train_frame_member(key, 12, 4)) == (key, "12.4.jpg")
    assert fmt.split_member(fmt.metadata_member(key)) == (key, fmt.METADATA_FIELD)
    assert fmt.split_member(key) == (key, "")
    assert fmt.is_frame_member(fmt.item_frame_member(key, 0))
    assert fmt.is_frame_member(fmt.frame_field(fmt.train_frame_prefix(3), 1))
    assert not fmt.is_frame_member(fmt.metadata_member(key))
    train_field = fmt.split_member(fmt.train_frame_member(key, 12, 4))[1]
    assert fmt.train_frame_of(train_field) == (12, 4)
    item_field = fmt.split_member(fmt.item_frame_member(key, 4))[1]
    assert fmt.train_frame_of(item_field) is None and fmt.train_frame_of(fmt.METADATA_FIELD) is None
    assert fmt.item_shard_number(fmt.ITEM_SHARD_PATTERN.format(37)) == 37
    for path in (fmt.TRAIN_SHARD_PATTERN.format(37), "items/items-x.tar", "items-000001.tar"):
        with pytest.raises(ValueError):
            fmt.item_shard_number(path)
    assert fmt.is_manifest_path(fmt.MANIFEST_FILE) and fmt.is_manifest_path("gs://b/v/" + fmt.MANIFEST_FILE)
    assert not fmt.is_manifest_path("gs://b/root") and not fmt.is_manifest_path("data/v1/")
    assert set(fmt.SHARD_KINDS) == set(good_manifest()["shards"])


# The dataset's file names, folder names and member spellings, as a module would spell them itself.
SPELLINGS = {
    fmt.METADATA_FIELD,
    f".{fmt.METADATA_FIELD}",
    fmt.FRAME_EXTENSION,
    f".{fmt.FRAME_EXTENSION}",
    fmt.MANIFEST_FILE,
    f"/{fmt.MANIFEST_FILE}",
    fmt.RUN_STATS_FILE,
    fmt.LATEST_FILE,
    fmt.VERSIONS_DIR,
    *(
        pattern.split("/")[0] + "/"
        for pattern in (
            fmt.ITEM_SHARD_PATTERN,
            fmt.TRAIN_SHARD_PATTERN,
            fmt.TABLE_PART_PATTERN,
            fmt.FAILURE_PART_PATTERN,
        )
    ),
}
# Files that are not part of a dataset version, spelt where they are written.
NOT_DATASET_FILES = {
    # ``videorec frames`` writes loose NAME.I.jpg and NAME.json files for a person to look at.
    ("pipeline/frames.py", "*"),
    # ``extract`` writes a description of its embeddings file beside it (OUTPUT.json).
    ("trainer/extract.py", f".{fmt.METADATA_FIELD}"),
}


def _not_code(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings or ``__all__`` entries (names, not data)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skipped.add(id(first.value))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            skipped.update(id(child) for child in ast.walk(node.value))
    return skipped


def spelt_format_names(path: Path, name: str) -> list[str]:
    """``name:line: literal`` for each string literal in ``path`` (f-string parts too) that spells a
    dataset file, folder or member name, or a frame member's ``.jpg`` ending."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _not_code(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skipped:
            continue
        if (name, "*") in NOT_DATASET_FILES or (name, node.value) in NOT_DATASET_FILES:
            continue
        if node.value in SPELLINGS or node.value.endswith(f".{fmt.FRAME_EXTENSION}"):
            found.append((node.lineno, node.col_offset, node.value))
    return [f"{name}:{line}: {value!r}" for line, _, value in sorted(found)]


def test_no_module_spells_a_dataset_file_name_or_member_name_itself():
    """The writers, ``videorec inspect`` and the trainer take every file, folder and member name from
    dataformat/format.py; a literal elsewhere that spells one (``".jpg"``, ``"json"``,
    ``"manifest.json"``, ``"items/"``...) is a second spelling that can drift. Docstrings and
    messages may mention names: only whole literals (and an f-string's literal parts) are matched."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for package in ("pipeline", "transforms", "trainer"):
        for path in sorted((root / package).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            if name != "dataformat/format.py":
                found += spelt_format_names(path, name)
    assert found == []


def test_the_spelling_check_sees_literals_and_f_string_parts(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        '"""Docstrings may say manifest.json and {key}.json."""\n'
        '__all__ = ["LATEST"]\n'
        'A = f"{key}.{j}.jpg"\n'
        'B = name.endswith(".json")\n'
        'C = "manifest.json"\n'
        'D = "see manifest.json"\n'
    )
    assert spelt_format_names(source, "m.py") == [
        "m.py:3: '.jpg'",
        "m.py:4: '.json'",
        "m.py:5: 'manifest.json'",
    ]


MANIFEST_READS = {"read_bytes", "read_text", "open_read", "open_url", "local_copy", "load", "loads"}
"""Calls that open or decode a file (and the built-in ``open``): given an argument that names the
manifest, they read it."""
MANIFEST_FIELDS = {"format_version", "train_frames", "sampler"}
"""Fields whose meaning ``dataformat.manifest`` decides (readable versions, layout, frame settings)."""
PACKAGES = ("blobstore", "pipeline", "transforms", "trainer")
"""Every package but ``dataformat``, the one manifest reader."""


def _names_the_manifest(node: ast.AST) -> bool:
    """Whether an expression mentions a manifest: a name, attribute or string saying ``manifest``."""
    for part in ast.walk(node):
        text = part.id if isinstance(part, ast.Name) else getattr(part, "attr", None)
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            text = part.value
        if isinstance(text, str) and "manifest" in text.lower():
            return True
    return False


def _field_read(node: ast.AST) -> tuple[str, ast.AST] | None:
    """``(key, container)`` of ``container["key"]`` or ``container.get("key", ...)``, else None."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value, node.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ):
        return node.args[0].value, node.func.value
    return None


def manifest_handling(path: Path, name: str) -> list[str]:
    """``name:line: what`` for each place ``path`` opens the manifest itself (a read call whose
    arguments name it) or parses one of :data:`MANIFEST_FIELDS` of a manifest."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            reads = called in MANIFEST_READS or isinstance(node.func, ast.Name) and called == "open"
            arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
            if reads and any(_names_the_manifest(arg) for arg in arguments):
                found.append((node.lineno, f"opens the manifest ({called})"))
        field = _field_read(node)
        if field and field[0] in MANIFEST_FIELDS and _names_the_manifest(field[1]):
            found.append((node.lineno, f"parses the manifest's {field[0]}"))
    return [f"{name}:{line}: {what}" for line, what in sorted(found)]


def test_only_the_format_package_opens_the_manifest_or_parses_its_fields():
    """One manifest reader: ``dataformat.manifest`` reads, parses and checks ``manifest.json`` and
    says what its ``format_version``, ``train_frames`` and ``sampler`` mean; every other module
    (the ingest, ``videorec inspect``, the dataset roots, the trainer) asks it."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found += manifest_handling(path, path.relative_to(root).as_posix())
    assert found == []
    reader = root / "dataformat" / "manifest.py"
    assert manifest_handling(reader, "dataformat/manifest.py")  # the check sees the reader's own reads


def test_the_manifest_check_catches_a_planted_reader(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import json\n"
        "from dataformat.format import MANIFEST_FILE\n"
        "def size(folder, storage, manifest, info):\n"
        "    m = json.loads(storage.read_bytes(storage.join(folder, MANIFEST_FILE)))\n"
        "    with open(f'{folder}/manifest.json') as handle:\n"
        "        pass\n"
        "    stored = manifest['sampler']['size']\n"
        "    version = info.manifest.get('format_version')\n"
        "    store = ItemStore.open(folder, manifest)  # a constructor, not a file read\n"
        "    return json.loads(storage.read_bytes(folder)), info['sampler'], manifest['num_items']\n"
    )
    assert manifest_handling(source, "m.py") == [
        "m.py:4: opens the manifest (loads)",
        "m.py:4: opens the manifest (read_bytes)",
        "m.py:5: opens the manifest (open)",
        "m.py:7: parses the manifest's sampler",
        "m.py:8: parses the manifest's format_version",
    ]
