"""The controller: builds the actor groups and runs the RL step loop (design.md, "One step").

It moves object references and a few numbers per sample (scores, for dynamic sampling and
metrics); trajectory tensors and weights go from actor to actor through the object store.

One step, top to bottom in :meth:`Trainer.step`:
  1. rollout generates ``rollout.n`` samples per prompt; reward scores them (+ overlong shaping);
     with dynamic sampling, groups without reward spread are dropped and generation repeats
  2. old log-probs (learner; skipped when the update is on-policy), reference log-probs, values
     (critic) — in parallel
  3. token rewards (+ KL in reward) and advantages — the batch role running ``distrl.algorithms``
  4. policy update (and critic update) — epochs × mini-batches × micro-batches
  5. weight sync: learner rank 0's full weights, one flat buffer, read zero-copy by every engine
  6. metrics (with each role's compute time and the orchestration overhead), checkpoint
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import ray
import torch

from distrl import checkpoint
from distrl.algorithms import adaptive_kl_coef, group_filter
from distrl.config import Config, RoleResources
from distrl.data.arithmetic import make_problems
from distrl.data.records import PromptRecord, PromptStream, load_records
from distrl.metrics import MetricsLogger
from distrl.models.prepare import prepare_policy
from distrl.rewards import RewardScorer
from distrl.workers.batches import BatchWorker
from distrl.workers.critic import Critic
from distrl.workers.group import ActorGroup, RoleDiedError
from distrl.workers.learner import Learner
from distrl.workers.reference import Reference
from distrl.workers.reward import RewardWorker
from distrl.workers.rollout import RolloutWorker


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and where the last checkpoint is."""


@dataclass
class NonFiniteGuard:
    """Counts consecutive updates skipped for a NaN/inf gradient and stops the run at ``limit``."""

    limit: int
    in_a_row: int = 0

    def observe(self, skipped: bool, last_checkpoint: Path | None) -> None:
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        if self.in_a_row >= self.limit:
            raise TrainingError(
                f"{self.in_a_row} updates in a row had NaN/inf gradients and were skipped "
                f"(trainer.max_nonfinite_steps={self.limit}); lower learner.lr or check the rewards. "
                f"Last checkpoint: {last_checkpoint or 'none'}"
            )


def load_prompts(cfg: Config) -> list[PromptRecord]:
    """The training prompts: ``data.train_files`` or the built-in arithmetic task."""
    if not cfg.data.train_files:
        return make_problems(cfg.data.num_problems, digits=cfg.data.task_digits, seed=cfg.trainer.seed)
    records, skipped = load_records(cfg.data.train_files, skip_bad_rows=cfg.data.skip_bad_rows)
    if skipped:
        print(f"distrl: skipped {skipped} malformed row(s) of data.train_files (data.skip_bad_rows=true)")
    return records


