"""Full-ranking evaluation: HR@K and NDCG@K over every item, history masked, ties against the target.

Each evaluation encodes every item once (from the item shards with DataLoader workers, the
id table or the feature table), then runs every user's history through SASRec and ranks the
held-out item against all *candidate* items:

- scores are computed in fp32 (autocast is switched off for the user states and scores, even
  inside an autocast region; only item *encoding* may run under bf16 autocast);
- a target's rank is the number of **other** candidate items scoring **at least as high**
  (a tie counts against the target; a NaN score counts against the target);
- items of the user's history other than the target are masked;
- users are reported all together and per subset of their target: ``rare`` (long tail of
  training popularity), ``warm`` (seen in training) and ``new`` (never seen in training: with a
  new-item split, the held-out new items; an ``id`` model scores them with untrained embeddings);
- items whose frames cannot be decoded or read (``trainer.item_store``: the items table gives them
  no frames, or their shard is missing or damaged) are not candidates and are dropped from the input
  windows; they are counted (``ItemTable``), and a user whose *target* cannot be encoded counts as a
  miss (``targets_not_encoded``).

Each rank reads only its own contiguous range of users from the sequences table parts that hold
them (``trainer.eval_cases``, a row group at a time, cases built with array operations) and ranks
them against every item in blocks of ``ITEM_BLOCK`` items (``trainer.ranking``), so a rank holds at
most ``batch x block`` scores and memory does not grow with the number of users. Metrics are integer
counts all-reduced across ranks, so distributed evaluation gives the single-process numbers exactly.
The popularity baseline ranks without a score matrix, each rank its own users.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from trainer.config import DataConfig
from trainer.dataset import DatasetInfo, UserSequences
from trainer.eval_cases import SPLITS as SPLITS  # re-exported: split -> target position
from trainer.eval_cases import input_windows, leave_one_out, padded, rank_case_batches, rank_rows
from trainer.frames import FrameTransform
from trainer.item_store import ItemStore, item_store_for
from trainer.ranking import ITEM_BLOCK, PopularityRanker, RankCounts, block_ranks
from trainer.ranking import MISS as MISS  # re-exported: the rank of a target that cannot be ranked

log = logging.getLogger(__name__)

CUTOFFS = (10, 20)
COUNT_KEYS = ("users", "targets_not_encoded")
"""Metric keys that are counts, not means."""


def ranks_of_targets(
    scores: torch.Tensor,
    targets: torch.Tensor,
    histories: torch.Tensor,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pessimistic 0-based rank of each target: how many other candidate items score at least as high.

    ``scores`` ``[B, N+1]`` (column 0 = padding, never a candidate), ``targets`` ``[B]``,
    ``histories`` ``[B, H]`` (0 = pad): history items other than the target are not
    candidates. ``candidates`` (bool ``[N+1]``, default all) removes items that could not be
    encoded. A NaN score counts against the target; a target that is not a candidate, or
    scores NaN, gets rank :data:`MISS`.
    """
    scores = scores.float()
    allowed = (
        torch.ones_like(scores, dtype=torch.bool) if candidates is None else candidates.expand_as(scores)
    )
    allowed = allowed.clone()
    allowed[:, 0] = False
    allowed.scatter_(1, histories, False)
    allowed.scatter_(1, targets.unsqueeze(1), False)  # only *other* items compete
    target_scores = scores.gather(1, targets.unsqueeze(1))
    ahead = (scores >= target_scores) | scores.isnan()
    ranks = (ahead & allowed).sum(dim=1)
    unrankable = target_scores.squeeze(1).isnan()
    if candidates is not None:
        unrankable |= ~candidates[targets]
    return ranks.masked_fill(unrankable, MISS)


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
    offsets, items, targets = leave_one_out(sequences.offsets, sequences.items, split)
    return np.split(items, offsets[1:-1]) if len(targets) else [], targets


def _reduced(counts: RankCounts, world_size: int) -> dict[str, float]:
    if world_size > 1:
        dist.all_reduce(counts.counts)
    return finish(counts.sums())


