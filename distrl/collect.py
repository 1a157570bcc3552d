"""Collectors: generation, scoring and filtering, until a step's batch is full.

:class:`Collector` fills one batch now (synchronous mode); :class:`OneStepOffCollector` returns the
batch it generated while the previous step trained and starts the next one (asynchronous mode, one
step off-policy). Nothing else in the step loop asks which mode runs. Filtering: dynamic sampling
(DAPO) drops prompts whose samples all score the same; prompts the reference policy always solves
are skipped when the advantage uses prompt values (PVPO).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import torch

from distrl.algorithms import group_filter
from distrl.backends import Backend, Handle, RoleGroup
from distrl.config import Config
from distrl.data.records import PromptRecord, PromptStream
from distrl.roles.reward import RewardSummary
from distrl.roles.timing import timed


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and where the last checkpoint is."""


@dataclass
class Collected:
    """One step's batch (a handle: it stays with the roles) and what the controller knows of it."""

    batch: Handle
    metrics: dict[str, float]
    timings: dict[str, float]
    oldest_version: int
    """The oldest policy version among the samples that were generated."""
    samples: int
    """Samples in the batch."""
    examples: list[dict]
    """A few of the step's samples as text (:attr:`RewardSummary.examples`)."""
    response_tokens: float
    prompt_tokens: float


@dataclass
class RolloutStats:
    """Every generated sample's summary of one step, kept or filtered."""

    raw_scores: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    prompt_lengths: list[float] = field(default_factory=list)
    truncated: list[float] = field(default_factory=list)
    policy_versions: list[float] = field(default_factory=list)
    errors: int = 0
    timeouts: int = 0
    first_error: str | None = None
    filtered_groups: int = 0
    groups: int = 0
    groups_with_spread: int = 0
    injected: int = 0
    rounds: int = 0
    extras: dict[str, list[float]] = field(default_factory=dict)
    """A user function's other numeric dict keys: the values of the samples that returned them."""
    examples: list[dict] = field(default_factory=list)

    def add(self, summary: RewardSummary) -> None:
        for name in ("raw_scores", "accuracy", "lengths", "prompt_lengths", "truncated", "policy_versions"):
            getattr(self, name).extend(getattr(summary, name))
        self.errors += summary.errors
        self.timeouts += summary.timeouts
        self.first_error = self.first_error or summary.first_error
        for key, values in summary.extras.items():
            self.extras.setdefault(key, []).extend(v for v in values if not math.isnan(v))
        self.examples.extend(summary.examples)

    def metrics(self) -> dict[str, float]:
        lengths, raw = self.lengths, self.raw_scores
        out = {
            "reward/mean": sum(raw) / len(raw),
            "reward/std": float(torch.tensor(raw).std()) if len(raw) > 1 else 0.0,
            "reward/errors": float(self.errors),
            "reward/timeouts": float(self.timeouts),
            "response_length/mean": sum(lengths) / len(lengths),
            "response_length/max": float(max(lengths)),
            "response_length/clip_ratio": sum(self.truncated) / len(lengths),
            "batch/filtered_groups": float(self.filtered_groups),
            "batch/groups_with_spread": self.groups_with_spread / max(1, self.groups),
            "batch/sampling_rounds": float(self.rounds),
            "rollout/samples": float(len(raw)),
            "rollout/ground_truth_injected": float(self.injected),
        }
        judged = [a for a in self.accuracy if not math.isnan(a)]
        if judged:
            out["reward/accuracy"] = sum(judged) / len(judged)
        for key, values in self.extras.items():
            if values:
                out[extra_metric_name(key)] = sum(values) / len(values)
        return out


#: ``reward/`` metrics distrl logs itself; a reward function's dict key with one of these names is renamed.
OWN_REWARD_METRICS = frozenset(("mean", "std", "accuracy", "errors", "timeouts"))


def extra_metric_name(key: str) -> str:
    """``reward/<key>`` for a reward function's extra dict key, ``reward/fn_<key>`` where distrl's own
    ``reward/`` metrics already use the name."""
    return f"reward/fn_{key}" if key in OWN_REWARD_METRICS else f"reward/{key}"


