"""KL estimators and the adaptive KL coefficient.

With samples drawn from π_θ and d = ℓ^θ − ℓ^ref (log-probs of the sampled tokens), these are
Schulman's estimators of the reverse KL(π_θ ‖ π_ref) (joschu.net/blog/kl-approx.html); k3 is the
"unbiased estimator" of the GRPO paper (arXiv 2402.03300, Eq. 4).
"""

from __future__ import annotations

import torch

from distrl.algorithms.registry import Registry

KL_ESTIMATORS: Registry = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(d: torch.Tensor) -> torch.Tensor:
    """k1 = d: unbiased, high variance, can be negative; its gradient has zero mean."""
    return d


@KL_ESTIMATORS.register("k2")
def k2(d: torch.Tensor) -> torch.Tensor:
    """k2 = d²/2: biased, low variance; its gradient is an unbiased estimate of ∇KL(π_θ‖π_ref)."""
    return 0.5 * d.square()


@KL_ESTIMATORS.register("k3")
def k3(d: torch.Tensor) -> torch.Tensor:
    """k3 = exp(−d) − 1 + d: unbiased, low variance, always ≥ 0."""
    return torch.expm1(-d) + d


@KL_ESTIMATORS.register("k3+")
def k3_straight_through(d: torch.Tensor) -> torch.Tensor:
    """Value of k3, gradient of k2: k2 − sg[k2] + sg[k3] (an unbiased reverse-KL gradient)."""
    value_k2 = k2(d)
    return value_k2 - value_k2.detach() + k3(d).detach()


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL estimate ``[B, T]`` with d = ``logprobs`` − ``ref_logprobs``.

    As a loss (GRPO) pass the current log-probs, which carry gradient; in the reward (PPO,
    REINFORCE++) pass the old log-probs, detached.
    """
    return KL_ESTIMATORS.get(estimator)(logprobs - ref_logprobs)


def adaptive_kl_coef(coef: float, observed_kl: float, *, target: float, horizon: int, n_steps: int) -> float:
    """Ziegler et al. (arXiv 1909.08593) adaptive controller, one update.

    e = clip(KL / KL_target − 1, −0.2, 0.2);  β ← β · (1 + e · n_steps / horizon).
    """
    error = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_steps / horizon)
