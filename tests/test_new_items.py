"""New items: planted by synth (released late), split off at ingest, reported per subset by the trainer."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.main import run
from pipeline.synth import SynthConfig
from pipeline.synth.catalogue import assign_categories, generate_interactions, new_item_mask, release_ms
from pipeline.synth.files import write_tables
from tests.dataset_files import dataset_failures, dataset_table
from transforms.buckets import stable_hash
from transforms.new_items import HELD_OUT, new_item_count

NEW_CONFIG = SynthConfig(users=150, items=40, new_items=4, seed=5, max_interactions=12)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """pairs.csv and titles.csv of a synth dataset with 4 of 40 items released late (no videos: fast)."""
    out = tmp_path_factory.mktemp("new_logs")
    write_tables(out, NEW_CONFIG, generate_interactions(NEW_CONFIG, assign_categories(NEW_CONFIG)))
    return out


def ingest(logs: Path, output: Path, *beam: str) -> Path:
    run(
        [
            "--interactions",
            str(logs / "pairs.csv"),
            "--titles",
            str(logs / "titles.csv"),
            "--output",
            str(output),
            "--new-items",
            "0.1",
            "--quiet",
            *(beam or ("--direct_running_mode=in_memory", "--direct_num_workers=1")),
        ]
    )
    return output


@pytest.fixture(scope="module")
def split(logs, tmp_path_factory) -> Path:
    return ingest(logs, tmp_path_factory.mktemp("new_split") / "v1")


def expected_new_items(pairs_csv: Path, fraction: float) -> set[str]:
    """The protocol of docs/FORMAT.md, computed here independently: latest (first time, ID hash)."""
    first: dict[str, int] = {}
    with open(pairs_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            first[row["item"]] = min(int(row["timestamp"]), first.get(row["item"], 1 << 62))
    order = sorted(first, key=lambda item: (first[item], stable_hash(item)))
    return set(order[len(order) - new_item_count(fraction, len(order)) :])


def test_synth_new_items_appear_only_after_their_release():
    config = SynthConfig(users=300, items=100, new_items=10, seed=3)
    interactions = generate_interactions(config, assign_categories(config))
    new = new_item_mask(config)
    assert int(new.sum()) == 10
    new_rows = [(i, t) for seq in interactions.sequences.values() for i, t in seq if new[i - 1]]
    old_rows = [(i, t) for seq in interactions.sequences.values() for i, t in seq if not new[i - 1]]
    assert new_rows, "new items must be watched after their release"
    assert min(t for _, t in new_rows) >= release_ms(config)
    assert min(t for _, t in old_rows) < release_ms(config)
    last_is_new = sum(1 for seq in interactions.sequences.values() if new[seq[-1][0] - 1])
    assert last_is_new >= 10  # enough users whose test target is a new item


def test_synth_new_items_default_off_and_validated():
    plain = SynthConfig(users=60, items=40, seed=1)
    assert not new_item_mask(plain).any()
    with pytest.raises(ValueError, match="new_items"):
        SynthConfig(users=10, items=10, new_items=10).validate()


def test_new_items_are_only_test_targets_and_every_interaction_is_accounted_for(logs, split):
    from transforms.manifest import read_version_manifest

    manifest = read_version_manifest(str(split))
    counts = manifest["counts"]
    new = expected_new_items(logs / "pairs.csv", 0.1)
    planted = {str(i + 1) for i in new_item_mask(NEW_CONFIG).nonzero()[0]}
    assert new == planted  # the late releases are exactly the items first watched last
    assert counts["new_items"] == len(new) == 4
    sequences = dataset_table(split, "sequences").to_pylist()
    for sequence in sequences:
        assert not new & set(sequence["item_ids"][:-1]), sequence["user_id"]
    new_targets = sum(1 for s in sequences if s["item_ids"][-1] in new)
    assert counts["users_new_target"] == new_targets >= 5
    # every interaction with a new item: a kept test target, or a failure record saying why not
    with open(logs / "pairs.csv", newline="") as handle:
        new_rows = {
            (r["user"], r["item"], int(r["timestamp"])) for r in csv.DictReader(handle) if r["item"] in new
        }
    used = {
        (s["user_id"], s["item_ids"][-1], s["timestamps"][-1]) for s in sequences if s["item_ids"][-1] in new
    }
    failed = [f for f in dataset_failures(split) if f["kind"] == "row" and f.get("item_id") in new]
    failed_rows = {(f["user_id"], f["item_id"], f["timestamp"]) for f in failed}
    assert len(failed_rows) == len(failed) and not used & failed_rows
    assert used | failed_rows == new_rows
    held = sum(1 for f in failed if f["reason"] == HELD_OUT)
    assert held == counts["rows_dropped"][HELD_OUT] > 0
    # new items stay candidates: in the items table, never trained on (popularity 0)
    items = {row["item_id"]: row["popularity"] for row in dataset_table(split, "items").to_pylist()}
    assert new <= set(items) and all(items[item] == 0 for item in new)
    assert manifest["config"]["new_items"] == 0.1


def test_new_item_split_is_byte_identical_for_one_and_two_workers(logs, split, tmp_path):
    outputs = [
        ingest(
            logs, tmp_path / f"w{n}", "--direct_running_mode=multi_processing", f"--direct_num_workers={n}"
        )
        for n in (1, 2)
    ]
    outputs.append(split)
    listings = [
        sorted(p.relative_to(o) for p in o.rglob("*") if p.is_file() and p.name != "run_stats.json")
        for o in outputs
    ]
    assert listings[0] == listings[1] == listings[2] and len(listings[0]) > 3
    for relative in listings[0]:
        assert (
            (outputs[0] / relative).read_bytes()
            == (outputs[1] / relative).read_bytes()
            == (outputs[2] / relative).read_bytes()
        ), relative


def test_evaluation_reports_new_targets_apart_and_popularity_cannot_rank_them(split, tmp_path):
    import json

    from trainer.dataset import load_dataset
    from trainer.evaluate import popularity_baseline
    from trainer.train import main as train_main
    from transforms.manifest import read_version_manifest

    counts = read_version_manifest(str(split))["counts"]
    dataset = load_dataset(str(split))
    baseline = popularity_baseline(dataset, "test")
    assert baseline["users/new"] == counts["users_new_target"]
    assert baseline["users/warm"] + baseline["users/new"] == baseline["users"] == counts["users_kept"]
    # a new item has training popularity 0: every other candidate ties or beats it
    assert baseline["HR@20/new"] == 0.0 and baseline["HR@10/warm"] > 0.1
    run = tmp_path / "run"
    flags = "--preset tiny --encoder id --epochs 2 --batch-size 32 --no-progress"
    train_main(["--data", str(split), "--output", str(run), *flags.split()])
    results = json.loads((run / "results.json").read_text())
    for subset in ("warm", "new", "rare"):
        assert results["test"][f"users/{subset}"] == results["popularity_test"][f"users/{subset}"]
    assert results["test"]["users/new"] == counts["users_new_target"]
    assert 0.0 <= results["test"]["HR@10/new"] <= 1.0
