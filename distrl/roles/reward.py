"""Reward role: scores responses off the learner's critical path and applies DAPO's soft overlong
punishment. Returns the scored batch (which stays with the roles) and a :class:`RewardSummary`,
the few numbers per sample the controller reads (for dynamic sampling and metrics)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from distrl.algorithms import overlong_penalty
from distrl.config import Config
from distrl.data.batch import TrajectoryBatch
from distrl.rewards import Isolation, RewardScorer, Sample
from distrl.roles.timing import BusyClock, busy


@dataclass
class RewardSummary:
    """Per sample of one scored batch, in batch order: what the controller needs of it."""

    scores: list[float]
    """Reward after shaping (overlong), what the advantages use."""
    raw_scores: list[float]
    """Reward before shaping, what ``reward/mean`` reports."""
    accuracy: list[float]
    """1/0 where a verifier judged the response, NaN where none did."""
    lengths: list[float]
    prompt_lengths: list[float]
    truncated: list[float]
    policy_versions: list[float]
    group_ids: list[str]
    errors: int
    """Samples whose scoring failed (scored 0)."""
    timeouts: int
    """Of those, the calls past ``reward.timeout_s``."""
    first_error: str | None
    extras: dict[str, list[float]] = field(default_factory=dict)
    """A user function's other numeric dict keys per sample (NaN where a sample had none), for ``reward/<key>``."""
    examples: list[dict] = field(default_factory=list)
    """The first :data:`EXAMPLES_PER_BATCH` samples as text (prompt, response, ground truth, score), for
    ``trainer.log_samples_every``."""


#: Samples of each scored batch the controller receives as text (:attr:`RewardSummary.examples`).
EXAMPLES_PER_BATCH = 2


class Reward(BusyClock):
    """One scorer (rule verifiers, a user function, or a reward model)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        r = cfg.reward
        isolation = Isolation(cfg.reward_workers, r.timeout_s, r.memory_mb)
        self.scorer = RewardScorer(function=r.function, model_path=r.model_path, batched=r.batched, isolation=isolation,
                                   style=r.style)  # fmt: skip

    @busy("reward")
    def score(self, batch: TrajectoryBatch) -> tuple[TrajectoryBatch, RewardSummary]:
        """Adds ``scores`` (shaped), ``raw_scores`` and ``accuracy`` (NaN where unjudged) per sample."""
        m = batch.meta
        result = self.scorer.score(
            [
                Sample(prompt=p, response=r, data_source=d, ground_truth=g, extra_info=e)
                for p, r, d, g, e in zip(
                    m["prompt_texts"],
                    m["response_texts"],
                    m["data_sources"],
                    m["ground_truths"],
                    m["extra_infos"],
                    strict=True,
                )
            ]
        )
        raw = torch.tensor(result.scores, dtype=torch.float32)
        scores = raw.clone()
        overlong = self.cfg.algorithm.overlong
        if overlong is not None:
            max_len, buffer = overlong.lengths(self.cfg.rollout.max_new_tokens)
            penalty = overlong_penalty(
                batch.response_lengths, max_len=max_len, buffer_len=buffer, factor=overlong.factor
            )
            scores = scores + penalty.float()
        accuracy = torch.tensor([float("nan") if a is None else a for a in result.accuracy], dtype=torch.float32)
        batch.sample.update(scores=scores, raw_scores=raw, accuracy=accuracy)
        summary = RewardSummary(
            scores=scores.tolist(),
            raw_scores=list(result.scores),
            accuracy=accuracy.tolist(),
            lengths=batch.response_lengths.tolist(),
            prompt_lengths=batch.prompt_mask.sum(-1).float().tolist(),
            truncated=batch.sample["truncated"].tolist(),
            policy_versions=batch.sample["policy_version"].tolist(),
            group_ids=list(m["group_ids"]),
            errors=result.errors,
            timeouts=result.timeouts,
            first_error=result.first_error,
            extras={key: [math.nan if v is None else v for v in values] for key, values in result.extras.items()},
            examples=[
                {
                    "prompt": m["prompt_texts"][i],
                    "response": m["response_texts"][i],
                    "ground_truth": m["ground_truths"][i],
                    "score": result.scores[i],
                }
                for i in range(min(EXAMPLES_PER_BATCH, len(result.scores)))
            ],
        )
        if result.output:
            print(result.output, flush=True)
        return batch, summary

    def close(self) -> None:
        """Stop the reward worker processes."""
        self.scorer.close()