def seen_in_training(dataset: DatasetInfo) -> torch.Tensor:
    """Bool ``[N+1]``: items with at least one training interaction (``warm`` targets; the rest are ``new``)."""
    return torch.from_numpy(dataset.popularity > 0)


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
    candidates: torch.Tensor | None = None,
    seen_items: torch.Tensor | None = None,
) -> dict[str, float]:
    """HR/NDCG means for the given cases; users are split across ranks and the sums all-reduced.

    ``score`` maps right-padded history windows ``[B, max_seq_len]`` to item scores ``[B, N+1]``.
    With ``rare_items`` (bool ``[N+1]``), ``KEY/rare`` metrics cover the users whose target is rare.
    With ``seen_items`` (bool ``[N+1]``, :func:`seen_in_training`), ``KEY/warm`` metrics cover the
    users whose target is one of them and ``KEY/new`` the others.
    With ``candidates`` (bool ``[N+1]``), only those items are ranked and the input windows
    keep only those items (``targets_not_encoded`` counts users whose target is not one).
    """
    start, end = rank_rows(len(histories), rank, world_size)
    offsets = np.zeros(end - start + 1, dtype=np.int64)
    np.cumsum([len(h) for h in histories[start:end]], out=offsets[1:])
    flat = np.concatenate([np.zeros(0, np.int64), *histories[start:end]]).astype(np.int64)
    keep = candidates.cpu().numpy() if candidates is not None else None
    counts = RankCounts(CUTOFFS, rare_items, seen_items, candidates, device)
    for first in range(0, end - start, batch_size):
        last = min(first + batch_size, end - start)
        rows = offsets[first : last + 1] - offsets[first]
        chosen = flat[offsets[first] : offsets[last]]
        window = input_windows(rows, chosen, max_seq_len, keep).to(device)
        batch_targets = torch.from_numpy(targets[start + first : start + last]).to(device)
        ranks = ranks_of_targets(
            score(window), batch_targets, padded(rows, chosen).to(device), counts.candidates
        )
        counts.add(ranks, batch_targets)
    return _reduced(counts, world_size)


def finish(sums: dict[str, float]) -> dict[str, float]:
    """Sums -> means (counts: ``users``, ``targets_not_encoded``, stay counts)."""
    means = {}
    for key, value in sums.items():
        group = key.partition("/")[2]
        users = sums["users/" + group if group else "users"]
        is_count = key.split("/")[0] in COUNT_KEYS
        means[key] = value if is_count else (value / users if users else math.nan)
    return means


@dataclass
class ItemTable:
    """Every item's embedding, and which items could be encoded."""

    embeddings: torch.Tensor
    """float32 ``[N+1, d]``; rows of items that were not encoded are zero and never used."""
    encoded: torch.Tensor
    """bool ``[N+1]``: candidates (row 0, padding, is False)."""
    seconds: float = 0.0
    """Wall time of the encoding."""
    failed: int = 0
    """Items whose frames did not decode (all ranks)."""
    read_errors: int = 0
    """Items the item store could not read (all ranks)."""
    first_lost: str = ""
    """This rank's first line about an item the store could not read (``trainer.item_store.ItemLost``)."""

    @property
    def not_encoded(self) -> int:
        """Items (1..N) that are not candidates: undecodable, unreadable or without frames."""
        return int((~self.encoded[1:]).sum())

    def example(self) -> str:
        """`` (first: <line naming the item and its shard>)`` when this rank lost an item, else ``""``."""
        return f" (first: {self.first_lost})" if self.first_lost else ""

    @property
    def items_per_s(self) -> float:
        return int(self.encoded.sum()) / self.seconds if self.seconds > 0 else math.nan

    def stats(self) -> dict[str, float]:
        """What ``metrics.jsonl`` and ``results.json`` report about the encoding."""
        return {
            "items_encoded": int(self.encoded.sum()),
            "items_not_encoded": self.not_encoded,
            "item_decode_failures": self.failed,
            "item_read_errors": self.read_errors,
            "encode_s": self.seconds,
            "encode_items_per_s": self.items_per_s,
        }


