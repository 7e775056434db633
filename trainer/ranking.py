"""Ranks of held-out targets against every candidate item, in item blocks, and exact metric counts.

Same semantics as :func:`trainer.evaluate.ranks_of_targets` (fp32 scores; a target's rank is the
number of *other* candidate items scoring at least as high, a NaN score counting against it; items of
the user's history are not candidates; an unrankable target gets ``MISS``), without ever holding more
than ``batch x block`` scores: items are scored a block at a time and each block's items at least as
high as the target are counted, less the history items of the block.

Metrics are kept as integer counts (users per group, and how many targets sit at each rank below the
largest cutoff), so sums over batches and ranks are exact whatever the order: two ranks give the
one-rank numbers bit for bit.
"""

from __future__ import annotations

import math

import torch

MISS = 2**62
"""Rank given to a target that cannot be ranked (not encodable, NaN score): beyond every cutoff."""
ITEM_BLOCK = 4096
"""Items scored at once: scores held at a time are ``batch x ITEM_BLOCK`` fp32."""


def other_history_items(
    histories: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """``histories`` with 0 in place of the target, non-candidates and repeats: the distinct items
    that a rank must not count (0 = none)."""
    others = histories.masked_fill((histories == targets.unsqueeze(1)) | ~candidates[histories], 0)
    others, _ = others.sort(dim=1)
    repeat = torch.zeros_like(others, dtype=torch.bool)
    repeat[:, 1:] = others[:, 1:] == others[:, :-1]
    return others.masked_fill(repeat, 0)


def _ahead(behind: torch.Tensor, items: torch.Tensor, start: int) -> torch.Tensor:
    """How many of ``items`` (``[B, H]``, candidates only, 0 = none) fall in the block at ``start`` and are
    not ``behind`` the target."""
    local = items - start
    inside = (local >= 0) & (local < behind.shape[1]) & (items > 0)
    return (~behind.gather(1, local.clamp(0, behind.shape[1] - 1)) & inside).sum(dim=1)


def all_candidates(num_items: int, device: torch.device | None = None) -> torch.Tensor:
    candidates = torch.ones(num_items + 1, dtype=torch.bool, device=device)
    candidates[0] = False
    return candidates


@torch.no_grad()
def block_ranks(
    states: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    histories: torch.Tensor,
    candidates: torch.Tensor | None = None,
    block: int = ITEM_BLOCK,
) -> torch.Tensor:
    """Pessimistic 0-based ranks of ``targets`` under scores ``states @ table.T``, ``block`` items at a time.

    ``states`` ``[B, d]``, ``table`` ``[N+1, d]`` (row 0 padding, never a candidate), ``targets`` ``[B]``,
    ``histories`` ``[B, H]`` (0 = pad), ``candidates`` bool ``[N+1]`` (default: items 1..N).
    An item is counted when its score is not below the target's (``~(score < target)``: at least as
    high, or NaN); a target scoring NaN is a miss, as is one that is not a candidate.
    """
    states, table = states.float(), table.float()
    if candidates is None:
        candidates = all_candidates(len(table) - 1, table.device)
    candidates = candidates.clone()
    candidates[0] = False
    others = other_history_items(histories, targets, candidates)
    own = targets.masked_fill(~candidates[targets], 0).unsqueeze(1)
    target_scores = (states @ table[targets].T).diagonal().unsqueeze(1)
    ranks = torch.zeros(len(targets), dtype=torch.long, device=states.device)
    for start in range(0, len(table), block):
        allowed = candidates[start : start + block]
        # not behind = at least as high, or NaN (either side): ``~(score < target)``
        behind = (states @ table[start : start + block].T) < target_scores
        if not bool(allowed.all()):
            behind &= allowed
        ranks += int(allowed.sum()) - behind.count_nonzero(dim=1)
        ranks -= _ahead(behind, others, start) + _ahead(behind, own, start)
    unrankable = target_scores.squeeze(1).isnan() | ~candidates[targets]
    return ranks.masked_fill(unrankable, MISS)


class PopularityRanker:
    """Ranks under one score per item shared by every user (training popularity), without a score matrix:
    a target's rank is the number of candidates scoring at least as high (a sorted search), less the
    user's other history items that do."""

    def __init__(self, scores: torch.Tensor, candidates: torch.Tensor | None = None):
        self.scores = scores.double()
        self.candidates = (
            (all_candidates(len(scores) - 1) if candidates is None else candidates).clone().cpu()
        )
        self.candidates[0] = False
        self.sorted = self.scores[self.candidates].sort().values

    def __call__(self, targets: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        mine = self.scores[targets]
        at_least = len(self.sorted) - torch.searchsorted(self.sorted, mine, side="left")
        at_least -= self.candidates[targets].long()  # the target itself
        others = other_history_items(histories, targets, self.candidates)
        at_least -= ((self.scores[others] >= mine.unsqueeze(1)) & (others > 0)).sum(dim=1)
        unrankable = mine.isnan() | ~self.candidates[targets]
        return at_least.masked_fill(unrankable, MISS)


class RankCounts:
    """Integer counts of one evaluation: per group (all users, and ``rare`` / ``warm`` / ``new``
    targets when asked) the users and how many targets sit at each rank below ``max(cutoffs)``."""

    def __init__(
        self,
        cutoffs: tuple[int, ...],
        rare_items: torch.Tensor | None = None,
        seen_items: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
        device: torch.device | None = None,
    ):
        self.cutoffs, self.top = cutoffs, max(cutoffs)
        self.rare = None if rare_items is None else rare_items.to(device)
        self.seen = None if seen_items is None else seen_items.to(device)
        self.candidates = None if candidates is None else candidates.to(device)
        self.groups = (
            [""]
            + (["rare"] if self.rare is not None else [])
            + (["warm", "new"] if self.seen is not None else [])
        )
        # per group: ranks 0..top-1, then users; last row: targets not encoded
        self.counts = torch.zeros(len(self.groups) + 1, self.top + 1, dtype=torch.int64, device=device)

    def add(self, ranks: torch.Tensor, targets: torch.Tensor) -> None:
        masks = [torch.ones_like(targets, dtype=torch.bool)]
        if self.rare is not None:
            masks.append(self.rare[targets])
        if self.seen is not None:
            warm = self.seen[targets]
            masks += [warm, ~warm]
        for row, mask in enumerate(masks):
            chosen = ranks[mask]
            self.counts[row, : self.top] += torch.bincount(chosen[chosen < self.top], minlength=self.top)
            self.counts[row, self.top] += len(chosen)
        if self.candidates is not None:
            self.counts[-1, 0] += int((~self.candidates[targets]).sum())

    def sums(self) -> dict[str, float]:
        """Sums in :func:`trainer.evaluate.metric_sums`'s keys (HR, NDCG), from the counts."""
        counts = self.counts.cpu().tolist()
        out: dict[str, float] = {}
        for row, group in enumerate(self.groups):
            suffix = "/" + group if group else ""
            at = counts[row]
            out["users" + suffix] = float(at[self.top])
            for k in self.cutoffs:
                out[f"HR@{k}{suffix}"] = float(sum(at[:k]))
                out[f"NDCG@{k}{suffix}"] = math.fsum(at[r] / math.log2(r + 2) for r in range(k))
            if not group:
                out["targets_not_encoded"] = float(counts[-1][0])
        return out
