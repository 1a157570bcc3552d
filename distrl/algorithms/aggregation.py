"""Loss aggregation: how a ``[B, T]`` matrix of per-token losses becomes one scalar.

The choice changes the gradient's weighting of long against short responses (Dr. GRPO,
arXiv 2503.20783; DAPO, arXiv 2503.14476 §3.3), so it is a config key, ``algorithm.loss_agg``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distrl.algorithms.registry import Registry

LOSS_AGGREGATIONS: Registry = Registry("loss aggregation")


@dataclass(frozen=True)
class Denominators:
    """The batch-level counts an aggregation divides by.

    When a batch is split into micro-batches (and across data-parallel ranks), pass the counts of
    the whole mini-batch so that the micro-batch losses add up to the mini-batch loss exactly.
    """

    num_seqs: float
    num_tokens: float
    max_len: float


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(loss_mat: torch.Tensor, mask: torch.Tensor, d: Denominators) -> torch.Tensor:
    """Σ_{i,t} ℓ_{i,t} / Σ_i |y_i| — every token weighs the same (DAPO's token-level loss)."""
    return (loss_mat * mask).sum() / max(d.num_tokens, 1.0)


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(loss_mat: torch.Tensor, mask: torch.Tensor, d: Denominators) -> torch.Tensor:
    """(1/B) Σ_i (1/|y_i|) Σ_t ℓ_{i,t} — every sequence weighs the same (GRPO paper, GSPO)."""
    per_seq = (loss_mat * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_seq.sum() / d.num_seqs


@LOSS_AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(loss_mat: torch.Tensor, mask: torch.Tensor, d: Denominators) -> torch.Tensor:
    """(1/B) Σ_i Σ_t ℓ_{i,t}."""
    return (loss_mat * mask).sum() / d.num_seqs


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss_mat: torch.Tensor, mask: torch.Tensor, d: Denominators) -> torch.Tensor:
    """Σ_{i,t} ℓ_{i,t} / (B·L), L = ``max_len`` or T — a constant denominator (Dr. GRPO)."""
    return (loss_mat * mask).sum() / (d.num_seqs * d.max_len)


def aggregate_loss(
    loss_mat: torch.Tensor,
    response_mask: torch.Tensor,
    mode: str,
    max_len: int | None = None,
    *,
    num_seqs: float | None = None,
    num_tokens: float | None = None,
) -> torch.Tensor:
    """Aggregate per-token losses ``[B, T]`` to a scalar with the registered ``mode``.

    ``num_seqs`` and ``num_tokens`` default to this batch's B and valid-token count; pass the
    enclosing mini-batch's counts when aggregating one micro-batch of it, so that the micro-batch
    losses sum to the mini-batch loss.
    """
    mask = response_mask.to(loss_mat.dtype)
    counts = Denominators(
        num_seqs=float(num_seqs if num_seqs is not None else loss_mat.shape[0]),
        num_tokens=float(num_tokens if num_tokens is not None else mask.sum()),
        max_len=float(max_len if max_len is not None else loss_mat.shape[-1]),
    )
    return LOSS_AGGREGATIONS.get(mode)(loss_mat, mask, counts)
