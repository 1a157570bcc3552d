"""Rewards: score decoded responses against ground truth; knows text, never Ray, vLLM or model internals.

:class:`RewardScorer` is the entry point. It scores with a user function (``path/to/file.py:fn``,
verl's signature, see :mod:`distrl.rewards.user`), a sequence-classification reward model
(:mod:`distrl.rewards.model`, which imports torch only when used), or the built-in verifier of each
sample's ``data_source`` (:data:`BUILTIN_VERIFIERS`, see :mod:`distrl.rewards.verifiers`). User
functions run in worker processes with a deadline per call (:mod:`distrl.rewards.isolated`).
"""

from distrl.rewards.base import Sample, ScoreResult
from distrl.rewards.isolated import Isolation
from distrl.rewards.model import RewardModelScorer
from distrl.rewards.scorer import RewardScorer
from distrl.rewards.user import load_user_function
from distrl.rewards.verifiers import BUILTIN_VERIFIERS

__all__ = [
    "BUILTIN_VERIFIERS",
    "Isolation",
    "RewardModelScorer",
    "RewardScorer",
    "Sample",
    "ScoreResult",
    "load_user_function",
]
