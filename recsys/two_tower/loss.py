"""In-batch sampled softmax with logQ correction and a temperature.

Every other positive in the batch (and any extra sampled item) is a negative for a query.
Popular items appear as in-batch negatives more often than the softmax over the full
catalogue would weigh them; subtracting log q(item) — the item's chance of being sampled —
removes that bias (Yi et al., "Sampling-bias-corrected neural modeling", RecSys 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sampled_softmax_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    item_ids: torch.Tensor,
    log_q: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """Mean cross-entropy of each query against its positive among all batch items.

    Args:
        users: (B, D) query vectors; query ``b``'s positive is ``items[b]``.
        items: (N, D) item vectors, N >= B (rows after B are extra negatives).
        item_ids: (N,) catalogue rows, to mask accidental hits (the same item as the positive).
        log_q: (N,) log sampling probability per item row, or None for no correction.
        temperature: logits are ``u . v / temperature``.

    Returns:
        Scalar loss.
    """
    b = users.shape[0]
    logits = users @ items.T / temperature
    if log_q is not None:
        logits = logits - log_q[None, :]
    positive = torch.arange(b, device=users.device)
    # The positive item appearing elsewhere in the batch is not a negative.
    same = item_ids[None, :] == item_ids[:b, None]
    same[positive, positive] = False
    logits = logits.masked_fill(same, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, positive)


def log_sampling_probability(counts: torch.Tensor, rows: torch.Tensor, batch_size: int, extra: int, n_candidates: int) -> torch.Tensor:
    """log q for a batch: positives are drawn by purchase frequency, extras uniformly.

    Args:
        counts: (n_items,) training purchase counts (the positives' distribution).
        rows: (N,) catalogue rows of the batch items (positives then extras).
        batch_size: number of positives B.
        extra: number of uniformly sampled extras.
        n_candidates: size of the uniform negative pool.
    """
    p = counts[rows] / counts.sum().clamp_min(1.0)
    q_batch = (batch_size * p).clamp_min(1e-12)
    q_extra = extra / max(n_candidates, 1)
    return torch.log(q_batch + q_extra)
