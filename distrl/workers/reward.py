"""Reward role: scores responses off the learner's critical path and applies DAPO's soft overlong
punishment. Returns the scored batch and a small summary the controller reads (scores per sample,
for dynamic sampling and metrics)."""

from __future__ import annotations

import ray
import torch

from distrl.algorithms import overlong_penalty
from distrl.config import Config
from distrl.data.batch import TrajectoryBatch
from distrl.rewards import RewardScorer, Sample
from distrl.workers.timing import BusyClock, busy


@ray.remote
class RewardWorker(BusyClock):
    """One scorer actor (rule verifiers, a user function, or a reward model)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.scorer = RewardScorer(
            function=cfg.reward.function, model_path=cfg.reward.model_path, batched=cfg.reward.batched
        )

    @busy("reward")  # outside ray.method: Ray reads num_returns from the unwrapped function
    @ray.method(num_returns=2)
    def score(self, batch: TrajectoryBatch) -> tuple[TrajectoryBatch, dict]:
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
            max_len = overlong.max_len or self.cfg.rollout.max_new_tokens
            buffer = overlong.buffer_len or max(1, max_len // 5)
            penalty = overlong_penalty(
                batch.response_lengths, max_len=max_len, buffer_len=buffer, factor=overlong.factor
            )
            scores = scores + penalty.float()
        accuracy = torch.tensor([float("nan") if a is None else a for a in result.accuracy], dtype=torch.float32)
        batch.sample.update(scores=scores, raw_scores=raw, accuracy=accuracy)
        summary = {
            "scores": scores.tolist(),
            "raw_scores": result.scores,
            "accuracy": accuracy.tolist(),
            "lengths": batch.response_lengths.tolist(),
            "prompt_lengths": batch.prompt_mask.sum(-1).float().tolist(),
            "truncated": batch.sample["truncated"].tolist(),
            "policy_versions": batch.sample["policy_version"].tolist(),
            "group_ids": m["group_ids"],
            "errors": result.errors,
            "first_error": result.first_error,
        }
        return batch, summary
