"""The ingest job end to end on synth data with planted faults: accounting, read-back, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from dataformat.format import TRAIN_FRAMES_REFERENCE, sanitize_key
from dataformat.manifest import train_frames_of
from pipeline.inspect import verify_dataset
from pipeline.main import run
from pipeline.synth import SynthConfig, generate
from tests.dataset_files import dataset_failures, dataset_table
from transforms.decode.sampler import sample_video
from transforms.decode.types import SamplerConfig

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]
FRAME_ARGS = ["--frame-size", "64", "--shard-max-samples", "7"]
VIDEO_FAULT_REASONS = {
    "missing_videos": "not_found",
    "no_video_stream": "no_video_stream",
    "corrupt_videos": "corrupt",
}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    config = SynthConfig(
        users=30,
        items=24,
        seed=7,
        max_interactions=12,
        min_seconds=1.0,
        max_seconds=1.5,
        missing_videos=2,
        truncated_videos=1,
        no_video_stream=1,
        corrupt_videos=1,
        bad_rows=4,
    )
    generate(out, config, workers=2)
    return out


def ingest_args(synth_dir: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--interactions",
        str(synth_dir / "pairs.csv"),
        "--videos",
        str(synth_dir / "videos"),
        "--titles",
        str(synth_dir / "titles.csv"),
        "--output",
        str(output),
        *FRAME_ARGS,
        *extra,
    ]


@pytest.fixture(scope="module")
def ingested(synth_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("dataset") / "v1"
    return run(ingest_args(synth_dir, output, *IN_MEMORY))


def read_failures(output: str) -> list[dict]:
    return dataset_failures(output)


def test_counts_reconcile_with_the_synth_ground_truth(ingested, synth_dir):
    truth = json.loads((synth_dir / "synth.json").read_text())
    counts = ingested.manifest["counts"]
    assert counts["rows_read"] == truth["counts"]["csv_data_rows"]
    assert counts["rows_read"] == counts["rows_used"] + sum(counts["rows_dropped"].values())
    interacted = {item["item"] for item in truth["items"] if item["popularity"] > 0}
    assert counts["items_seen"] == len(interacted)
    assert counts["items_seen"] == counts["items_encoded"] + sum(counts["items_failed"].values())
    assert counts["users_seen"] == truth["counts"]["users"]
    assert counts["users_seen"] == counts["users_kept"] + sum(counts["users_dropped"].values())
    assert verify_dataset(ingested.output) == []


def test_every_planted_fault_is_recorded_with_its_reason(ingested, synth_dir):
    truth = json.loads((synth_dir / "synth.json").read_text())
    failures = read_failures(ingested.output)
    row_failures = {(f["row"], f["reason"]) for f in failures if f["kind"] == "row" and f["stage"] == "read"}
    for bad in truth["faults"]["bad_rows"]:
        assert (bad["line"], bad["kind"]) in row_failures  # synth names kinds by ingest reason
    item_reason = {f["item_id"]: f["reason"] for f in failures if f["kind"] == "item"}
    popular = {item["item"] for item in truth["items"] if item["popularity"] > 0}
    planted = 0
    for fault, reason in VIDEO_FAULT_REASONS.items():
        for video in truth["faults"][fault]:
            if video["item"] in popular:
                assert item_reason[video["item"]] == reason, video
                planted += 1
    assert planted >= 3
    # Rows of failed items are dropped with the item's reason, before the leave-one-out split.
    for record in failures:
        if record["kind"] == "row" and record["reason"].startswith("item_"):
            assert record["reason"] == f"item_{item_reason[record['item_id']]}"
    # Truncated files still decode (the sampler falls back to the middle of what decodes).
    items = dataset_table(Path(ingested.output), "items").to_pydict()
    for video in truth["faults"]["truncated_videos"]:
        if video["item"] in popular:
            assert video["item"] in items["item_id"] or item_reason[video["item"]] == "corrupt"


def test_beam_counters_match_the_manifest(ingested):
    counts, counters = ingested.manifest["counts"], ingested.counters
    for name in ("rows_read", "rows_used", "items_seen", "items_encoded", "users_seen", "users_kept"):
        assert counters[name] == counts[name], name
    for reason, n in counts["rows_dropped"].items():
        assert counters[f"rows_dropped.{reason}"] == n
    for reason, n in counts["items_failed"].items():
        assert counters[f"items_failed.{reason}"] == n
    for reason, n in counts["users_dropped"].items():
        assert counters[f"users_dropped.{reason}"] == n


def test_item_shards_read_back_with_webdataset_and_match_the_sampler(ingested, synth_dir):
    manifest = ingested.manifest
    assert manifest["has_frames"] and len(manifest["shards"]["items"]) > 1
    config = SamplerConfig(**{**manifest["sampler"]["config"], "size": (64, 64)})
    urls = [str(Path(ingested.output) / s["path"]) for s in manifest["shards"]["items"]]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        assert sample["__key__"] == sanitize_key(meta["item_id"])
        expected = sample_video(str(synth_dir / "videos" / f"{meta['item_id']}.mp4"), config)
        assert [sample[f"{j}.jpg"] for j in range(meta["frames"])] == expected.frames
        assert meta["sampler"] == expected.deterministic_meta()
        seen += 1
    assert seen == manifest["num_items"] == manifest["counts"]["items_encoded"]


def test_train_shards_hold_the_window_and_in_the_embedded_layout_the_item_frames(ingested):
    manifest, root = ingested.manifest, Path(ingested.output)
    items = dataset_table(root, "items").to_pydict()
    sequences = dataset_table(root, "sequences").to_pylist()
    by_user = {row["user_id"]: row for row in sequences}
    item_frames = {}
    for sample in wds.WebDataset(
        [str(root / s["path"]) for s in manifest["shards"]["items"]], shardshuffle=False
    ):
        index = json.loads(sample["json"])["item_index"]
        item_frames[index] = [sample[k] for k in sorted(k for k in sample if k.endswith(".jpg"))]
    assert sorted(item_frames) == sorted(items["item_index"])
    train_urls = [str(root / s["path"]) for s in manifest["shards"]["train"]]
    users = 0
    for sample in wds.WebDataset(train_urls, shardshuffle=False):
        window = json.loads(sample["json"])
        full = by_user[window["user_id"]]
        expected = full["item_indices"][:-2][-(manifest["max_seq_len"] + 1) :]
        assert window["item_indices"] == expected
        assert window["user_index"] == full["user_index"]
        if train_frames_of(manifest) == TRAIN_FRAMES_REFERENCE:  # frames stay in the item shards
            assert {field for field in sample if not field.startswith("__")} == {"json"}
        else:
            for index in set(expected):
                frames = [sample[f"{index}.{j}.jpg"] for j in range(len(item_frames[index]))]
                assert frames == item_frames[index]
        users += 1
    assert users == sum(s["samples"] for s in manifest["shards"]["train"]) == manifest["num_users"]


def test_one_and_two_workers_write_byte_identical_datasets(ingested, synth_dir, tmp_path):
    outputs = []
    for workers in (1, 2):
        output = tmp_path / f"w{workers}"
        run(
            ingest_args(
                synth_dir,
                output,
                "--direct_running_mode=multi_processing",
                f"--direct_num_workers={workers}",
                "--quiet",
            )
        )
        outputs.append(output)
    outputs.append(Path(ingested.output))
    listings = [
        sorted(p.relative_to(o) for p in o.rglob("*") if p.is_file() and p.name != "run_stats.json")
        for o in outputs
    ]
    assert listings[0] == listings[1] == listings[2]
    assert len(listings[0]) > 5
    for relative in listings[0]:
        first = (outputs[0] / relative).read_bytes()
        assert first == (outputs[1] / relative).read_bytes() == (outputs[2] / relative).read_bytes(), relative


def test_csv_tsv_and_parquet_inputs_give_the_same_sequences(synth_dir, tmp_path):
    import csv

    import pyarrow as pa

    with open(synth_dir / "pairs.csv", newline="") as handle:
        good = [
            r for r in csv.DictReader(handle) if r["user"] and r["item"] and (r["timestamp"] or "").isdigit()
        ]
    columns = {"user": [r["user"] for r in good], "item": [r["item"] for r in good]}
    columns["timestamp"] = pa.array([int(r["timestamp"]) for r in good], pa.int64())
    pq.write_table(pa.table(columns), tmp_path / "pairs.parquet")
    sequences = {}
    for source in (synth_dir / "pairs.csv", synth_dir / "pairs.tsv", tmp_path / "pairs.parquet"):
        out = tmp_path / source.name.replace(".", "_")
        result = run(["--interactions", str(source), "--output", str(out), *IN_MEMORY])
        assert result.manifest["counts"]["users_kept"] > 0
        sequences[source.suffix] = dataset_table(out, "sequences").select(["user_id", "item_ids"]).to_pylist()
    assert sequences[".csv"] == sequences[".tsv"] == sequences[".parquet"]


def test_bad_input_fails_with_a_clear_error(tmp_path, capsys):
    from pipeline.main import main

    assert main(["--interactions", str(tmp_path / "nothing*.csv"), "--output", str(tmp_path / "o")]) == 2
    assert "no interaction files match" in capsys.readouterr().err
    strange = tmp_path / "log.txt"
    strange.write_text("just some words\n")
    assert main(["--interactions", str(strange), "--output", str(tmp_path / "o")]) == 2
    assert "--format" in capsys.readouterr().err


def test_dataset_root_runs_publish_new_versions(synth_dir, tmp_path):
    from pipeline import versions

    root = tmp_path / "root"
    args = ["--interactions", str(synth_dir / "pairs.tsv"), "--dataset-root", str(root), *IN_MEMORY]
    first = run(args)
    second = run(args)
    ids = versions.list_versions(str(root))
    assert len(ids) == 2 and versions.latest_version_id(str(root)) == ids[-1]
    assert second.output == versions.version_url(str(root), ids[-1]) and first.output != second.output
    assert second.manifest["dataset_version"] == ids[-1]
    assert versions.read_lease(str(root)) is None
    assert verify_dataset(second.output) == []


def test_incremental_runs_reuse_frames_of_unchanged_videos(synth_dir, tmp_path):
    import os
    import shutil

    from pipeline import versions

    videos = tmp_path / "videos"
    shutil.copytree(synth_dir / "videos", videos)
    root = str(tmp_path / "root")
    args = ["--interactions", str(synth_dir / "pairs.csv"), "--videos", str(videos), "--dataset-root", root]
    args += [*FRAME_ARGS, *IN_MEMORY]
    first = run(args)
    encoded = first.manifest["counts"]["items_encoded"]
    assert first.counters.get("items_reused", 0) == 0
    assert all(dataset_table(Path(first.output), "items").column("fingerprint").to_pylist())

    second = run(args)
    assert second.counters["items_reused"] == encoded
    for kind in ("items", "train"):
        for shard in second.manifest["shards"][kind]:
            assert (Path(second.output) / shard["path"]).read_bytes() == (
                Path(first.output) / shard["path"]
            ).read_bytes()
    retried = [f for f in read_failures(second.output) if f["kind"] == "item" and f["stage"] == "decode"]
    assert retried and all(f["attempts"] == 2 and f["fingerprint"] for f in retried)

    changed = sorted(videos.glob("*.mp4"))[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = run(args)
    assert third.counters["items_reused"] == encoded - 1
    assert versions.latest_version_id(root) == Path(third.output).name
    assert verify_dataset(third.output) == []