class Trainer:
    """Owns the actor groups, the prompt stream and the loop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        alg = cfg.algorithm
        # Cheap checks first: data, reward function, checkpoint — before any actor starts.
        self.records = load_prompts(cfg)
        RewardScorer(cfg.reward.function, cfg.reward.model_path, cfg.reward.batched).check_data_sources(
            {r.data_source for r in self.records}
        )
        self.resumed = checkpoint.resolve(cfg.trainer.resume, cfg.trainer.output_dir)
        state = checkpoint.read_state(self.resumed) if self.resumed else {}
        self.initial_model = state.get("initial_model") or prepare_policy(cfg)
        policy_path = str(self.resumed) if self.resumed else self.initial_model
        self.start_step = state.get("step", 0)
        self.kl_coef = state.get("kl_coef", alg.kl.coef)
        self.pvpo_values: dict[int, float] = {int(k): v for k, v in state.get("pvpo_values", {}).items()}
        self.stream = PromptStream(
            self.records, batch_size=cfg.data.train_batch_size, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle
        )
        if "data" in state:
            self.stream.load_state(state["data"])
        self.nonfinite = NonFiniteGuard(cfg.trainer.max_nonfinite_steps)
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distrl-prefetch")
        self.prefetched: Future | None = None
        self.prefetch_data_state: dict | None = None

        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):  # a `ray job submit` driver, or a user's cluster
                ray.init()
            else:  # a fresh local instance, never a stray cluster left running on this machine
                ray.init(address="local", num_cpus=cfg.cluster.num_cpus or self._cpus_needed())
        c = cfg.cluster
        max_len = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
        self.rollout = ActorGroup(
            "rollout", RolloutWorker, c.rollout_engines, c.rollout, args=(policy_path, cfg.rollout),
            kwargs={"max_model_len": max_len, "seed": cfg.trainer.seed, "resources": c.rollout}, ranked=False,
        )  # fmt: skip
        self.learner = ActorGroup("learner", Learner, c.learners, c.learner, args=(policy_path, cfg))
        self.reward = ActorGroup("reward", RewardWorker, 1, c.reward, args=(cfg,), ranked=False)
        self.batches = ActorGroup("batch", BatchWorker, 1, RoleResources(cpus=0), ranked=False)
        self.reference = (
            ActorGroup("reference", Reference, 1, c.reference, args=(self.initial_model, cfg))
            if alg.needs_reference else None
        )  # fmt: skip
        use_critic = cfg.critic.enable if cfg.critic.enable is not None else alg.needs_values
        critic_state = str(self.resumed / "critic") if self.resumed and use_critic else None
        self.critic = (
            ActorGroup("critic", Critic, 1, c.critic, args=(self.initial_model, cfg),
                       kwargs={"state": critic_state}, ranked=False)
            if use_critic else None
        )  # fmt: skip
        address, port = self.learner.get(self.learner.actors[0].rendezvous.remote())
        optimizer_state = str(self.resumed / "optimizer.pt") if self.resumed else None
        self.learner.get(self.learner.call_all("setup", address, port, optimizer_state))
        self.version = self.start_step
        self.rollout.get(self.rollout.call_all("set_version", self.version))
        self.metrics = MetricsLogger(
            cfg.trainer.output_dir,
            total_steps=cfg.trainer.total_steps,
            config=asdict(cfg),
            sinks=cfg.trainer.loggers,
            wandb_project=cfg.trainer.wandb_project,
            wandb_mode=cfg.trainer.wandb_mode,
            start_step=self.start_step,
        )

    def _cpus_needed(self) -> int:
        """Logical CPUs for a local Ray instance: every role's bundles, rounded up."""
        c, alg = self.cfg.cluster, self.cfg.algorithm
        total = c.rollout_engines * c.rollout.cpus + c.learners * c.learner.cpus + c.reward.cpus
        total += c.reference.cpus * alg.needs_reference + c.critic.cpus * alg.needs_values
        return max(1, math.ceil(total))

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, float]:
        """Run from the start (or resumed) step to ``trainer.total_steps``; returns the summary."""
        cfg = self.cfg
        last_saved, saved_step = self.resumed, self.start_step
        try:
            if cfg.algorithm.advantage == "pvpo" and not self.pvpo_values:
                self.estimate_pvpo_values()
            for step in range(self.start_step, cfg.trainer.total_steps):
                try:
                    metrics = self.step(step)
                except TrainingError as err:  # the steps done so far are sound: keep them
                    if step > saved_step:
                        last_saved, saved_step = self.save(step), step
                    raise TrainingError(
                        f"{err}. Last checkpoint: {last_saved or 'none'} (continue with trainer.resume=auto)"
                    ) from err
                self.metrics.log(step + 1, metrics)
                if metrics["train/nonfinite_skipped"]:
                    self.metrics.print(f"distrl: step {step + 1}: NaN/inf gradient, update skipped")
                self.nonfinite.observe(metrics["train/nonfinite_skipped"] > 0, last_saved)
                every = cfg.trainer.save_every
                if (every and (step + 1) % every == 0) or step + 1 == cfg.trainer.total_steps:
                    last_saved, saved_step = self.save(step + 1), step + 1
                if cfg.algorithm.advantage == "pvpo" and (step + 1) % cfg.algorithm.pvpo_refresh_every == 0:
                    self.estimate_pvpo_values()
        except RoleDiedError as err:
            dead = [f"{g.role} (rank {r})" for g in self.groups() for r in g.dead_ranks()]
            raise TrainingError(
                f"{', '.join(dead) or 'an'} actor died; the run stopped. Last checkpoint: {last_saved or 'none'} "
                "(continue with trainer.resume=auto)"
            ) from err
        finally:
            summary = self.metrics.close()
        return summary

    def step(self, step: int) -> dict[str, float]:
        """One RL step (see the module docstring); returns its metrics."""
        cfg, alg = self.cfg, self.cfg.algorithm
        started = time.perf_counter()

        with self.timed(timings := {}, "generation_wait"):
            batch_ref, collected = self.prefetched.result() if self.prefetched else self.collect(step)
        timings.update(collected["timings"])
        self.prefetched = None
        if cfg.trainer.mode == "async" and step + 1 < cfg.trainer.total_steps:
            # Generate step k+1's batch with the current weights while step k trains (one step off-policy).
            self.prefetch_data_state = self.stream.state()
            self.prefetched = self.background.submit(self.collect, step + 1)

        with self.timed(timings, "logprobs"):
            share = cfg.old_logprob_pass + (self.reference is not None) + (self.critic is not None)
            old_parts = self.learner.call_all("logprobs", batch_ref, share) if cfg.old_logprob_pass else None
            ref_parts = self.reference.call_all("logprobs", batch_ref, share) if self.reference else None
            value_parts = self.critic.call_all("values", batch_ref, share) if self.critic else None
            self.learner.get((old_parts or []) + (ref_parts or []) + (value_parts or []))

        with self.timed(timings, "advantages"):
            baselines = self.pvpo_values if alg.advantage == "pvpo" else None
            update_ref, shaped = self.batches.actors[0].prepare_update.remote(
                batch_ref, old_parts, ref_parts, value_parts, alg, self.kl_coef, baselines
            )
            shaped = self.batches.get(shaped)

        with self.timed(timings, "update"):
            policy_refs = self.learner.call_all("update", update_ref, step, self.kl_coef)
            critic_refs = self.critic.call_all("update", update_ref, step) if self.critic else []
            policy = self._mean_dicts(self.learner.get(policy_refs))
            critic = self.critic.get(critic_refs)[0] if self.critic else {}

        learner_version = self.version
        with self.timed(timings, "weight_sync"):
            self.sync_weights()

        metrics = {**collected["metrics"], **shaped, **policy, **critic}
        if alg.kl.target is not None and "policy/kl_ref" in metrics:
            self.kl_coef = adaptive_kl_coef(
                self.kl_coef, metrics["policy/kl_ref"], target=alg.kl.target, horizon=alg.kl.horizon,
                n_steps=collected["samples"],
            )  # fmt: skip
        # in async mode the rollout, reward and batch roles are busy with the next batch: leave them
        training_side = [g for g in (self.learner, self.reference, self.critic) if g is not None]
        compute = self.busy_seconds(self.groups() if cfg.trainer.mode == "sync" else training_side)
        wall = time.perf_counter() - started
        if cfg.trainer.mode == "sync":
            timings["overhead"] = wall - sum(
                max((compute.get(phase, 0.0) for phase in stage), default=0.0) for stage in self.STAGES
            )
        tokens = collected["response_tokens"] + collected["prompt_tokens"]
        return {
            **metrics,
            "policy/kl_coef": self.kl_coef,
            "rollout/policy_version": float(collected["oldest_version"]),
            "rollout/staleness": float(learner_version - collected["oldest_version"]),
            **{f"timing/{k}_s": v for k, v in timings.items()},
            **{f"compute/{k}_s": v for k, v in compute.items()},
            "timing/step_s": wall,
            "throughput/tokens_per_s": tokens / wall,
            "throughput/generated_tokens_per_s": collected["response_tokens"] / max(timings["generation"], 1e-9),
        }

    #: The synchronous step's stages in order; the phases inside one stage run at the same time on
    #: different actors, so a stage lasts as long as its busiest phase (weight gather and load are
    #: stages of their own because the load waits for the gather).
    STAGES = (
        ("generation",),
        ("reward",),
        ("assemble",),
        ("old_logprob", "reference", "values"),
        ("advantages",),
        ("update", "critic_update"),
        ("weight_gather",),
        ("weight_load",),
    )

    def busy_seconds(self, groups: list[ActorGroup]) -> dict[str, float]:
        """Compute seconds per phase since the last call, the busiest actor's for each phase."""
        per_actor = ray.get([a.take_busy.remote() for g in groups for a in g.actors])
        out: dict[str, float] = {}
        for taken in per_actor:
            for phase, seconds in taken.items():
                out[phase] = max(out.get(phase, 0.0), seconds)
        return out

    # ------------------------------------------------------------------ phases

    def collect(self, step: int) -> tuple[ray.ObjectRef, dict]:
        """Generate and score until the batch holds ``data.train_batch_size`` prompts (with dynamic
        sampling: prompts whose samples do not all score the same; with PVPO: prompts the reference
        does not always solve). Returns the assembled batch's reference and the step's statistics.
        Safe to run in a background thread (async mode) while the main thread trains."""
        cfg, alg = self.cfg, self.cfg.algorithm
        timings = {"generation": 0.0, "reward": 0.0}
        wanted = cfg.data.train_batch_size
        parts: list[tuple[ray.ObjectRef, list[int]]] = []
        kept = filtered = rounds = 0
        seen: dict[str, list[float]] = {
            "raw_scores": [],
            "accuracy": [],
            "lengths": [],
            "truncated": [],
            "prompt_lengths": [],
            "policy_versions": [],
        }
        errors, first_error = 0, None
        while kept < wanted and rounds < alg.max_sampling_rounds:
            rounds += 1
            records = [r for r in self.stream.next_batch(wanted) if self.pvpo_values.get(r.index, 0.0) < 1.0]
            if not records:
                continue
            group_ids = [f"{step}.{rounds}.{i}" for i in range(len(records))]
            shards = [records[i :: len(self.rollout)] for i in range(len(self.rollout))]
            shard_ids = [group_ids[i :: len(self.rollout)] for i in range(len(self.rollout))]
            seed = cfg.trainer.seed * 1_000_003 + step * 1_009 + rounds
            with self.timed(timings, "generation", accumulate=True):
                generated = [
                    a.generate.remote(recs, ids, n=cfg.rollout.n, seed=seed)
                    for a, recs, ids in zip(self.rollout.actors, shards, shard_ids, strict=True)
                    if recs
                ]
                ray.wait(generated, num_returns=len(generated), fetch_local=False)
            with self.timed(timings, "reward", accumulate=True):
                scored = [self.reward.actors[0].score.remote(ref) for ref in generated]
                summaries = self.reward.get([summary for _, summary in scored])
            for (batch_ref, _), summary in zip(scored, summaries, strict=True):
                for key in seen:
                    seen[key].extend(summary[key])
                errors += summary["errors"]
                first_error = first_error or summary["first_error"]
                scores = torch.tensor(summary["scores"])
                keep = group_filter(scores, summary["group_ids"]) if alg.dynamic_sampling else torch.ones(len(scores))
                groups: dict[str, list[int]] = {}
                for i, gid in enumerate(summary["group_ids"]):
                    groups.setdefault(gid, []).append(i)
                take = []
                for rows in groups.values():
                    if not bool(keep[rows[0]]):
                        filtered += 1
                    elif kept < wanted:
                        take.extend(rows)
                        kept += 1
                if take:
                    parts.append((batch_ref, take))
        if kept == 0:
            raise TrainingError(
                f"no prompt had a reward spread in {rounds} sampling round(s) (algorithm.max_sampling_rounds) at step "
                f"{step + 1}: the task is too easy or too hard for the policy; raise rollout.n or "
                "algorithm.max_sampling_rounds, or turn algorithm.dynamic_sampling off"
            )
        if kept < wanted:
            self.metrics.print(
                f"distrl: step {step + 1}: dynamic sampling kept {kept} of {wanted} prompts in {rounds} rounds "
                "(algorithm.max_sampling_rounds); training on those"
            )
        if first_error and errors:
            self.metrics.print(f"distrl: {errors} sample(s) failed to score (scored 0); first error:\n{first_error}")
        batch_ref = self.batches.actors[0].assemble.remote(parts)
        accuracy = [a for a in seen["accuracy"] if not math.isnan(a)]
        lengths = seen["lengths"]
        metrics = {
            "reward/mean": sum(seen["raw_scores"]) / len(seen["raw_scores"]),
            "reward/std": float(torch.tensor(seen["raw_scores"]).std()) if len(lengths) > 1 else 0.0,
            "reward/errors": float(errors),
            "response_length/mean": sum(lengths) / len(lengths),
            "response_length/max": float(max(lengths)),
            "response_length/clip_ratio": sum(seen["truncated"]) / len(lengths),
            "batch/filtered_groups": float(filtered),
            "batch/sampling_rounds": float(rounds),
        }
        if accuracy:
            metrics["reward/accuracy"] = sum(accuracy) / len(accuracy)
        kept_samples = sum(len(rows) for _, rows in parts)
        return batch_ref, {
            "metrics": metrics,
            "timings": timings,
            "oldest_version": min(seen["policy_versions"]),
            "samples": kept_samples,
            "response_tokens": sum(lengths),
            "prompt_tokens": sum(seen["prompt_lengths"]),
        }

    def sync_weights(self) -> None:
        """Learner rank 0's full weights → one flat buffer in the object store → every rollout engine
        (read zero-copy); bump the version."""
        weights = self.learner.call_all("state_dict", self.cfg.rollout.sync_dtype)
        self.version += 1
        self.rollout.get(self.rollout.call_all("load_weights", weights[0], self.version))

    def estimate_pvpo_values(self) -> None:
        """PVPO static values: ``pvpo_samples`` reference-policy rollouts per prompt (arXiv 2508.21104).

        The rollout engines briefly take the reference weights, then get the policy back.
        """
        alg, cfg = self.cfg.algorithm, self.cfg
        reference = self.reference.actors[0].state_dict.remote(cfg.rollout.sync_dtype)
        self.rollout.get(self.rollout.call_all("load_weights", reference, self.version))
        shards = [self.records[i :: len(self.rollout)] for i in range(len(self.rollout))]
        refs = [
            (a.generate.remote(recs, [str(r.index) for r in recs], n=alg.pvpo_samples, seed=cfg.trainer.seed + 7))
            for a, recs in zip(self.rollout.actors, shards, strict=True)
            if recs
        ]
        summaries = self.reward.get([self.reward.actors[0].score.remote(ref)[1] for ref in refs])
        totals: dict[int, list[float]] = {}
        for summary in summaries:
            for gid, score in zip(summary["group_ids"], summary["raw_scores"], strict=True):
                totals.setdefault(int(gid), []).append(score)
        self.pvpo_values = {i: sum(v) / len(v) for i, v in totals.items()}
        solved = sum(v >= 1.0 for v in self.pvpo_values.values())
        self.metrics.print(f"distrl: PVPO values estimated for {len(totals)} prompts; {solved} always solved, dropped")
        self.sync_weights()
        self.busy_seconds(self.groups())  # not a step's compute

    def save(self, step: int) -> Path:
        """Checkpoint at ``step`` (learner weights + optimizer, critic, trainer state)."""
        staging = checkpoint.staging_dir(self.cfg.trainer.output_dir, step)
        refs = self.learner.call_all("save", str(staging))
        if self.critic:
            refs += self.critic.call_all("save", str(staging))
        self.learner.get(refs)
        state = {
            "step": step,
            "data": self.prefetch_data_state if self.prefetched else self.stream.state(),
            "kl_coef": self.kl_coef,
            "initial_model": self.initial_model,
            "pvpo_values": self.pvpo_values,
        }
        return checkpoint.finish(staging, state)

    @staticmethod
    def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
        return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}

    @staticmethod
    @contextmanager
    def timed(timings: dict[str, float], name: str, accumulate: bool = False) -> Iterator[None]:
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        timings[name] = timings.get(name, 0.0) + elapsed if accumulate else elapsed

    def groups(self) -> list[ActorGroup]:
        """The actor groups of the roles this run started."""
        all_groups = (self.rollout, self.learner, self.reward, self.batches, self.reference, self.critic)
        return [g for g in all_groups if g is not None]

    def shutdown(self) -> None:
        """Stop the prefetch thread and every actor of every role."""
        self.background.shutdown(wait=False, cancel_futures=True)
        for group in self.groups():
            group.shutdown()
