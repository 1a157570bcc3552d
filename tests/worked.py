"""The worked example of docs/algorithms.md §0 as padded ``[4, 4]`` float64 tensors."""

from __future__ import annotations

import torch

LENGTHS = [3, 2, 4, 1]
REWARDS = [1.0, 0.0, 0.0, 1.0]
GROUP = ["q", "q", "q", "q"]

OLD = [[-0.5, -1.0, -0.2], [-1.5, -0.7], [-0.4, -2.0, -0.1, -0.8], [-0.9]]
NEW = [[-0.3, -1.2, -0.2], [-1.2, -0.9], [-0.5, -1.7, -0.1, -1.0], [-0.6]]
REF = [[-0.6, -0.9, -0.3], [-1.4, -0.8], [-0.5, -2.2, -0.2, -0.7], [-1.0]]
ROLL = [[-0.55, -0.95, -0.2], [-0.7, -0.7], [-0.4, -2.9, -0.1, -2.5], [-0.9]]


def padded(rows: list[list[float]], fill: float = 0.0) -> torch.Tensor:
    """Right-pad ragged rows to ``[B, max_len]`` (float64)."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=torch.float64)


def mask() -> torch.Tensor:
    return padded([[1.0] * n for n in LENGTHS])


def terminal_rewards(scores: list[float] = REWARDS) -> torch.Tensor:
    """Each score on its response's last token."""
    return padded([[0.0] * (n - 1) + [s] for n, s in zip(LENGTHS, scores, strict=True)])


def per_sequence(values: list[float]) -> torch.Tensor:
    """One value per response, broadcast to its tokens."""
    return padded([[v] * n for n, v in zip(LENGTHS, values, strict=True)])


def unpad(x: torch.Tensor) -> list[list[float]]:
    return [x[i, :n].tolist() for i, n in enumerate(LENGTHS)]


A_GRPO = 0.5 / (0.5773502691896258 + 1e-6)  # (1 − 0.5) / (unbiased std + 1e-6)
