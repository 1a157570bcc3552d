"""Batch role: joins and prepares trajectory batches between the other roles, so the controller
never holds the tensors.

:func:`assemble` stacks the samples that dynamic sampling kept; :func:`prepare_update` joins the
per-rank log-probs and values into the batch, shapes the token rewards (score on the last token,
−β·KL_t when the KL term is in the reward) and computes advantages with :mod:`distrl.algorithms`.
Both are pure functions; :class:`BatchWorker` runs them in a long-lived actor that needs no CPU
reservation. (As Ray tasks they paid a fresh worker process's start-up, about 1.5 s with torch,
whenever Ray had recycled its idle workers, which it does after a second.) The controller passes
references in and gets a reference and a few numbers back.
"""

from __future__ import annotations

import ray
import torch

from distrl.algorithms import compute_advantages, kl_penalty, masked_mean
from distrl.config import AlgorithmConfig
from distrl.data.batch import TrajectoryBatch
from distrl.workers.timing import BusyClock, busy


def _join(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Concatenate per-rank ``[shard, T_shard]`` tensors into ``[B, width]``."""
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


def assemble(parts: list[tuple[TrajectoryBatch, list[int]]]) -> TrajectoryBatch:
    """Concatenate ``batch.select(indices)`` over ``(batch, indices)`` parts."""
    return TrajectoryBatch.concat([batch.select(indices) for batch, indices in parts])


def _baseline(batch: TrajectoryBatch, values: dict[int, float] | None) -> torch.Tensor | None:
    """Each sample's pre-estimated prompt value (PVPO), looked up by its prompt's dataset index."""
    if values is None:
        return None
    return torch.tensor([values.get(i, 0.0) for i in batch.meta["prompt_indices"]])


def prepare_update(
    batch: TrajectoryBatch,
    old_parts: list[torch.Tensor] | None,
    ref_parts: list[torch.Tensor] | None,
    value_parts: list[torch.Tensor] | None,
    alg: AlgorithmConfig,
    kl_coef: float,
    baselines: dict[int, float] | None = None,
) -> tuple[TrajectoryBatch, dict[str, float]]:
    """The batch with ``old_logprobs`` (when the old-log-prob pass ran), ``ref_logprobs``,
    ``values`` (each joined from its per-rank parts), ``token_rewards``, ``advantages`` and
    ``returns``; and the metrics of this step's rewards and KL (``policy/kl_ref`` and
    ``rollout/logprob_diff`` need π_old: without the pass, the learner's update reports them)."""
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
            kl = kl_penalty(batch.token["old_logprobs"], batch.token["ref_logprobs"], alg.kl.estimator) * mask
            metrics["policy/kl_ref"] = float(masked_mean(kl, mask))
            if alg.kl.in_reward:
                rewards = rewards - kl_coef * kl
    if value_parts is not None:
        batch.token["values"] = _join(value_parts, width)
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
    metrics["advantages/mean"] = float(masked_mean(advantages, mask))
    return batch, metrics


def _resolve(parts: list[ray.ObjectRef] | None) -> list | None:
    return None if parts is None else ray.get(parts)


@ray.remote(num_cpus=0)
class BatchWorker(BusyClock):
    """Runs :func:`assemble` and :func:`prepare_update` on object references (refs nested in lists
    arrive unresolved: only the kept samples of a generated batch are copied)."""

    @busy("assemble")
    def assemble(self, parts: list[tuple[ray.ObjectRef, list[int]]]) -> TrajectoryBatch:
        return assemble([(ray.get(ref), indices) for ref, indices in parts])

    @busy("advantages")  # outside ray.method: Ray reads num_returns from the unwrapped function
    @ray.method(num_returns=2)
    def prepare_update(
        self,
        batch: TrajectoryBatch,
        old_parts: list[ray.ObjectRef] | None,
        ref_parts: list[ray.ObjectRef] | None,
        value_parts: list[ray.ObjectRef] | None,
        alg: AlgorithmConfig,
        kl_coef: float,
        baselines: dict[int, float] | None = None,
    ) -> tuple[TrajectoryBatch, dict[str, float]]:
        return prepare_update(
            batch, _resolve(old_parts), _resolve(ref_parts), _resolve(value_parts), alg, kl_coef, baselines
        )
