"""Next-item softmax losses for SASRec-style training.

``in_batch_softmax_loss`` is the paper's loss: every position's next item is classified
among all distinct items of the batch (optionally of all DDP ranks' batches), with
logQ correction (logits minus log item popularity, so popular items are not over-
penalised for appearing as negatives more often) and with the user's own window items
masked out, except the label. ``full_softmax_loss`` scores against every item.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

MASKED = -1e9


def log_popularity(popularity: torch.Tensor) -> torch.Tensor:
    """log q(item) from training counts, +1 smoothed; index 0 (padding) included."""
    counts = popularity.double() + 1
    return (counts / counts.sum()).log().float()


def _first_occurrence(values: torch.Tensor) -> torch.Tensor:
    """Bool mask of each value's first position in ``values``."""
    _, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(len(values), device=values.device)
    first = torch.full((int(inverse.max()) + 1,), len(values), device=values.device, dtype=positions.dtype)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return first[inverse] == positions


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's tensor."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads).contiguous()
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_candidates(items: torch.Tensor, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's candidates followed by every other rank's (gradients flow to this rank's copy).

    Ranks may hold different numbers of candidates: they are padded with item 0 to the largest.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([len(items)], device=items.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    width = int(max(c.item() for c in counts))
    padded_items = F.pad(items, (0, width - len(items)))
    padded_embeddings = F.pad(embeddings, (0, 0, 0, width - len(items)))
    all_items = [torch.zeros_like(padded_items) for _ in range(world)]
    dist.all_gather(all_items, padded_items)
    all_embeddings = list(_AllGather.apply(padded_embeddings))
    others = [r for r in range(world) if r != rank]
    items_out = torch.cat([items] + [all_items[r] for r in others])
    embeddings_out = torch.cat([embeddings] + [all_embeddings[r] for r in others])
    return items_out, embeddings_out


def in_batch_softmax_loss(
    states: torch.Tensor,
    items: torch.Tensor,
    candidates: torch.Tensor,
    candidate_embeddings: torch.Tensor,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each position's next item among the candidates.

    ``states`` ``[B, L, d]``; ``items`` ``[B, L+1]`` (0 = pad; targets are ``items[:, 1:]``);
    ``candidates`` ``[K]`` item indices (0 = unused slot; duplicates after the first are
    ignored) with embeddings ``[K, d]``; ``log_q`` ``[N+1]`` or None to skip the correction.
    Every target must be among the candidates.
    """
    targets = items[:, 1:]
    valid = targets > 0
    usable = _first_occurrence(candidates) & (candidates > 0)
    logits = states[valid].float() @ candidate_embeddings.float().T
    if log_q is not None:
        logits = logits - log_q[candidates].unsqueeze(0)
    user = torch.arange(len(items), device=items.device).unsqueeze(1).expand_as(targets)[valid]
    in_window = (items.unsqueeze(-1) == candidates.view(1, 1, -1)).any(dim=1)
    target = targets[valid]
    is_label = (candidates.unsqueeze(0) == target.unsqueeze(1)) & usable.unsqueeze(0)
    if not bool(is_label.any(dim=1).all()):
        raise ValueError("a target item is missing from the candidates")
    hidden = (in_window[user] & ~is_label) | ~usable.unsqueeze(0)
    logits = logits.masked_fill(hidden, MASKED)
    return F.cross_entropy(logits, is_label.float().argmax(dim=1))


def full_softmax_loss(states: torch.Tensor, items: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's next item among all items (``item_table`` ``[N+1, d]``)."""
    targets = items[:, 1:]
    valid = targets > 0
    logits = states[valid].float() @ item_table.float().T
    logits[:, 0] = MASKED
    return F.cross_entropy(logits, targets[valid])
