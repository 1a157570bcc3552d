"""Batch role: joins and prepares trajectory batches between the other roles, so the controller
never holds the tensors.

:func:`assemble` stacks the samples that the collector kept; :func:`prepare_update` joins the
per-rank log-probs and values into the batch, shapes the token rewards (score on the last token,
−β·KL_t when the KL term is in the reward) and computes advantages with :mod:`distrl.algorithms`.
Both are pure functions; :class:`BatchRole` holds the config's :class:`AdvantageSpec` and times
them. (On Ray it is a long-lived actor that reserves no CPU: as Ray tasks these functions paid a
fresh worker process's start-up, about 1.5 s with torch, whenever Ray had recycled its idle
workers.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from distrl.algorithms import ADVANTAGE_ESTIMATORS, compute_advantages, kl_penalty, masked_mean
from distrl.config import Config
from distrl.data.batch import TrajectoryBatch
from distrl.roles.timing import BusyClock, busy


@dataclass(frozen=True)
class AdvantageSpec:
    """The advantage estimator the config asks for, with the fields it reads, and the KL-in-reward term."""

    estimator: str
    params: dict[str, Any]
    needs: frozenset[str]
    kl_estimator: str
    kl_in_reward: bool

    @classmethod
    def from_config(cls, cfg: Config) -> AdvantageSpec:
        alg = cfg.algorithm
        return cls(
            estimator=alg.advantage,
            params=cfg.algorithm_params(ADVANTAGE_ESTIMATORS, alg.advantage),
            needs=ADVANTAGE_ESTIMATORS.needs(alg.advantage),
            kl_estimator=alg.kl.estimator,
            kl_in_reward=alg.kl.in_reward,
        )


def _join(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Concatenate per-rank ``[shard, T_shard]`` tensors into ``[B, width]``."""
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


def assemble(parts: list[tuple[TrajectoryBatch, list[int]]]) -> TrajectoryBatch:
    """Concatenate ``batch.select(indices)`` over ``(batch, indices)`` parts."""
    return TrajectoryBatch.concat([batch.select(indices) for batch, indices in parts])


def prepare_update(
    batch: TrajectoryBatch,
    old_parts: list[torch.Tensor] | None,
    ref_parts: list[torch.Tensor] | None,
    value_parts: list[torch.Tensor] | None,
    spec: AdvantageSpec,
    kl_coef: float,
    prompt_values: dict[int, float] | None = None,
) -> tuple[TrajectoryBatch, dict[str, float]]:
    """The batch with ``old_logprobs`` (when the old-log-prob pass ran), ``ref_logprobs``,
    ``values`` (each joined from its per-rank parts), ``token_rewards`` (the shaped score on the last
    response token, minus β·KL_t on every token when the KL term is in the reward), ``advantages`` and
    ``returns``; and the metrics of this step's advantages and KL (``policy/kl_ref`` and
    ``rollout/logprob_diff`` need π_old: without the pass, the learner's update reports them).
    ``prompt_values``: each prompt's value by dataset index, for estimators that need them (PVPO)."""
    width = batch.response_ids.shape[1]
    mask = batch.response_mask
    metrics = {}
    if old_parts is not None:
        batch.token["old_logprobs"] = _join(old_parts, width)
        diff = (batch.token["old_logprobs"] - batch.token["rollout_logprobs"]).abs()
        metrics["rollout/logprob_diff"] = float(masked_mean(diff, mask))
    last = (batch.response_lengths.long() - 1).clamp(min=0)
    rewards = torch.zeros_like(mask)
    rewards[torch.arange(len(batch)), last] = batch.sample["scores"]
    if ref_parts is not None:
        batch.token["ref_logprobs"] = _join(ref_parts, width)
        if old_parts is not None:
            kl = kl_penalty(batch.token["old_logprobs"], batch.token["ref_logprobs"], spec.kl_estimator) * mask
            metrics["policy/kl_ref"] = float(masked_mean(kl, mask))
            if spec.kl_in_reward:
                rewards = rewards - kl_coef * kl
    if value_parts is not None:
        batch.token["values"] = _join(value_parts, width)
    batch.token["token_rewards"] = rewards
    baseline = None
    if "prompt_values" in spec.needs:
        baseline = torch.tensor([(prompt_values or {}).get(i, 0.0) for i in batch.meta["prompt_indices"]])
    advantages, returns = compute_advantages(
        spec.estimator,
        token_rewards=rewards,
        response_mask=mask,
        group_ids=batch.meta["group_ids"],
        values=batch.token.get("values"),
        baseline=baseline,
        **spec.params,
    )
    batch.token.update(advantages=advantages, returns=returns)
    metrics["advantages/mean"] = float(masked_mean(advantages, mask))
    return batch, metrics


class BatchRole(BusyClock):
    """Runs :func:`assemble` and :func:`prepare_update` where the batches are."""

    def __init__(self, cfg: Config) -> None:
        self.spec = AdvantageSpec.from_config(cfg)

    @busy("assemble")
    def assemble(self, parts: list[tuple[TrajectoryBatch, list[int]]]) -> TrajectoryBatch:
        return assemble(parts)

    def head(self, batch: TrajectoryBatch, rows: int) -> TrajectoryBatch:
        """The first ``rows`` rows (a probe for the weight-sync check)."""
        return batch.select(list(range(min(rows, len(batch)))))

    @busy("advantages")
    def prepare_update(
        self,
        batch: TrajectoryBatch,
        old_parts: list[torch.Tensor] | None,
        ref_parts: list[torch.Tensor] | None,
        value_parts: list[torch.Tensor] | None,
        kl_coef: float,
        prompt_values: dict[int, float] | None = None,
    ) -> tuple[TrajectoryBatch, dict[str, float]]:
        return prepare_update(batch, old_parts, ref_parts, value_parts, self.spec, kl_coef, prompt_values)
