"""Full-ranking metrics on hand-built cases whose HR@K / NDCG@K are known exactly."""

import math

import numpy as np
import pytest
import torch

from tests.fixtures_dataset import write_dataset
from trainer.dataset import UserSequences, load_dataset
from trainer.evaluate import MISS, evaluation_cases, finish, metric_sums, ranks_of_targets


def test_rank_counts_the_items_scoring_higher():
    # items 1..5 (column 0 is padding and never counts, even with the highest score)
    scores = torch.tensor([[9.0, 0.5, 0.4, 0.3, 0.2, 0.1]])
    assert ranks_of_targets(scores, torch.tensor([1]), torch.zeros(1, 1, dtype=torch.long)).tolist() == [0]
    assert ranks_of_targets(scores, torch.tensor([4]), torch.zeros(1, 1, dtype=torch.long)).tolist() == [3]


def test_history_items_are_masked_but_the_target_is_not():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6, 0.5]])
    target = torch.tensor([4])
    # items 1 and 2 are in the history: masked, so the target moves from rank 3 to rank 1
    assert ranks_of_targets(scores, target, torch.tensor([[1, 2, 0]])).tolist() == [1]
    # the target itself in the history (a repeat) keeps its own score
    assert ranks_of_targets(scores, target, torch.tensor([[1, 2, 4]])).tolist() == [1]


def test_hr_and_ndcg_of_known_ranks():
    ranks = torch.tensor([0, 3, 9, 10, 19, 25])
    metrics = finish(metric_sums(ranks))
    assert metrics["users"] == 6
    assert metrics["HR@10"] == pytest.approx(3 / 6)
    assert metrics["HR@20"] == pytest.approx(5 / 6)
    ndcg10 = (1 / math.log2(2) + 1 / math.log2(5) + 1 / math.log2(11)) / 6
    assert metrics["NDCG@10"] == pytest.approx(ndcg10, abs=1e-12)
    assert metrics["NDCG@20"] == pytest.approx(
        ndcg10 + (1 / math.log2(12) + 1 / math.log2(21)) / 6, abs=1e-12
    )


def test_leave_one_out_cases():
    sequences = UserSequences(
        user_index=np.array([0, 1, 2]), offsets=np.array([0, 4, 6, 7]), items=np.array([5, 6, 7, 8, 1, 2, 3])
    )
    histories, targets = evaluation_cases(sequences, "test")
    assert [h.tolist() for h in histories] == [[5, 6, 7], [1]]
    assert targets.tolist() == [8, 2]
    histories, targets = evaluation_cases(sequences, "valid")
    assert [h.tolist() for h in histories] == [[5, 6]]
    assert targets.tolist() == [7]


def test_a_tie_counts_against_the_target():
    no_history = torch.zeros(1, 1, dtype=torch.long)
    # target 3 ties with items 1 and 4; item 2 scores higher: 3 other items score >= the target
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.5, 0.5, 0.1]])
    assert ranks_of_targets(scores, torch.tensor([3]), no_history).tolist() == [3]
    # a tie with a masked history item or with padding (column 0) does not count
    scores = torch.tensor([[0.5, 0.5, 0.2, 0.5, 0.1, 0.1]])
    assert ranks_of_targets(scores, torch.tensor([3]), torch.tensor([[1]])).tolist() == [0]
    # every item tied (e.g. an untrained model scoring a constant): the target ranks last, not first
    scores = torch.full((1, 6), 0.25)
    assert ranks_of_targets(scores, torch.tensor([2]), no_history).tolist() == [4]
    assert finish(metric_sums(torch.tensor([4])))["NDCG@10"] == pytest.approx(1 / math.log2(6))


def test_nan_scores_count_against_the_target():
    no_history = torch.zeros(1, 1, dtype=torch.long)
    scores = torch.tensor([[0.0, float("nan"), 0.1, 0.5, 0.2]])
    assert ranks_of_targets(scores, torch.tensor([3]), no_history).tolist() == [1]
    scores = torch.tensor([[0.0, 0.3, 0.1, float("nan"), 0.2]])
    assert ranks_of_targets(scores, torch.tensor([3]), no_history).tolist() == [MISS]


def test_items_that_are_not_candidates_are_never_ranked():
    no_history = torch.zeros(2, 1, dtype=torch.long)
    scores = torch.tensor([[0.0, 0.9, 0.0, 0.5, 0.1], [0.0, 0.9, 0.0, 0.5, 0.1]])
    candidates = torch.tensor([False, False, True, True, True])  # item 1 could not be encoded
    ranks = ranks_of_targets(scores, torch.tensor([3, 1]), no_history, candidates)
    # user 0: item 1 (0.9) is not a candidate, so nothing beats the target; user 1's target is item 1
    assert ranks.tolist() == [0, MISS]
    metrics = finish(metric_sums(ranks))
    assert metrics["HR@10"] == 0.5 and metrics["users"] == 2


def test_scores_are_fp32_even_inside_an_autocast_region(tmp_path):
    from trainer.config import ModelConfig
    from trainer.evaluate import ItemTable, score_split
    from trainer.models.videorec import build_videorec

    sequences = {str(u): [str((u + t) % 7 + 1) for t in range(4)] for u in range(3)}
    cases = load_dataset(str(write_dataset(tmp_path / "ds", sequences, max_seq_len=4)))
    torch.manual_seed(0)
    model = build_videorec(ModelConfig(encoder="id", dim=16, ffn_dim=32, max_seq_len=4), num_items=7)
    encoded = torch.ones(8, dtype=torch.bool)
    encoded[0] = False
    items = ItemTable(torch.randn(8, 16), encoded)
    calls = []
    original = model.user_states

    def spy(window, table):
        states = original(window, table)
        calls.append(states.dtype)
        return states

    model.user_states = spy
    kwargs = {"max_seq_len": 4, "batch_size": 8, "device": torch.device("cpu")}
    plain = score_split(model, cases, "test", items, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = score_split(model, cases, "test", items, **kwargs)
    assert calls == [torch.float32, torch.float32]
    assert inside == plain
