"""Reward shaping and batch filters from DAPO (arXiv 2503.14476)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def overlong_penalty(lengths: torch.Tensor, *, max_len: int, buffer_len: int, factor: float = 1.0) -> torch.Tensor:
    """Soft overlong punishment (DAPO Eq. 13), ``[B]``, added to the sequence reward:

    0 if L ≤ L_max − L_cache;  −(L − (L_max − L_cache)) / L_cache · factor inside the buffer;
    −factor beyond L_max.
    """
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"buffer_len must be in (0, max_len={max_len}], got {buffer_len}")
    lengths = lengths.to(torch.float64)
    start = max_len - buffer_len
    inside = -(lengths - start) / buffer_len * factor
    penalty = torch.where(lengths <= start, torch.zeros_like(lengths), inside)
    return torch.where(lengths > max_len, torch.full_like(lengths, -factor), penalty)


def group_filter(scores: torch.Tensor, group_ids: Sequence[Hashable]) -> torch.Tensor:
    """DAPO dynamic sampling (Eq. 11, 0 < |{correct}| < G): bool ``[B]``, True for samples whose
    group has more than one sample and a non-zero spread of scores."""
    if len(group_ids) != scores.shape[0]:
        raise ValueError(f"group_ids has {len(group_ids)} entries for {scores.shape[0]} scores")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    keep = torch.zeros(scores.shape[0], dtype=torch.bool)
    for rows in members.values():
        group = scores[rows]
        keep[rows] = len(rows) > 1 and bool(group.max() > group.min())
    return keep.to(scores.device)
