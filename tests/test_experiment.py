"""videorec experiment end to end on a tiny synth dataset with planted new items: CSV, Markdown, PNG, reruns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline.main import run
from pipeline.synth import SynthConfig, generate
from trainer.experiment import SUBSETS
from trainer.experiment import main as experiment_main
from trainer.train import main as train_main

ARMS = ["popularity", "id", "frozen-tiny", "topk-tiny", "full-tiny", "oracle"]
TRAIN_ARGS = "--epochs 1 --batch-size 16 --frame-size 16 --num-workers 0"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A synth dataset (40 users, 30 items, 3 released late) ingested with a new-item split."""
    raw = tmp_path_factory.mktemp("exp_synth")
    config = SynthConfig(
        users=40,
        items=30,
        new_items=3,
        seed=2,
        max_interactions=8,
        min_seconds=1.0,
        max_seconds=1.2,
        sizes=((64, 64),),
        hevc_fraction=0.0,
        rotation_fraction=0.0,
    )
    generate(raw, config, workers=2)
    output = tmp_path_factory.mktemp("exp_data") / "v1"
    run(
        [
            "--interactions",
            str(raw / "pairs.csv"),
            "--videos",
            str(raw / "videos"),
            "--titles",
            str(raw / "titles.csv"),
            "--output",
            str(output),
            "--frame-size",
            "32",
            "--new-items",
            "0.1",
            "--quiet",
            "--direct_running_mode=in_memory",
            "--direct_num_workers=1",
        ]
    )
    return output


def experiment(dataset: Path, out: Path) -> int:
    return experiment_main(
        [
            "--data",
            str(dataset),
            "--output",
            str(out),
            "--allow-random-backbone",
            "--seed",
            "3",
            "--train-args",
            TRAIN_ARGS,
        ]
    )


def test_experiment_writes_table_and_plot_and_a_rerun_skips_complete_arms(dataset, tmp_path, capsys):
    out = tmp_path / "exp"
    assert experiment(dataset, out) == 0
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["arm"], r["subset"]) for r in rows] == [(a, s) for a in ARMS for s in SUBSETS]
    by = {(r["arm"], r["subset"]): r for r in rows}
    assert int(by[("id", "new")]["users"]) > 0
    assert int(by[("id", "warm")]["users"]) + int(by[("id", "new")]["users"]) == int(
        by[("id", "all")]["users"]
    )
    assert float(by[("popularity", "new")]["HR@10"]) == 0.0  # new items were never trained on
    assert float(by[("oracle", "all")]["oracle_share"]) == 1.0
    assert float(by[("oracle", "all")]["HR@10"]) > float(by[("popularity", "all")]["HR@10"])
    for arm in ARMS[1:5]:
        assert float(by[(arm, "all")]["seconds"]) > 0 and 50 < float(by[(arm, "all")]["peak_rss_mib"]) < 4000
    table = (out / "results.md").read_text()
    assert table.startswith("| arm | subset | users | HR@10") and "| full-tiny | new |" in table
    with Image.open(out / "results.png") as image:
        image.load()
        assert image.format == "PNG" and image.size == (960, 500)
    # the id arm equals a separate videorec train run with the same settings
    alone = tmp_path / "alone"
    flags = f"--preset tiny --seed 3 --no-progress --encoder id {TRAIN_ARGS}"
    train_main(["--data", str(dataset), "--output", str(alone), *flags.split()])
    separate = json.loads((alone / "results.json").read_text())["test"]
    assert float(by[("id", "all")]["HR@10"]) == pytest.approx(separate["HR@10"])
    assert float(by[("id", "warm")]["NDCG@10"]) == pytest.approx(separate["NDCG@10/warm"])
    # a rerun skips every complete arm and writes the same table
    capsys.readouterr()
    assert experiment(dataset, out) == 0
    printed = capsys.readouterr().out
    assert all(f"{arm} is complete, skipped" in printed for arm in ARMS[1:5])
    assert (out / "results.md").read_text() == table
    # an arm killed after its last checkpoint but before its results: the rerun resumes it from
    # last.pt (as videorec train does) and reaches the same metrics
    metrics = [{k: r[k] for k in ("arm", "subset", "users", "HR@10", "NDCG@20")} for r in rows]
    (out / "arms" / "id" / "arm.json").unlink()
    (out / "arms" / "id" / "results.json").unlink()
    assert (out / "arms" / "id" / "checkpoints" / "last.pt").exists()
    assert experiment(dataset, out) == 0
    assert "running id" in capsys.readouterr().out
    with open(out / "results.csv", newline="") as handle:
        again = [
            {k: r[k] for k in ("arm", "subset", "users", "HR@10", "NDCG@20")} for r in csv.DictReader(handle)
        ]
    assert again == metrics


def test_the_readme_command_runs_to_the_end_without_pretrained_weights(dataset, tmp_path, capsys):
    """``videorec experiment --data D --output E --preset tiny`` (README): the frozen and top-k arms
    would stand on a random backbone, which train and extract refuse, so they are skipped up front."""
    out = tmp_path / "exp"
    argv = ["--data", str(dataset), "--output", str(out), "--preset", "tiny", "--train-args", TRAIN_ARGS]
    assert experiment_main(argv) == 0
    assert "experiment: skipped frozen-tiny, topk-tiny: no pretrained weights" in capsys.readouterr().out
    with open(out / "results.csv", newline="") as handle:
        arms = list(dict.fromkeys(row["arm"] for row in csv.DictReader(handle)))
    assert arms == ["popularity", "id", "full-tiny", "oracle"]
