"""The math of policy-gradient RL for language models: pure torch functions, no Ray, no vLLM.

Tensors are ``[B, T]`` with an explicit ``response_mask`` (1 on response tokens); log-probs are
of the sampled tokens; every loss is minimized (loss = − objective). Each config name is a key
in one of the registries below; the formulas and their sources are in the docstrings.

Where each formula lives:
    advantages.py      GRPO, Dr. GRPO, RLOO, PVPO, REINFORCE (+ +, + baseline), GAE
    policy_losses.py   PPO (+ dual clip), GSPO, GSPO-token, Clip-Cov, KL-Cov, TIS, IcePop
    kl.py              k1, k2, k3 (+ straight-through), adaptive KL coefficient
    aggregation.py     token-mean, seq-mean-token-mean, seq-mean-token-sum(-norm)
    value.py           clipped value loss
    shaping.py         DAPO overlong penalty and dynamic-sampling filter
    entropy.py         token covariance, entropy and log-probs from logits
"""

from distrl.algorithms.advantages import ADVANTAGE_ESTIMATORS, compute_advantages
from distrl.algorithms.aggregation import LOSS_AGGREGATIONS, aggregate_loss
from distrl.algorithms.entropy import entropy_from_logits, logprobs_from_logits, token_covariance
from distrl.algorithms.kl import KL_ESTIMATORS, adaptive_kl_coef, kl_penalty
from distrl.algorithms.masked import masked_mean, masked_whiten
from distrl.algorithms.policy_losses import POLICY_LOSSES, ROLLOUT_CORRECTIONS, policy_loss
from distrl.algorithms.registry import INPUTS, Registry, UnknownNameError
from distrl.algorithms.shaping import group_filter, overlong_penalty
from distrl.algorithms.value import value_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "INPUTS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "POLICY_LOSSES",
    "ROLLOUT_CORRECTIONS",
    "Registry",
    "UnknownNameError",
    "adaptive_kl_coef",
    "aggregate_loss",
    "compute_advantages",
    "entropy_from_logits",
    "group_filter",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_whiten",
    "overlong_penalty",
    "policy_loss",
    "token_covariance",
    "value_loss",
]
