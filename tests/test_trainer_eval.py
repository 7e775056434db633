"""Honest evaluation end to end: items that cannot be encoded, autocast vs fp32, loader workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.fixtures_dataset import rewrite_shard, solid_frames, write_dataset
from trainer.config import ModelConfig
from trainer.dataset import load_dataset
from trainer.evaluate import MISS, encode_item_table, evaluation_cases, score_split
from trainer.models.videorec import build_videorec
from trainer.train import main as train_main

NUM_ITEMS = 12
BROKEN = "5"
"""Item whose frames are corrupted in the item shards (its index is 5 too)."""


def _sequences() -> dict[str, list[str]]:
    return {str(u): [str((u + t) % NUM_ITEMS + 1) for t in range(8)] for u in range(24)}


def _corrupt_item_frames(folder: Path, shard: str, key: str) -> None:
    """The item's first frame is not a JPEG (the shard is recorded so in the manifest)."""
    rewrite_shard(
        folder, shard, lambda name, content: b"\xff\xd8 not a jpeg" if name == f"{key}.0.jpg" else content
    )


@pytest.fixture(scope="module")
def broken_dataset(tmp_path_factory) -> Path:
    folder = write_dataset(
        tmp_path_factory.mktemp("ds"), _sequences(), frames=solid_frames(12, 2), max_seq_len=5, per_shard=5
    )
    _corrupt_item_frames(folder, "items/items-000000.tar", BROKEN)
    return folder


def _model(seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(encoder="tiny", freeze="all", dim=16, ffn_dim=32, max_seq_len=5)
    return build_videorec(config, NUM_ITEMS, num_frames=2, frame_size=8).eval()


def _score(model, dataset, items, split="test"):
    return score_split(model, dataset, split, items, max_seq_len=5, batch_size=7, device=torch.device("cpu"))


def test_an_item_that_does_not_decode_is_counted_and_never_ranked(broken_dataset):
    dataset = load_dataset(str(broken_dataset))
    model = _model()
    items = encode_item_table(model, dataset, 8, False, 4, torch.device("cpu"))
    broken = int(BROKEN)
    assert items.failed == 1 and items.not_encoded == 1 and not items.encoded[broken]
    assert items.encoded[1:].sum() == NUM_ITEMS - 1 and not items.encoded[0]
    metrics = _score(model, dataset, items)
    _, targets = evaluation_cases(dataset.sequences, "test")
    assert metrics["targets_not_encoded"] == (targets == broken).sum() > 0
    # those users are misses: at most the other users can hit
    assert metrics["HR@20"] <= 1 - (targets == broken).mean()
    # whatever the broken item's row holds, no user's rank changes: it is not a candidate
    for value in (1e6, -1e6):
        items.embeddings[broken] = value
        assert _score(model, dataset, items) == metrics


def test_a_run_reports_the_items_it_could_not_encode(broken_dataset, tmp_path):
    run = tmp_path / "run"
    flags = "--preset tiny --epochs 1 --batch-size 8 --frame-size 8 --no-progress"
    flags += " --max-lost-fraction 0.1"  # 1 of 12 items lost; the default 0.001 stops the run (exit 4)
    assert train_main(["--data", str(broken_dataset), "--output", str(run), *flags.split()]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["items"]["items_not_encoded"] == 1 and results["items"]["item_decode_failures"] == 1
    assert results["test"]["targets_not_encoded"] > 0
    # the popularity baseline ranks the same candidates
    assert results["popularity_test"]["targets_not_encoded"] == results["test"]["targets_not_encoded"]
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["items_not_encoded"] == 1 for r in evals if r["type"] == "eval")


def test_autocast_encoding_gives_the_fp32_metrics(broken_dataset):
    dataset = load_dataset(str(broken_dataset))
    model = _model(seed=3)
    cpu = torch.device("cpu")
    exact = encode_item_table(model, dataset, 8, False, 4, cpu)
    bf16 = encode_item_table(model, dataset, 8, False, 4, cpu, autocast=True)
    assert bf16.embeddings.dtype == torch.float32
    assert not torch.equal(exact.embeddings, bf16.embeddings)  # autocast did run
    assert torch.allclose(exact.embeddings, bf16.embeddings, rtol=0.05, atol=0.05)
    for split in ("valid", "test"):
        assert _score(model, dataset, bf16, split) == _score(model, dataset, exact, split)


def test_loader_workers_encode_the_same_table(broken_dataset):
    dataset = load_dataset(str(broken_dataset))
    model = _model()
    cpu = torch.device("cpu")
    inline = encode_item_table(model, dataset, 8, False, 3, cpu)
    workers = encode_item_table(model, dataset, 8, False, 3, cpu, num_workers=2)
    assert torch.equal(workers.encoded, inline.encoded) and workers.failed == inline.failed == 1
    assert torch.allclose(workers.embeddings, inline.embeddings, atol=1e-6)
    assert workers.items_per_s > 0
    assert _score(model, dataset, workers)["users"] == 24 and MISS > NUM_ITEMS
