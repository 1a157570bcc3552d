"""Policy losses, keyed by ``algorithm.policy_loss``.

Each registered loss maps log-probs ``[B, T]`` to per-token losses (loss = − objective) and says
which tokens its clipping bound; :func:`policy_loss` then applies the rollout importance weight
(truncated IS), aggregates with ``algorithm.loss_agg`` and computes the shared metrics.

Clipped surrogate (PPO, arXiv 1707.06347), per token, for a ratio ρ and advantage A:
    ℓ = max(−A·ρ, −A·clip(ρ, 1 − ε_low, 1 + ε_high)).
The clip binds (gradient 0) when A > 0 and ρ > 1 + ε_high, or A < 0 and ρ < 1 − ε_low.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from distrl.algorithms.aggregation import aggregate_loss
from distrl.algorithms.entropy import token_covariance
from distrl.algorithms.masked import masked_mean
from distrl.algorithms.registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss")
ROLLOUT_CORRECTIONS: Registry = Registry("rollout correction")

#: Log-ratios are clamped to this range before exp (as verl and OpenRLHF do) to avoid inf.
LOG_RATIO_CLAMP = 20.0
#: Upper clamp on the GSPO sequence log-ratio.
SEQ_LOG_RATIO_MAX = 10.0


class LossTerms(NamedTuple):
    """What a registered policy loss returns: per-token loss, the ratio it used, and its clips."""

    loss_mat: torch.Tensor
    ratio: torch.Tensor
    clipped: torch.Tensor
    extra: dict[str, torch.Tensor]


def _token_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    return torch.exp((logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss max(−A·ρ, −A·clip(ρ, 1−ε_low, 1+ε_high)), bool mask of binding clips)."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


@POLICY_LOSSES.register("ppo", reads=("clip_low", "clip_high", "clip_c"))
def ppo(*, logprobs, old_logprobs, advantages, response_mask, clip_low, clip_high, clip_c=None, **_) -> LossTerms:
    """PPO clipped surrogate on the token ratio w = exp(ℓ^θ − ℓ^old).

    Dual clip (arXiv 1912.09729), when ``clip_c`` (> 1) is given: tokens with A < 0 take
    min(ℓ, −c·A), capping the loss of a very large ratio at c·|A|.
    """
    ratio = _token_ratio(logprobs, old_logprobs)
    loss_mat, clipped = clipped_surrogate(ratio, advantages, clip_low, clip_high)
    extra = {}
    if clip_c is not None:
        cap = -clip_c * advantages
        dual = (advantages < 0) & (loss_mat > cap)
        loss_mat = torch.where(dual, cap, loss_mat)
        clipped = clipped | dual
        extra["policy/dual_clip_frac"] = masked_mean(dual.float(), response_mask)
    return LossTerms(loss_mat, ratio, clipped, extra)


def _sequence_log_ratio(logprobs, old_logprobs, response_mask) -> torch.Tensor:
    """log s_i = (1/|y_i|) Σ_t (ℓ^θ − ℓ^old), clamped above at 10, as ``[B, 1]``."""
    return masked_mean(logprobs - old_logprobs, response_mask, dim=-1).clamp(max=SEQ_LOG_RATIO_MAX)[:, None]


@POLICY_LOSSES.register("gspo", reads=("clip_low", "clip_high"))
def gspo(*, logprobs, old_logprobs, advantages, response_mask, clip_low, clip_high, **_) -> LossTerms:
    """GSPO (arXiv 2507.18071, Eq. 5-7): sequence ratio s_i = (π_θ(y_i|x)/π_old(y_i|x))^{1/|y_i|}.

    J = (1/G) Σ_i min(s_i·Â_i, clip(s_i, 1−ε_l, 1+ε_r)·Â_i). s_i is carried to every token of
    y_i, so with ``seq-mean-token-mean`` aggregation the value and gradient are the paper's:
    ∇ = (1/G) Σ_i s_i·Â_i·(1/|y_i|) Σ_t ∇ℓ^θ_{i,t} — every token of a response weighs the same.
    """
    seq_ratio = torch.exp(_sequence_log_ratio(logprobs, old_logprobs, response_mask)).expand_as(logprobs)
    loss_mat, clipped = clipped_surrogate(seq_ratio, advantages, clip_low, clip_high)
    return LossTerms(loss_mat, seq_ratio, clipped, {})


@POLICY_LOSSES.register("gspo_token", reads=("clip_low", "clip_high"))
def gspo_token(*, logprobs, old_logprobs, advantages, response_mask, clip_low, clip_high, **_) -> LossTerms:
    """GSPO-token (arXiv 2507.18071, Eq. 13): s_{i,t} = sg[s_i] · π_θ(y_{i,t}) / sg[π_θ(y_{i,t})].

    Its value is s_i on every token, its gradient that of ℓ^θ_{i,t} scaled by s_i; it admits
    per-token advantages and equals GSPO when Â_{i,t} = Â_i.
    """
    log_seq = _sequence_log_ratio(logprobs, old_logprobs, response_mask).detach()
    ratio = torch.exp(log_seq + logprobs - logprobs.detach())
    loss_mat, clipped = clipped_surrogate(ratio, advantages, clip_low, clip_high)
    return LossTerms(loss_mat, ratio, clipped, {})


def _count(fraction: float, n_valid: int, minimum: int) -> int:
    """max(minimum, 1, ⌊fraction·N⌋), at most N."""
    return min(n_valid, max(1, minimum, int(fraction * n_valid)))


@POLICY_LOSSES.register(
    "clip_cov",
    needs=("generator",),
    reads=("clip_low", "clip_high", "clip_c", "clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "cov_min_tokens"),
)
def clip_cov(
    *,
    logprobs,
    old_logprobs,
    advantages,
    response_mask,
    clip_low,
    clip_high,
    clip_c=None,
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    cov_min_tokens: int = 1,
    generator: torch.Generator | None = None,
    **_,
) -> LossTerms:
    """Clip-Cov (arXiv 2505.22617 §4): the PPO loss, except that of the tokens PPO did not clip with
    lb < Cov_i < ub, max(m, ⌊r·N⌋) drawn at random contribute no loss and no gradient (they still
    count in the aggregation denominator). Cov_i = (ℓ_i − mean ℓ)·(A_i − mean A), ℓ detached; N the
    response tokens of the call, m = ``cov_min_tokens`` (the paper's r assumes N ≈ 10⁶).
    """
    terms = ppo(
        logprobs=logprobs,
        old_logprobs=old_logprobs,
        advantages=advantages,
        response_mask=response_mask,
        clip_low=clip_low,
        clip_high=clip_high,
        clip_c=clip_c,
    )
    cov = token_covariance(logprobs.detach(), advantages, response_mask)
    eligible = response_mask.bool() & (cov > clip_cov_lb) & (cov < clip_cov_ub) & ~terms.clipped
    candidates = eligible.flatten().nonzero().squeeze(-1)
    n_pick = min(_count(clip_cov_ratio, int(response_mask.sum()), cov_min_tokens), candidates.numel())
    order = torch.randperm(candidates.numel(), generator=generator, device="cpu").to(candidates.device)
    detached = torch.zeros(eligible.numel(), dtype=torch.bool, device=eligible.device)
    detached[candidates[order[:n_pick]]] = True
    detached = detached.view_as(eligible)
    loss_mat = torch.where(detached, torch.zeros_like(terms.loss_mat), terms.loss_mat)
    extra = {**terms.extra, "policy/clip_cov_frac": masked_mean(detached.float(), response_mask)}
    return LossTerms(loss_mat, terms.ratio, terms.clipped, extra)


@POLICY_LOSSES.register("kl_cov", reads=("kl_cov_ratio", "kl_cov_coef", "cov_min_tokens"))
def kl_cov(
    *,
    logprobs,
    old_logprobs,
    advantages,
    response_mask,
    kl_cov_ratio: float = 2e-3,
    kl_cov_coef: float = 1.0,
    cov_min_tokens: int = 1,
    **_,
) -> LossTerms:
    """KL-Cov (arXiv 2505.22617 §4): every token takes −A·w (no clipping); the top max(m, ⌊k·N⌋)
    tokens by Cov_i (m = ``cov_min_tokens``) add β·|ℓ^θ − ℓ^old|, a KL penalty on the tokens that
    drive entropy down. The penalty has no gradient at ℓ^θ = ℓ^old: the update needs more than one
    optimizer step per batch (validation refuses one).
    """
    ratio = _token_ratio(logprobs, old_logprobs)
    loss_mat = -advantages * ratio
    valid = response_mask.bool()
    cov = token_covariance(logprobs.detach(), advantages, response_mask)
    n_pick = _count(kl_cov_ratio, int(valid.sum()), cov_min_tokens)
    top = torch.where(valid, cov, torch.full_like(cov, float("-inf"))).flatten().topk(n_pick).indices
    penalized = torch.zeros(cov.numel(), dtype=torch.bool, device=cov.device)
    penalized[top] = True
    penalized = penalized.view_as(cov)
    loss_mat = loss_mat + kl_cov_coef * penalized * (logprobs - old_logprobs).abs()
    extra = {"policy/kl_cov_frac": masked_mean(penalized.float(), response_mask)}
    return LossTerms(loss_mat, ratio, torch.zeros_like(valid), extra)


@ROLLOUT_CORRECTIONS.register("tis", needs=("rollout_logprobs",), reads=("tis_cap",))
def truncated_is(rho: torch.Tensor, *, tis_cap: float, **_) -> torch.Tensor:
    """Truncated importance sampling (Yao et al., "Your efficient RL framework secretly brings you
    off-policy RL training"): weight min(ρ_t, C), ρ_t = π_train(y_t)/π_rollout(y_t)."""
    return rho.clamp(max=tis_cap)


@ROLLOUT_CORRECTIONS.register("icepop", needs=("rollout_logprobs",))
def icepop(rho: torch.Tensor, *, icepop_low: float = 0.5, icepop_high: float = 5.0, **_) -> torch.Tensor:
    """IcePop (Ring-1T, arXiv 2510.18855): weight ρ_t if α ≤ ρ_t ≤ β, else 0 (the token is dropped)."""
    return torch.where((rho >= icepop_low) & (rho <= icepop_high), rho, torch.zeros_like(rho))


def policy_loss(
    mode: str,
    *,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
    agg: str = "token-mean",
    rollout_logprobs: torch.Tensor | None = None,
    tis_cap: float | None = None,
    rollout_correction: str = "tis",
    max_len: int | None = None,
    num_seqs: float | None = None,
    num_tokens: float | None = None,
    **params,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The policy loss registered as ``mode``, aggregated with ``agg``; returns (loss, metrics).

    With ``rollout_logprobs`` and ``tis_cap``, every per-token loss is multiplied by the detached
    weight min(exp(ℓ^old − ℓ^roll), C) (``rollout_correction="icepop"`` masks instead). ``params``
    carry loss-specific settings (``clip_cov_ratio``, ``kl_cov_ratio``, ``kl_cov_coef``, ``generator``…).
    ``max_len``, ``num_seqs``, ``num_tokens`` go to :func:`aggregate_loss` (micro-batch denominators).
    Metrics: ``policy/clip_frac`` (tokens whose clip binds), ``policy/clip_frac_low`` and
    ``policy/clip_frac_high``, ``policy/approx_kl`` (k3 estimate of KL(π_old‖π_θ)),
    ``policy/ratio_mean`` and ``policy/ratio_max`` over valid tokens.
    """
    mask = response_mask.to(logprobs.dtype)
    terms: LossTerms = POLICY_LOSSES.get(mode)(
        logprobs=logprobs,
        old_logprobs=old_logprobs,
        advantages=advantages,
        response_mask=mask,
        clip_low=clip_low,
        clip_high=clip_high,
        clip_c=clip_c,
        **params,
    )
    loss_mat = terms.loss_mat
    metrics = dict(terms.extra)
    if rollout_logprobs is not None and (tis_cap is not None or rollout_correction != "tis"):
        rho = torch.exp((old_logprobs - rollout_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        weight = ROLLOUT_CORRECTIONS.get(rollout_correction)(rho, tis_cap=tis_cap, **params).detach()
        loss_mat = loss_mat * weight
        metrics["policy/is_weight_mean"] = masked_mean(weight, mask)
    loss = aggregate_loss(loss_mat, mask, agg, max_len, num_seqs=num_seqs, num_tokens=num_tokens)
    with torch.no_grad():
        valid = mask.bool()
        delta = logprobs - old_logprobs
        positive = advantages > 0
        metrics["policy/clip_frac"] = masked_mean(terms.clipped.float(), mask)
        metrics["policy/clip_frac_high"] = masked_mean((terms.clipped & positive).float(), mask)
        metrics["policy/clip_frac_low"] = masked_mean((terms.clipped & ~positive).float(), mask)
        metrics["policy/approx_kl"] = masked_mean(torch.expm1(delta) - delta, mask)
        metrics["policy/ratio_mean"] = masked_mean(terms.ratio, mask)
        metrics["policy/ratio_max"] = terms.ratio[valid].max() if valid.any() else mask.new_zeros(())
    return loss, metrics
