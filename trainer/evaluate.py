"""Full-ranking evaluation: HR@K and NDCG@K over every item, history masked.

Each item is encoded once (from the item shards, the id table or the feature table),
every user's history is run through SASRec, and the held-out item is ranked against
all items. Items of the user's history other than the target are masked; a target's
rank is the number of items scoring strictly higher. Users are split across ranks and
the integer/float64 sums are all-reduced, so distributed evaluation gives the
single-process numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from trainer.dataset import DatasetInfo, UserSequences
from trainer.frames import FrameTransform

CUTOFFS = (10, 20)
SPLITS = {"valid": 2, "test": 1}
"""Split -> how many items from the end the target sits (leave-one-out)."""


def ranks_of_targets(scores: torch.Tensor, targets: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items.

    ``scores`` ``[B, N+1]`` (column 0 = padding), ``targets`` ``[B]``, ``histories`` ``[B, H]``
    (0 = pad): history items other than the target are excluded from the ranking.
    """
    scores = scores.float().clone()
    target_scores = scores.gather(1, targets.unsqueeze(1))
    scores.scatter_(1, histories, float("-inf"))
    scores[:, 0] = float("-inf")
    return (scores > target_scores).sum(dim=1)


def metric_sums(ranks: torch.Tensor, cutoffs: tuple[int, ...] = CUTOFFS) -> dict[str, float]:
    """Sums of HR@K and NDCG@K over the users whose ranks are given (plus ``users``)."""
    ranks = ranks.double()
    sums = {"users": float(len(ranks))}
    for k in cutoffs:
        hit = ranks < k
        sums[f"HR@{k}"] = float(hit.sum())
        sums[f"NDCG@{k}"] = float((hit / torch.log2(ranks + 2)).sum())
    return sums


def evaluation_cases(sequences: UserSequences, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """(full histories, targets) of the users that have a ``split`` target and a non-empty history."""
    back = SPLITS[split]
    histories, targets = [], []
    for row in range(len(sequences)):
        sequence = sequences.sequence(row)
        if len(sequence) > back:
            histories.append(sequence[: len(sequence) - back])
            targets.append(sequence[len(sequence) - back])
    return histories, np.asarray(targets, dtype=np.int64)


def _pad(rows: list[np.ndarray], width: int | None = None) -> torch.Tensor:
    width = width or max(len(r) for r in rows)
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        row = row[-width:]
        out[i, : len(row)] = torch.from_numpy(np.asarray(row, dtype=np.int64))
    return out


def _sums(ranks: torch.Tensor, targets: torch.Tensor, rare_items: torch.Tensor | None) -> dict[str, float]:
    sums = metric_sums(ranks)
    if rare_items is not None:
        rare = rare_items[targets]
        sums.update({f"{key}/rare": value for key, value in metric_sums(ranks[rare]).items()})
    return sums


@torch.no_grad()
def score_users(
    score: Callable[[torch.Tensor], torch.Tensor],
    histories: list[np.ndarray],
    targets: np.ndarray,
    max_seq_len: int,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    rare_items: torch.Tensor | None = None,
) -> dict[str, float]:
    """HR/NDCG means for the given cases; users are split across ranks and the sums all-reduced.

    ``score`` maps right-padded history windows ``[B, max_seq_len]`` to item scores ``[B, N+1]``.
    With ``rare_items`` (bool ``[N+1]``), ``KEY/rare`` metrics cover the users whose target is rare.
    """
    mine = range(rank, len(histories), world_size)
    if rare_items is not None:
        rare_items = rare_items.to(device)
    no_ranks = torch.zeros(0, device=device)
    no_targets = torch.zeros(0, dtype=torch.long, device=device)
    sums = {key: 0.0 for key in _sums(no_ranks, no_targets, rare_items)}
    for start in range(0, len(mine), batch_size):
        rows = list(mine[start : start + batch_size])
        batch_histories = [histories[i] for i in rows]
        window = _pad(batch_histories, max_seq_len).to(device)
        batch_targets = torch.from_numpy(targets[rows]).to(device)
        ranks = ranks_of_targets(score(window), batch_targets, _pad(batch_histories).to(device))
        for key, value in _sums(ranks, batch_targets, rare_items).items():
            sums[key] += value
    if world_size > 1:
        packed = torch.tensor(list(sums.values()), dtype=torch.float64, device=device)
        dist.all_reduce(packed)
        sums = dict(zip(sums, packed.tolist(), strict=True))
    return finish(sums)


def finish(sums: dict[str, float]) -> dict[str, float]:
    """Sums -> means (``users`` counts stay counts)."""
    means = {}
    for key, value in sums.items():
        group = key.partition("/")[2]
        users = sums["users/" + group if group else "users"]
        means[key] = value if key.split("/")[0] == "users" else (value / users if users else math.nan)
    return means


@torch.no_grad()
def encode_items(
    model,
    dataset: DatasetInfo,
    frame_size: int,
    squash: bool,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Every item's embedding ``[N+1, d]`` (row 0 and items without frames stay zero)."""
    from trainer.data import item_batches

    encoder = model.item_encoder
    if not encoder.needs_frames:
        return encoder(torch.arange(dataset.num_items + 1, device=device)).float()
    transform = FrameTransform(frame_size, squash=squash, train=False)
    table = None
    for indices, clips in item_batches(dataset.shard_urls("items"), transform, batch_size, rank, world_size):
        embeddings = encoder(indices.to(device), clips.to(device)).float()
        if table is None:
            table = torch.zeros(dataset.num_items + 1, embeddings.shape[1], device=device)
        table[indices.to(device)] = embeddings
    if table is None:
        width = encoder.projection.out_features
        table = torch.zeros(dataset.num_items + 1, width, device=device)
    if world_size > 1:
        dist.all_reduce(table)
    return table


def popularity_baseline(dataset: DatasetInfo, split: str, batch_size: int = 1024) -> dict[str, float]:
    """Metrics of ranking every user's candidates by training popularity (history masked)."""
    popularity = torch.from_numpy(dataset.popularity).double()
    histories, targets = evaluation_cases(dataset.sequences, split)
    return score_users(
        lambda window: popularity.expand(len(window), -1),
        histories,
        targets,
        1,
        batch_size,
        torch.device("cpu"),
        rare_items=dataset.rare_items(),
    )


def evaluate(
    model,
    dataset: DatasetInfo,
    split: str,
    *,
    max_seq_len: int,
    frame_size: int,
    squash: bool,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on ``split`` (``valid`` or ``test``)."""
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            table = encode_items(model, dataset, frame_size, squash, batch_size, device, rank, world_size)
            histories, targets = evaluation_cases(dataset.sequences, split)

            def score(window: torch.Tensor) -> torch.Tensor:
                return model.user_states(window, table).float() @ table.float().T

            return score_users(
                score,
                histories,
                targets,
                max_seq_len,
                batch_size,
                device,
                rank,
                world_size,
                dataset.rare_items().to(device),
            )
    finally:
        model.train(was_training)
