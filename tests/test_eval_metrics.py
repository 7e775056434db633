"""Full-ranking metrics on hand-built cases whose HR@K / NDCG@K are known exactly."""

import math

import numpy as np
import pytest
import torch

from trainer.dataset import UserSequences
from trainer.evaluate import evaluation_cases, finish, metric_sums, ranks_of_targets


def test_rank_counts_items_scoring_strictly_higher():
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
