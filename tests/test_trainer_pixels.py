"""Learning from pixels, end to end: videorec synth -> Beam ingest -> train.

The synthetic catalogue hides each item's category in how its video looks and makes IDs
carry no signal. Items rare in training barely move their ID embeddings, so only a model
that sees pixels can recommend them: the ``tiny`` video model must beat both the ``id``
model and the popularity ranking on test HR@10 for users whose test item is rare.
"""

from __future__ import annotations

import json

import pytest

from pipeline.main import run as ingest
from pipeline.synth import SynthConfig, generate
from trainer.train import main as train

pytestmark = pytest.mark.slow


def _train(data, run, encoder: str) -> dict:
    train(
        [
            "--data",
            str(data),
            "--preset",
            "tiny",
            "--encoder",
            encoder,
            "--output",
            str(run),
            "--epochs",
            "3",
            "--frame-size",
            "16",
            "--seed",
            "0",
            "--no-progress",
        ]
    )
    return json.loads((run / "results.json").read_text())


def test_tiny_video_model_recommends_rare_items_that_ids_and_popularity_cannot(tmp_path):
    synth = SynthConfig(
        users=300,
        items=120,
        seed=1,
        sizes=((64, 64), (96, 64)),
        hevc_fraction=0.0,
        min_seconds=1.0,
        max_seconds=2.0,
    )
    generate(tmp_path / "raw", synth)
    ingest(
        [
            "--interactions",
            str(tmp_path / "raw/pairs.csv"),
            "--videos",
            str(tmp_path / "raw/videos"),
            "--output",
            str(tmp_path / "ds"),
            "--frame-size",
            "32",
            "--quiet",
        ]
    )

    video = _train(tmp_path / "ds", tmp_path / "run-tiny", "tiny")
    ids = _train(tmp_path / "ds", tmp_path / "run-id", "id")
    popularity = video["popularity_test"]
    assert video["test"]["users/rare"] >= 50  # enough users with a rare test item to measure
    rare = "HR@10/rare"
    assert video["test"][rare] >= 0.2
    assert video["test"][rare] >= ids["test"][rare] + 0.15
    assert video["test"][rare] >= popularity[rare] + 0.15
    assert video["test"]["HR@10"] > popularity["HR@10"]
    print(json.dumps({"tiny": video["test"], "id": ids["test"], "popularity": popularity}, indent=1))
