"""Loss aggregation: how a ``[B, T]`` matrix of per-token losses becomes one scalar.

The choice changes the gradient's weighting of long against short responses (Dr. GRPO,
arXiv 2503.20783; DAPO, arXiv 2503.14476 §3.3), so it is a config key, ``algorithm.loss_agg``.
"""

from __future__ import annotations

import torch

from distrl.algorithms.registry import Registry

LOSS_AGGREGATIONS: Registry = Registry("loss aggregation")


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(loss_mat: torch.Tensor, mask: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Σ_{i,t} ℓ_{i,t} / Σ_i |y_i| — every token weighs the same (DAPO's token-level loss)."""
    return (loss_mat * mask).sum() / mask.sum().clamp(min=1.0)


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(loss_mat: torch.Tensor, mask: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(1/B) Σ_i (1/|y_i|) Σ_t ℓ_{i,t} — every sequence weighs the same (GRPO paper, GSPO)."""
    per_seq = (loss_mat * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_seq.mean()


@LOSS_AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(loss_mat: torch.Tensor, mask: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(1/B) Σ_i Σ_t ℓ_{i,t}."""
    return (loss_mat * mask).sum(-1).mean()


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss_mat: torch.Tensor, mask: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Σ_{i,t} ℓ_{i,t} / (B·L), L = ``max_len`` or T — a constant denominator (Dr. GRPO)."""
    length = max_len if max_len is not None else loss_mat.shape[-1]
    return (loss_mat * mask).sum() / (loss_mat.shape[0] * length)


def aggregate_loss(
    loss_mat: torch.Tensor, response_mask: torch.Tensor, mode: str, max_len: int | None = None
) -> torch.Tensor:
    """Aggregate per-token losses ``[B, T]`` to a scalar with the registered ``mode``."""
    return LOSS_AGGREGATIONS.get(mode)(loss_mat, response_mask.to(loss_mat.dtype), max_len)
