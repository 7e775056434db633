"""Evaluation sharded and streamed (issue 21 item 4): item blocks, per-rank reads, exact 2-rank metrics."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.main import main as ingest_main
from trainer.config import ModelConfig
from trainer.dataset import UserSequences, load_dataset
from trainer.eval_cases import leave_one_out, padded, rank_case_batches, rank_rows
from trainer.evaluate import (
    encode_item_table,
    evaluation_cases,
    popularity_baseline,
    ranks_of_targets,
    score_split,
)
from trainer.models.videorec import build_videorec
from trainer.ranking import MISS, PopularityRanker, block_ranks

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A dataset written by the real ingest: 61 users (3 to 11 interactions), 23 items, many table parts."""
    folder = tmp_path_factory.mktemp("eval")
    lines = ["user,item,timestamp"]
    for user in range(61):
        lines += [f"u{user},i{(user * 5 + t * 3) % 23},{1000 + t}" for t in range(3 + user % 9)]
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    out = folder / "ds"
    argv = ["--interactions", str(folder / "pairs.csv"), "--output", str(out), "--shard-max-samples", "4"]
    assert ingest_main([*argv, *LOCAL]) == 0
    return out


# ------------------------------------------------------------------------------------------- ranking


def _random_case(seed: int, users: int = 12, items: int = 17, dim: int = 3):
    """Integer-valued embeddings (every dot product exact in fp32), duplicated rows (ties), a NaN item,
    histories with repeats, the target and padding, and items that are not candidates."""
    rng = np.random.default_rng(seed)
    table = torch.from_numpy(rng.integers(-2, 3, (items + 1, dim)).astype(np.float32))
    table[5] = table[6]  # a tie
    table[9, 0] = float("nan")
    states = torch.from_numpy(rng.integers(-2, 3, (users, dim)).astype(np.float32))
    targets = torch.from_numpy(rng.integers(1, items + 1, users))
    histories = torch.from_numpy(rng.integers(0, items + 1, (users, 6)))
    histories[0, 0] = targets[0]
    targets[2] = 9  # scores NaN: a miss
    histories[1, :2] = 4
    candidates = torch.from_numpy(rng.random(items + 1) > 0.2)
    candidates[0] = False
    return states, table, targets, histories, candidates


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [1, 3, 7, 100])
def test_block_ranks_equal_the_full_ranking(seed, block):
    states, table, targets, histories, candidates = _random_case(seed)
    for allowed in (candidates, None):
        full = ranks_of_targets(states @ table.T, targets, histories, allowed)
        assert block_ranks(states, table, targets, histories, allowed, block).tolist() == full.tolist()
        assert full[2] == MISS and (full < MISS).sum() >= 2


@pytest.mark.parametrize("seed", range(6))
def test_popularity_ranks_equal_the_full_ranking_without_a_score_matrix(seed):
    _, _, targets, histories, candidates = _random_case(seed)
    popularity = torch.from_numpy(np.random.default_rng(seed).integers(0, 4, 18)).double()
    for allowed in (candidates, None):
        full = ranks_of_targets(popularity.expand(len(targets), -1), targets, histories, allowed)
        assert PopularityRanker(popularity, allowed)(targets, histories).tolist() == full.tolist()


# --------------------------------------------------------------------------------------------- cases


def test_cases_are_built_with_array_operations_as_the_loop_did():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 9, 50)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, 30, offsets[-1])
    for split, back in (("valid", 2), ("test", 1)):
        rows = [items[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True) if b - a > back]
        history_offsets, history_items, targets = leave_one_out(offsets, items, split)
        assert targets.tolist() == [int(r[-back]) for r in rows]
        got = padded(history_offsets, history_items, 4)
        for row, full in zip(got.tolist(), rows, strict=True):
            tail = full[:-back][-4:].tolist()
            assert row == tail + [0] * (4 - len(tail))
    sequences = UserSequences(np.arange(50), offsets, items)
    histories, targets = evaluation_cases(sequences, "test")
    assert [h.tolist() for h in histories] == [
        items[a : b - 1].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True) if b - a > 1
    ]


def test_each_rank_reads_only_the_parts_holding_its_users(ingested, tmp_path):
    dataset = load_dataset(str(ingested))
    parts = dataset.sequence_parts
    assert len(parts) > 4 and sum(p.rows for p in parts) == dataset.num_users > 40
    everyone = [t for b in rank_case_batches(dataset, "test", 0, 1, 8, 5) for t in b.targets.tolist()]
    halves = [
        [t for b in rank_case_batches(dataset, "test", r, 2, 8, 5) for t in b.targets.tolist()]
        for r in (0, 1)
    ]
    assert halves[0] + halves[1] == everyone and abs(len(halves[0]) - len(halves[1])) <= 1
    assert everyone == evaluation_cases(dataset.sequences, "test")[1].tolist()

    # rank 0 of 2 never opens the parts past its rows: remove them and it still evaluates
    copy = tmp_path / "ds"
    shutil.copytree(ingested, copy)
    copied = load_dataset(str(copy))
    end = rank_rows(copied.num_users, 0, 2)[1]
    for part in copied.sequence_parts:
        if part.first_row >= end:
            os.remove(part.url)
    again = [t for b in rank_case_batches(copied, "test", 0, 2, 8, 5) for t in b.targets.tolist()]
    assert again == halves[0]


# ---------------------------------------------------------------------------------------- two ranks


def _evaluate(data: str, rank: int, world_size: int) -> dict:
    torch.manual_seed(0)
    dataset = load_dataset(data)
    model = build_videorec(
        ModelConfig(encoder="id", dim=8, ffn_dim=16, max_seq_len=5), num_items=dataset.num_items
    )
    items = encode_item_table(model, dataset, 8, False, 16, torch.device("cpu"), rank, world_size)
    kwargs = {"max_seq_len": 5, "batch_size": 4, "device": torch.device("cpu"), "rank": rank}
    users = sum(len(b.targets) for b in rank_case_batches(dataset, "test", rank, world_size, 4, 5))
    return {
        "users_here": users,
        "test": score_split(model, dataset, "test", items, **kwargs, world_size=world_size, block=5),
        "valid": score_split(model, dataset, "valid", items, **kwargs, world_size=world_size),
        "popularity": popularity_baseline(dataset, "test", items.encoded, 4, rank, world_size),
    }


def _exact(metrics: dict[str, float]) -> dict[str, str]:
    """Each value's exact float (``float.hex``; NaN, no user in the group, equals NaN)."""
    return {key: float(value).hex() for key, value in metrics.items()}


def _rank(rank: int, world_size: int, store: str, data: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        results[rank] = _evaluate(data, rank, world_size)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_each_take_half_the_users_and_give_the_one_rank_metrics_exactly(ingested, tmp_path):
    single = _evaluate(str(ingested), 0, 1)
    context = mp.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        mp.start_processes(
            _rank, args=(2, str(tmp_path / "store"), str(ingested), results), nprocs=2, start_method="spawn"
        )
        ranks = [results[0], results[1]]
    users = single["test"]["users"]
    assert users == single["users_here"] > 40
    assert sorted(r["users_here"] for r in ranks) == [users // 2, users - users // 2]
    for split in ("test", "valid", "popularity"):
        assert _exact(ranks[0][split]) == _exact(ranks[1][split]) == _exact(single[split]), split
    assert single["popularity"]["HR@20"] > 0
