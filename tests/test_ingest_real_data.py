"""The ingest job on real third-party data: MovieLens-100K, with the real test videos mapped onto items."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import webdataset as wds

from pipeline.inspect import verify_dataset
from pipeline.main import run
from tests.dataset_files import dataset_failures, dataset_table

pytestmark = pytest.mark.shared_data
IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]


def read_udata(path: Path) -> list[tuple[str, str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        user, item, _rating, ts = line.split("\t")
        rows.append((user, item, int(ts)))
    return rows


def test_ml100k_id_only_keeps_every_interaction_in_file_order_on_ties(shared_data, tmp_path):
    udata = shared_data / "interactions" / "ml-100k" / "u.data"
    result = run(
        ["--interactions", str(udata), "--max-seq-len", "50", "--output", str(tmp_path / "ml"), *IN_MEMORY]
    )
    counts = result.manifest["counts"]
    assert (counts["rows_read"], counts["rows_used"], counts["users_kept"], counts["items_encoded"]) == (
        100_000,
        100_000,
        943,
        1682,
    )
    assert not result.manifest["has_frames"] and result.manifest["shards"]["items"] == []
    expected = defaultdict(list)
    for line_number, (user, item, ts) in enumerate(read_udata(udata)):
        expected[user].append((ts, line_number, item))
    sequences = dataset_table(tmp_path / "ml", "sequences").to_pylist()
    for row in sequences:
        ordered = sorted(expected[row["user_id"]])
        assert row["item_ids"] == [item for _, _, item in ordered]
        assert row["timestamps"] == [ts for ts, _, _ in ordered]
    windows = []
    for shard in result.manifest["shards"]["train"]:
        for sample in wds.WebDataset(str(tmp_path / "ml" / shard["path"]), shardshuffle=False):
            assert set(sample) == {"__key__", "__url__", "__local_path__", "json"}
            windows.append(json.loads(sample["json"]))
    assert len(windows) == 943 and max(len(w["item_indices"]) for w in windows) == 51
    item_of_index = {
        r["item_index"]: r["item_id"] for r in dataset_table(tmp_path / "ml", "items").to_pylist()
    }
    # A reference sample holds the last 51 train items (validation and test held out) as indices.
    for window in windows:
        ordered = [item for _, _, item in sorted(expected[window["user_id"]])]
        assert [item_of_index[i] for i in window["item_indices"]] == ordered[:-2][-51:]


def test_ml100k_with_real_videos_accounts_for_every_interaction(shared_data, tmp_path):
    videos = sorted(p for p in (shared_data / "videos").iterdir() if p.suffix != ".tsv")
    mapping = tmp_path / "videos.csv"
    mapping.write_text("item,uri\n" + "".join(f"{i},{p}\n" for i, p in enumerate(videos, start=1)))
    output = tmp_path / "ml-videos"
    result = run(
        [
            "--interactions",
            str(shared_data / "interactions" / "ml-100k" / "u.data"),
            "--video-map",
            str(mapping),
            "--allow-any-uri",
            "--max-dropped-fraction",
            "1",  # only the ~40 real clips map to items: the other 1,600 fail as no_video, on purpose
            "--frame-size",
            "32",
            "--output",
            str(output),
            *IN_MEMORY,
        ]
    )
    counts = result.manifest["counts"]
    assert counts["rows_read"] == 100_000
    failures = dataset_failures(output)
    dropped_rows = {f["row"] for f in failures if f["kind"] == "row"}
    assert len(dropped_rows) == sum(counts["rows_dropped"].values())  # one record per dropped row
    assert counts["rows_used"] + len(dropped_rows) == 100_000
    item_reasons = {f["item_id"]: f["reason"] for f in failures if f["kind"] == "item"}
    assert len(item_reasons) == sum(counts["items_failed"].values())
    # Every mapped video was tried: it is in the dataset or failed with a sampler reason.
    encoded = set(dataset_table(output, "items").column("item_id").to_pylist())
    for item in (str(i) for i in range(1, len(videos) + 1)):
        assert item in encoded or item_reasons[item] != "no_video", item
    assert "no_video" in counts["items_failed"]
    assert {"corrupt", "no_video_stream"} <= set(counts["items_failed"])
    assert verify_dataset(str(output)) == []