@torch.no_grad()
def encode_item_table(
    model,
    dataset: DatasetInfo,
    frame_size: int,
    squash: bool,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    *,
    store: ItemStore | None = None,
    num_workers: int = 0,
    autocast: bool = False,
) -> ItemTable:
    """Encode every item once: id/feature tables directly, video items from ``store`` (the dataset's
    item store, ``trainer.item_store``; default: one with the default item cache).

    Video items are read by ``num_workers`` DataLoader workers (pinned batches on CUDA), each
    rank encoding its share of the shards; the rows are all-reduced. ``autocast`` runs the
    item encoder under bf16 autocast; the table is returned in fp32 either way.
    """
    from trainer.data import ItemStream, item_loader

    start = time.perf_counter()
    encoder = model.item_encoder
    num_items = dataset.num_items
    if not encoder.needs_frames:
        embeddings = encoder(torch.arange(num_items + 1, device=device)).float()
        encoded = encoder.available().to(device)
        return ItemTable(embeddings, encoded, time.perf_counter() - start)
    store = store or item_store_for(dataset, DataConfig())
    transform = FrameTransform(frame_size, squash=squash, train=False)
    stream = ItemStream(store, transform, batch_size, rank, world_size)
    table = torch.zeros(num_items + 1, encoder.projection.out_features, device=device)
    hits = torch.zeros(num_items + 1, dtype=torch.int64, device=device)  # each item is one rank's
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # decode failures, items not read
    first_lost = ""
    for batch in item_loader(stream, num_workers, pin_memory=device.type == "cuda"):
        counts += torch.tensor([len(batch["failed"]), len(batch["lost_items"])], device=device)
        first_lost = first_lost or next(iter(batch["lost_items"]), "")
        if not len(batch["indices"]):
            continue
        indices = batch["indices"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            embeddings = encoder(indices, batch["clips"].to(device, non_blocking=True))
        table[indices] = embeddings.float()
        hits[indices] += 1
    if world_size > 1:
        dist.all_reduce(table)
        dist.all_reduce(hits)
        dist.all_reduce(counts)
    encoded = hits > 0
    encoded[0] = False
    failed, read_errors = (int(c) for c in counts.tolist())
    items = ItemTable(table, encoded, time.perf_counter() - start, failed, read_errors, first_lost)
    if items.not_encoded:
        missing = torch.nonzero(~encoded[1:]).flatten()[:10].add(1).tolist()
        log.warning(
            "%d of %d items could not be encoded (e.g. %s): they are not candidates",
            items.not_encoded,
            num_items,
            missing,
        )
    return items


def popularity_baseline(
    dataset: DatasetInfo,
    split: str,
    candidates: torch.Tensor | None = None,
    batch_size: int = 1024,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Metrics of ranking every user's candidates by training popularity (history masked, ties pessimistic).

    Each rank ranks its own users (call it on every rank: the counts are all-reduced) with a sorted
    search over the candidates' popularity: no ``[batch, N+1]`` scores.
    """
    ranker = PopularityRanker(torch.from_numpy(dataset.popularity), candidates)
    counts = RankCounts(CUTOFFS, dataset.rare_items(), seen_in_training(dataset), candidates)
    keep = None if candidates is None else candidates.cpu().numpy()
    for batch in rank_case_batches(dataset, split, rank, world_size, batch_size, 1, keep):
        counts.add(ranker(batch.targets, batch.histories), batch.targets)
    return _reduced(counts, world_size)


@torch.no_grad()
def score_split(
    model,
    dataset: DatasetInfo,
    split: str,
    items: ItemTable,
    *,
    max_seq_len: int,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    block: int = ITEM_BLOCK,
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on ``split`` (``valid`` or ``test``) against encoded ``items``.

    This rank's users only (``trainer.eval_cases``), ``block`` items at a time (``trainer.ranking``);
    call it on every rank. User states and scores are fp32: autocast is disabled here even inside an
    autocast region.
    """
    was_training = model.training
    model.eval()
    table = items.embeddings.float()
    candidates = items.encoded.to(device)
    counts = RankCounts(CUTOFFS, dataset.rare_items(), seen_in_training(dataset), candidates, device)
    batches = rank_case_batches(
        dataset, split, rank, world_size, batch_size, max_seq_len, items.encoded.cpu().numpy()
    )
    try:
        with torch.autocast(device.type, enabled=False):
            for batch in batches:
                targets = batch.targets.to(device)
                states = model.user_states(batch.windows.to(device), table).float()
                ranks = block_ranks(states, table, targets, batch.histories.to(device), candidates, block)
                counts.add(ranks, targets)
        return _reduced(counts, world_size)
    finally:
        model.train(was_training)
