"""Learning from pixels, end to end: videorec synth -> Beam ingest -> train.

The synthetic catalogue hides each item's category in how its video looks and makes IDs
carry no signal. Items rare in training barely move their ID embeddings, so only a model
that sees pixels can recommend them: the ``tiny`` video model must beat both the ``id``
model and the popularity ranking on test HR@10 for users whose test item is rare.
"""

from __future__ import annotations

import json
import math

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
    print(json.dumps({"tiny": video["test"], "id": ids["test"], "popularity": popularity}, indent=1))
    rare_users, all_users = video["test"]["users/rare"], video["test"]["users"]
    assert rare_users >= 50  # enough users with a rare test item to measure
    rare = "HR@10/rare"
    chance = 10 / synth.items  # HR@10 of a ranking that knows nothing
    assert clearly_above(video["test"][rare], chance, rare_users, against_a_constant=True)
    assert clearly_above(video["test"][rare], ids["test"][rare], rare_users)
    assert clearly_above(video["test"][rare], popularity[rare], rare_users)
    assert clearly_above(video["test"]["HR@10"], popularity["HR@10"], all_users)


Z = 3.0
"""How many standard errors a lead must reach to count: one-sided p < 0.0014 for one seed."""


def clearly_above(hit_rate: float, other: float, users: int, against_a_constant: bool = False) -> bool:
    """Whether ``hit_rate`` over ``users`` users beats ``other`` by ``Z`` standard errors.

    Each HR@10 is a proportion of users. Two models' rates are compared as independent proportions
    (conservative: both are measured on the same users, which lowers the variance of the
    difference); a constant (chance) has no variance of its own.
    """
    variance = other * (1 - other) / users
    if not against_a_constant:
        variance += hit_rate * (1 - hit_rate) / users
    return hit_rate - other >= Z * math.sqrt(max(variance, 1 / users**2))


def test_clearly_above_needs_a_lead_of_three_standard_errors():
    assert clearly_above(0.24, 0.01, 87)  # 0.23 against a standard error of 0.047
    assert not clearly_above(0.24, 0.15, 87)  # 0.09 is under two standard errors
    assert clearly_above(0.2, 0.083, 87, against_a_constant=True)  # 0.117 > 3 x 0.0296
    assert not clearly_above(0.15, 0.083, 87, against_a_constant=True)
    assert not clearly_above(0.0, 0.0, 300)  # no lead is no lead, even without variance
