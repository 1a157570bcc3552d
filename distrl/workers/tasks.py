"""Stateless Ray tasks on trajectory batches, so the controller never holds the tensors.

:func:`assemble` stacks the samples that dynamic sampling kept; :func:`prepare_update` joins the
per-rank log-probs and values into the batch, shapes the token rewards (score on the last token,
−β·KL_t when the KL term is in the reward) and computes advantages with :mod:`distrl.algorithms`.
They run wherever Ray schedules them; the controller passes references in and gets a reference
and a few numbers back.
"""

from __future__ import annotations

import ray
import torch

from distrl.algorithms import compute_advantages, kl_penalty, masked_mean
from distrl.config import AlgorithmConfig
from distrl.data.batch import TrajectoryBatch


def _join(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Concatenate per-rank ``[shard, T_shard]`` tensors into ``[B, width]``."""
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


@ray.remote(num_cpus=0)
def assemble(parts: list[tuple[ray.ObjectRef, list[int]]]) -> TrajectoryBatch:
    """Concatenate ``batch.select(indices)`` over ``(batch_ref, indices)`` parts (refs nested in
    a list reach the task unresolved, so only the kept samples are copied)."""
    return TrajectoryBatch.concat([ray.get(ref).select(indices) for ref, indices in parts])


def _baseline(batch: TrajectoryBatch, values: dict[int, float] | None) -> torch.Tensor | None:
    """Each sample's pre-estimated prompt value (PVPO), looked up by its prompt's dataset index."""
    if values is None:
        return None
    return torch.tensor([values.get(i, 0.0) for i in batch.meta["prompt_indices"]])


@ray.remote(num_cpus=0, num_returns=2)
def prepare_update(
    batch: TrajectoryBatch,
    old_parts: list,
    ref_parts: list | None,
    value_parts: list | None,
    alg: AlgorithmConfig,
    kl_coef: float,
    baselines: dict[int, float] | None = None,
) -> tuple[TrajectoryBatch, dict[str, float]]:
    """The batch with ``old_logprobs``, ``ref_logprobs``, ``values``, ``token_rewards``,
    ``advantages`` and ``returns``; and the metrics of this step's rewards and KL."""
    width = batch.response_ids.shape[1]
    mask = batch.response_mask
    batch.token["old_logprobs"] = _join(ray.get(old_parts), width)
    metrics = {}
    last = (batch.response_lengths.long() - 1).clamp(min=0)
    rewards = torch.zeros_like(mask)
    rewards[torch.arange(len(batch)), last] = batch.sample["scores"]
    if ref_parts is not None:
        batch.token["ref_logprobs"] = _join(ray.get(ref_parts), width)
        kl = kl_penalty(batch.token["old_logprobs"], batch.token["ref_logprobs"], alg.kl.estimator) * mask
        metrics["policy/kl_ref"] = float(masked_mean(kl, mask))
        if alg.kl.in_reward:
            rewards = rewards - kl_coef * kl
    if value_parts is not None:
        batch.token["values"] = _join(ray.get(value_parts), width)
    batch.token["token_rewards"] = rewards
    advantages, returns = compute_advantages(
        alg.advantage,
        token_rewards=rewards,
        response_mask=mask,
        group_ids=batch.meta["group_ids"],
        values=batch.token.get("values"),
        gamma=alg.gamma,
        lam=alg.lam,
        norm_by_std=alg.norm_by_std,
        eps=alg.std_eps,
        whiten=alg.whiten,
        baseline=_baseline(batch, baselines),
    )
    batch.token.update(advantages=advantages, returns=returns)
    diff = (batch.token["old_logprobs"] - batch.token["rollout_logprobs"]).abs()
    metrics["rollout/logprob_diff"] = float(masked_mean(diff, mask))
    metrics["advantages/mean"] = float(masked_mean(advantages, mask))
    return batch, metrics
