"""The critic's loss for PPO with GAE."""

from __future__ import annotations

import torch

from distrl.algorithms.aggregation import aggregate_loss
from distrl.algorithms.masked import masked_mean


def value_loss(
    *,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    clip: float = 0.5,
    agg: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: ½·agg(max((V − R)², (clip(V, V_old − c, V_old + c) − R)²)).

    Metrics: ``critic/vf_clip_frac`` (tokens where the clipped branch is larger),
    ``critic/values_mean``.
    """
    mask = response_mask.to(values.dtype)
    unclipped = (values - returns).square()
    clipped_values = torch.maximum(torch.minimum(values, old_values + clip), old_values - clip)
    clipped = (clipped_values - returns).square()
    loss = 0.5 * aggregate_loss(torch.maximum(unclipped, clipped), mask, agg)
    with torch.no_grad():
        metrics = {
            "critic/vf_clip_frac": masked_mean((clipped > unclipped).float(), mask),
            "critic/values_mean": masked_mean(values, mask),
        }
    return loss, metrics
