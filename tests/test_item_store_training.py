"""Training through the item store: the same run as from embedded frames, and lost items gated.

- **Same training, less data**: a ``tiny`` run reading frames from the item store gives the loss
  curve and the test metrics of the same run reading the frames its train samples embed (same seed:
  same frames, same crops, same order), on a hand-written dataset (``--frames-from``) and on real
  ingests of the same input in the ``reference`` and ``embedded`` layouts;
- **a damaged item shard** (deleted, cut short) or **an index entry past the end of its shard**
  loses the samples that hold its items: they are counted, and past ``--max-lost-fraction`` the run
  stops with exit 4 and one line naming the first lost item and its shard.

Datasets are the small hand-written ones of ``tests/fixtures_dataset.py`` (embedded layout, items
table indexed as the ingest indexes it) and two small synth ingests; each run takes seconds.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dataformat import format as fmt
from pipeline.main import run
from tests.fixtures_dataset import TABLE_PART, solid_frames, write_dataset
from tests.test_train_layout import ingest_args
from tests.test_trainer_bad_input import error_line, train

RUN = "--preset tiny --encoder tiny --epochs 2 --batch-size 6 --frame-size 8 --no-progress --augment"
"""Augmented, so the crops and flips of each item must match too."""


def _sequences(users: int = 24, items: int = 12) -> dict[str, list[str]]:
    return {str(u): [str((u + t * (1 + u % 3)) % items + 1) for t in range(7)] for u in range(users)}


@pytest.fixture(scope="module")
def frames_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames") / "ds"
    return write_dataset(folder, _sequences(), frames=solid_frames(12, 2), max_seq_len=5, per_shard=4)


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "train"]


def test_the_store_trains_exactly_as_the_embedded_frames_do(frames_data, tmp_path, capsys):
    runs = {}
    for source in ("samples", "store"):
        run = tmp_path / source
        status, _, err = train(
            capsys, "--data", str(frames_data), "--output", str(run), *RUN.split(), "--frames-from", source
        )
        assert status == 0, err
        runs[source] = run
    losses = _losses(runs["samples"])
    assert len(losses) >= 4 and _losses(runs["store"]) == losses
    results = {source: json.loads((run / "results.json").read_text()) for source, run in runs.items()}
    assert results["store"]["test"] == results["samples"]["test"]
    assert results["store"]["valid"] == results["samples"]["valid"]
    assert results["store"]["lost"]["skipped_samples"] == 0


def _deleted(data: Path) -> str:
    (data / "items/items-000001.tar").unlink()
    return r"item \d+ \(items/items-000001\.tar\): the shard is missing"


def _cut_short(data: Path) -> str:
    shard = data / "items/items-000002.tar"
    full = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[: full // 2])
    return rf"item \d+ \(items/items-000002\.tar\): the shard has {full // 2} bytes, the manifest says {full}"


def _past_the_end(data: Path) -> str:
    part = data / TABLE_PART.format("items")
    table = pq.read_table(part)
    offsets = table.column("offset").to_pylist()
    size = (data / "items/items-000000.tar").stat().st_size
    offsets[2] = size  # item 3 (in the first shard) now starts where the shard ends
    table = table.set_column(table.schema.get_field_index("offset"), "offset", [offsets])
    pq.write_table(table, part)
    return r"item 3 \(items/items-000000\.tar\): its bytes \d+\.\.\d+ are not inside the shard"


@pytest.mark.parametrize(
    "damage", [_deleted, _cut_short, _past_the_end], ids=["deleted", "cut-short", "past-end"]
)
def test_a_lost_item_is_counted_and_the_gate_stops_the_run_with_one_line(
    frames_data, tmp_path, capsys, damage
):
    data = Path(shutil.copytree(frames_data, tmp_path / "ds"))
    named = damage(data)
    argv = ["--data", str(data), *RUN.split(), "--frames-from", "store"]
    status, _, err = train(capsys, *argv, "--output", str(tmp_path / "strict"))
    assert status == 4
    line = error_line(err)
    assert re.search(
        r"lost \d+ corrupt samples and 0 failed shard reads, more than --max-lost-fraction", line
    )
    assert re.search(f"first lost item: {named}", line), line
    assert not (tmp_path / "strict/results.json").exists()

    run = tmp_path / "lenient"
    status, _, err = train(capsys, *argv, "--output", str(run), "--max-lost-fraction", "1")
    assert status == 0, err
    results = json.loads((run / "results.json").read_text())
    assert 0 < results["lost"]["skipped_samples"] < results["lost"]["planned_samples"]
    assert results["items"]["item_read_errors"] == results["items"]["items_not_encoded"] > 0


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, synth16) -> dict[str, Path]:
    """The same synth input ingested in both train layouts (real Beam ingests)."""
    inputs = synth16
    out = tmp_path_factory.mktemp("layouts")
    folders = {}
    for layout in fmt.TRAIN_FRAMES_LAYOUTS:
        args = ingest_args(inputs, layout)
        args[args.index("--shard-max-bytes") + 1] = str(1 << 30)  # shards cut by count alike in both
        folders[layout] = Path(run([*args, "--output", str(out / layout)]).output)
    return folders


def test_a_reference_dataset_trains_exactly_as_its_embedded_twin(layouts, tmp_path, capsys):
    runs = {}
    for layout, data in layouts.items():
        run_dir = tmp_path / layout
        argv = ["--data", str(data), "--output", str(run_dir), *RUN.split(), "--frame-size", "16"]
        status, _, err = train(capsys, *argv)
        assert status == 0, err
        runs[layout] = run_dir
    reference, embedded = (runs[layout] for layout in (fmt.TRAIN_FRAMES_REFERENCE, fmt.TRAIN_FRAMES_EMBEDDED))
    assert len(_losses(embedded)) >= 2 and _losses(reference) == _losses(embedded)
    results = {name: json.loads((run / "results.json").read_text()) for name, run in runs.items()}
    assert results[fmt.TRAIN_FRAMES_REFERENCE]["test"] == results[fmt.TRAIN_FRAMES_EMBEDDED]["test"]
    train_bytes = {
        layout: sum(p.stat().st_size for p in (data / "train").glob("*.tar"))
        for layout, data in layouts.items()
    }
    assert train_bytes[fmt.TRAIN_FRAMES_REFERENCE] < train_bytes[fmt.TRAIN_FRAMES_EMBEDDED] / 5  # less data
