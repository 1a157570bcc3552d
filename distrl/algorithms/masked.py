"""Reductions over the valid (response) tokens of a ``[B, T]`` tensor."""

from __future__ import annotations

import torch

WHITEN_EPS = 1e-8


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ x·m / Σ m over ``dim`` (all elements when ``dim`` is None); 0 where Σ m = 0."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (N−1) variance of the valid elements; 0 when fewer than two are valid."""
    mask = mask.to(x.dtype)
    n = mask.sum()
    if n < 2:
        return x.new_zeros(())
    centered = (x - masked_mean(x, mask)) * mask
    return (centered**2).sum() / (n - 1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x − μ) / sqrt(σ² + 1e-8) over the valid elements (σ² unbiased), zero on padding."""
    mean = masked_mean(x, mask)
    return (x - mean) * torch.rsqrt(masked_var(x, mask) + WHITEN_EPS) * mask.to(x.dtype)