class Collector:
    """Generates with the rollout group, scores with the reward role, keeps what the algorithm can
    learn from, and has the batch role assemble it."""

    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        rollout: RoleGroup,
        reward: RoleGroup,
        batches: RoleGroup,
        stream: PromptStream,
        log: Callable[[str], None],
    ) -> None:
        self.cfg, self.backend = cfg, backend
        self.rollout, self.reward, self.batches = rollout, reward, batches
        self.stream = stream
        self.log = log
        self.prompt_values: dict[int, float] = {}
        """Each prompt's value under the reference policy (PVPO); prompts valued 1 are skipped."""

    def generate_and_score(
        self,
        records: list[PromptRecord],
        group_ids: list[str],
        n: int,
        seed: int,
        timings: dict[str, float],
        temperature: float | None = None,
        inject: frozenset[int] = frozenset(),
    ) -> list[tuple[Handle, RewardSummary]]:
        """``n`` samples per record, the records sharded over the engines; each shard scored
        (``inject``: dataset indices whose last sample is the ground truth, PVPO)."""
        engines = len(self.rollout)
        shards = [(records[i::engines], group_ids[i::engines]) for i in range(engines)]
        with timed(timings, "generation", accumulate=True):
            generated = [
                self.rollout.call_rank(
                    rank, "generate", recs, ids, n=n, seed=seed, temperature=temperature, inject=inject
                )
                for rank, (recs, ids) in enumerate(shards)
                if recs
            ]
            self.backend.wait(generated)
        with timed(timings, "reward", accumulate=True):
            scored = [self.reward.call_rank(0, "score", batch, num_returns=2) for batch in generated]
            summaries = self.backend.get([summary for _, summary in scored], "reward")
        return [(batch, summary) for (batch, _), summary in zip(scored, summaries, strict=True)]

    def collect(self, step: int) -> Collected:
        """Generate and score until the batch holds ``data.train_batch_size`` prompts (fewer, with a
        note, when dynamic sampling runs out of rounds; :class:`TrainingError` when it kept none)."""
        cfg, alg = self.cfg, self.cfg.algorithm
        timings = {"generation": 0.0, "reward": 0.0}
        wanted = cfg.data.train_batch_size
        parts: list[tuple[Handle, list[int]]] = []
        stats = RolloutStats()
        kept = 0
        while kept < wanted and stats.rounds < alg.max_sampling_rounds:
            stats.rounds += 1
            records = [r for r in self.stream.next_batch(wanted) if self.prompt_values.get(r.index, 0.0) < 1.0]
            if not records:
                continue
            group_ids = [f"{step}.{stats.rounds}.{i}" for i in range(len(records))]
            seed = cfg.trainer.seed * 1_000_003 + step * 1_009 + stats.rounds
            inject = frozenset(
                r.index for r in records if alg.pvpo_inject_ground_truth and self.prompt_values.get(r.index) == 0.0
            )
            stats.injected += len(inject)
            scored = self.generate_and_score(records, group_ids, cfg.rollout.n, seed, timings, inject=inject)
            for batch, summary in scored:
                stats.add(summary)
                take, kept = self._keep(summary, kept, wanted, stats)
                if take:
                    parts.append((batch, take))
        if kept == 0:
            raise TrainingError(
                f"no prompt had a reward spread in {stats.rounds} sampling round(s) (algorithm.max_sampling_rounds) "
                f"at step {step + 1}: the task is too easy or too hard for the policy; raise rollout.n or "
                "algorithm.max_sampling_rounds, or turn algorithm.dynamic_sampling off"
            )
        if kept < wanted:
            self.log(
                f"distrl: step {step + 1}: dynamic sampling kept {kept} of {wanted} prompts in {stats.rounds} rounds "
                "(algorithm.max_sampling_rounds); training on those"
            )
        if stats.first_error and stats.errors:
            self.log(f"distrl: {stats.errors} sample(s) failed to score (scored 0); first error:\n{stats.first_error}")
        return Collected(
            batch=self.batches.call_rank(0, "assemble", parts),
            metrics=stats.metrics(),
            timings=timings,
            oldest_version=int(min(stats.policy_versions)),
            samples=sum(len(rows) for _, rows in parts),
            examples=stats.examples,
            response_tokens=sum(stats.lengths),
            prompt_tokens=sum(stats.prompt_lengths),
        )

    def _keep(self, summary: RewardSummary, kept: int, wanted: int, stats: RolloutStats) -> tuple[list[int], int]:
        """The rows of the groups to train on (all, or with dynamic sampling those with reward spread),
        up to ``wanted`` prompts in all; and the new count of kept prompts."""
        spread = group_filter(torch.tensor(summary.scores), summary.group_ids)
        groups: dict[str, list[int]] = {}
        for i, gid in enumerate(summary.group_ids):
            groups.setdefault(gid, []).append(i)
        stats.groups += len(groups)
        stats.groups_with_spread += sum(bool(spread[rows[0]]) for rows in groups.values())
        take: list[int] = []
        for rows in groups.values():
            if self.cfg.algorithm.dynamic_sampling and not bool(spread[rows[0]]):
                stats.filtered_groups += 1
            elif kept < wanted:
                take.extend(rows)
                kept += 1
        return take, kept

    def estimate_prompt_values(self, records: list[PromptRecord], samples: int, seed: int) -> dict[int, float]:
        """Each record's mean reward over ``samples`` samples of the weights the engines hold now (the
        caller loads the reference policy's first), by dataset index."""
        scored = self.generate_and_score(records, [str(r.index) for r in records], samples, seed, {})
        totals: dict[int, list[float]] = {}
        for _, summary in scored:
            for gid, score in zip(summary.group_ids, summary.raw_scores, strict=True):
                totals.setdefault(int(gid), []).append(score)
        return {i: sum(v) / len(v) for i, v in totals.items()}

    def data_state(self) -> dict:
        """The prompt stream's position after the last batch a step has trained on (for checkpoints)."""
        return self.stream.state()

    def rewind(self, state: dict) -> None:
        """Back to the position ``state`` (a :meth:`data_state`): the next batch draws those prompts again."""
        self.stream.load_state(state)

    def close(self) -> None:
        """Stop any background work."""


class OneStepOffCollector(Collector):
    """Asynchronous mode: step k's batch was generated while step k−1 trained, with the weights of
    step k−1 (one policy version old); :meth:`collect` returns it and starts generating step k+1's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distrl-prefetch")
        self.prefetched: Future[Collected] | None = None
        self.state_before_prefetch: dict | None = None

    def collect(self, step: int) -> Collected:
        collected = self.prefetched.result() if self.prefetched else super().collect(step)
        self.prefetched = None
        if step + 1 < self.cfg.trainer.total_steps:
            self.state_before_prefetch = self.stream.state()
            self.prefetched = self.background.submit(super().collect, step + 1)
        return collected

    def data_state(self) -> dict:
        """The position before the prefetched batch: a resumed run generates it again."""
        return self.state_before_prefetch if self.prefetched else self.stream.state()

    def rewind(self, state: dict) -> None:
        """Drop the prefetch (once it has ended: it draws from the stream) and go back to ``state``."""
        if self.prefetched is not None:
            wait([self.prefetched])
            self.prefetched = None
        super().rewind(state)

    def close(self) -> None:
        self.background.shutdown(wait=False, cancel_futures=True)
