"""Advantage estimators, keyed by ``algorithm.advantage``.

Each estimator receives per-token rewards ``[B, T]`` (a verifier's score sits on the last response
token; shaping such as −β·KL may sit on every token) and returns ``(advantages, returns)``, both
``[B, T]`` and zero on padding. The score of a sample is the sum of its token rewards. Samples of
one prompt share a ``group_ids`` entry.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from distrl.algorithms.masked import masked_whiten
from distrl.algorithms.registry import Registry

ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")


def _group_index(group_ids: Sequence[Hashable] | None, batch: int, device: torch.device) -> torch.Tensor:
    if group_ids is None:
        raise ValueError("this advantage estimator needs group_ids (one id per sample, shared by a prompt's samples)")
    if len(group_ids) != batch:
        raise ValueError(f"group_ids has {len(group_ids)} entries for a batch of {batch}")
    first_seen: dict[Hashable, int] = {}
    return torch.tensor([first_seen.setdefault(g, len(first_seen)) for g in group_ids], device=device)


def _group_sum(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Σ of x over each sample's group, gathered back to ``[B]``."""
    sums = torch.zeros(int(index.max()) + 1, dtype=x.dtype, device=x.device).index_add_(0, index, x)
    return sums[index]


def _scores(token_rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    return (token_rewards * response_mask).sum(-1)


def _broadcast(per_sample: torch.Tensor, response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    adv = per_sample[:, None] * response_mask
    return adv, adv


@ADVANTAGE_ESTIMATORS.register("grpo", needs=("group_ids",), reads=("norm_by_std", "std_eps"))
def grpo(
    *, token_rewards, response_mask, group_ids, norm_by_std: bool = True, std_eps: float = 1e-6, **_
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantage (arXiv 2402.03300 §4.1.2): Â_i = (r_i − mean(r)) / (std(r) + ε).

    std is Bessel-corrected (N−1); ``norm_by_std=False`` drops the division (Dr. GRPO). A group
    of one sample gets 0.
    """
    scores = _scores(token_rewards, response_mask)
    index = _group_index(group_ids, scores.shape[0], scores.device)
    count = _group_sum(torch.ones_like(scores), index)
    centered = scores - _group_sum(scores, index) / count
    adv = centered
    if norm_by_std:
        var = _group_sum(centered.square(), index) / (count - 1).clamp(min=1.0)
        adv = centered / (var.sqrt() + std_eps)
    return _broadcast(torch.where(count > 1, adv, torch.zeros_like(adv)), response_mask)


@ADVANTAGE_ESTIMATORS.register("dr_grpo", needs=("group_ids",))
def dr_grpo(*, token_rewards, response_mask, group_ids, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """Dr. GRPO (arXiv 2503.20783): Â_i = r_i − mean(r), no division by the group std."""
    return grpo(token_rewards=token_rewards, response_mask=response_mask, group_ids=group_ids, norm_by_std=False)


@ADVANTAGE_ESTIMATORS.register("rloo", needs=("group_ids",))
def rloo(*, token_rewards, response_mask, group_ids, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO (arXiv 2402.14740): Â_i = r_i − (1/(G−1)) Σ_{j≠i} r_j = G/(G−1)·(r_i − r̄); 0 if G = 1."""
    scores = _scores(token_rewards, response_mask)
    index = _group_index(group_ids, scores.shape[0], scores.device)
    count = _group_sum(torch.ones_like(scores), index)
    others_mean = (_group_sum(scores, index) - scores) / (count - 1).clamp(min=1.0)
    adv = torch.where(count > 1, scores - others_mean, torch.zeros_like(scores))
    return _broadcast(adv, response_mask)


@ADVANTAGE_ESTIMATORS.register("pvpo", needs=("prompt_values",))
def pvpo(*, token_rewards, response_mask, baseline, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """PVPO (arXiv 2508.21104 §4): Â_i = r_i − V̂_sta(x), the reference policy's mean reward on x.

    ``baseline`` is ``[B]``: each sample's pre-estimated prompt value. No group mean, no std.
    """
    if baseline is None:
        raise ValueError("the pvpo advantage needs baseline: a [B] tensor of pre-estimated prompt values")
    scores = _scores(token_rewards, response_mask)
    return _broadcast(scores - baseline.to(scores), response_mask)


def _discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = Σ_{k≥t} γ^{k−t} r_k over response tokens; masked positions are skipped, not discounted."""
    running = torch.zeros_like(rewards[:, 0])
    returns = torch.zeros_like(rewards)
    valid = mask.bool()
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(valid[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    return returns * mask


@ADVANTAGE_ESTIMATORS.register("reinforce", reads=("gamma",))
def reinforce(*, token_rewards, response_mask, gamma: float = 1.0, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE with reward-to-go (Williams 1992): A_t = G_t = Σ_{k≥t} γ^{k−t} r_k."""
    returns = _discounted_returns(token_rewards * response_mask, response_mask, gamma)
    return returns, returns


@ADVANTAGE_ESTIMATORS.register("reinforce_pp", reads=("gamma",))
def reinforce_pp(*, token_rewards, response_mask, gamma: float = 1.0, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (arXiv 2501.03262): G_t as in REINFORCE (token rewards carry −β·KL_t), then
    A = (G − mean_batch G) / std_batch G over all valid tokens (unbiased variance). Returns stay G.
    """
    returns = _discounted_returns(token_rewards * response_mask, response_mask, gamma)
    return masked_whiten(returns, response_mask), returns


@ADVANTAGE_ESTIMATORS.register("reinforce_pp_baseline", needs=("group_ids",))
def reinforce_pp_baseline(*, token_rewards, response_mask, group_ids, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline (arXiv 2501.03262): A = r − mean_group(r) broadcast to every token, then
    whitened over all valid tokens of the batch (unbiased variance). Returns are the unwhitened A.
    """
    centered, _ = dr_grpo(token_rewards=token_rewards, response_mask=response_mask, group_ids=group_ids)
    return masked_whiten(centered, response_mask), centered


@ADVANTAGE_ESTIMATORS.register("gae", needs=("values",), reads=("gamma", "lam", "whiten"))
def gae(
    *,
    token_rewards,
    response_mask,
    values,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = True,
    **_,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (arXiv 1506.02438).

    δ_t = r_t + γ·V_{t+1} − V_t (V after the last response token = 0);  A_t = δ_t + γλ·A_{t+1};
    returns = A + V before whitening; A is whitened over the valid tokens when ``whiten``.
    Masked positions are skipped, not discounted.
    """
    if values is None:
        raise ValueError("the gae advantage needs values from a critic")
    valid = response_mask.bool()
    rewards = token_rewards * response_mask
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        next_adv = torch.where(valid[:, t], adv_t, next_adv)
        next_value = torch.where(valid[:, t], values[:, t], next_value)
        advantages[:, t] = adv_t
    advantages = advantages * response_mask
    returns = (advantages + values) * response_mask
    if whiten:
        advantages = masked_whiten(advantages, response_mask)
    return advantages, returns


def compute_advantages(
    estimator: str,
    *,
    token_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable] | None = None,
    values: torch.Tensor | None = None,
    baseline: torch.Tensor | None = None,
    **params: float | bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, returns)`` ``[B, T]`` from the estimator registered as ``estimator``; ``params``
    are the config fields it reads (``gamma``, ``lam``, ``whiten``, ``norm_by_std``, ``std_eps``)."""
    fn = ADVANTAGE_ESTIMATORS.get(estimator)
    mask = response_mask.to(token_rewards.dtype)
    return fn(
        token_rewards=token_rewards,
        response_mask=mask,
        group_ids=group_ids,
        values=values,
        baseline=baseline,
        **params,
    )
