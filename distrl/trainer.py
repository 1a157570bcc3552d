"""The controller: starts the roles through a backend and runs the RL step loop
(docs/architecture.md, "One step"). It holds handles and a few numbers per sample (scores, for
dynamic sampling and metrics); trajectory tensors and weights go from role to role.
"""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from distrl import checkpoint
from distrl.algorithms import adaptive_kl_coef
from distrl.backends import Handle, RoleDiedError, RoleGroup, RoleTimeoutError, make_backend
from distrl.backends.placement import bundle_cpus, plan_gpus
from distrl.collect import Collected, Collector, OneStepOffCollector, TrainingError
from distrl.config import Config, RoleResources
from distrl.data.arithmetic import make_heldout, make_problems
from distrl.data.records import ColumnMap, PromptRecord, PromptStream, drop_long_prompts, load_records
from distrl.evaluation import heldout_metrics
from distrl.metrics import MetricsLogger
from distrl.models.loading import load_tokenizer
from distrl.models.prepare import prepare_policy, warm_start_problems
from distrl.rewards import RewardScorer
from distrl.roles.batches import BatchRole
from distrl.roles.critic import Critic
from distrl.roles.learner import Learner
from distrl.roles.reference import Reference
from distrl.roles.reward import Reward
from distrl.roles.rollout import Rollout
from distrl.roles.timing import timed
from distrl.roles.weight_sync import SyncGroup

__all__ = ["NonFiniteGuard", "Trainer", "TrainingError", "load_prompts"]

#: The deadline for the roles' start (loading models, starting engines, joining process groups),
#: which can take far longer than a step's phase on a large model.
STARTUP_TIMEOUT_S = 1800.0
#: Rows of the step's batch each engine scores in the weight-sync check (at least one per learner rank).
SYNC_PROBE_ROWS = 4
#: Roles whose members hold no training state: a new member built from the same arguments (an
#: engine then given the current weights) replaces a dead one and the step runs again.
RESTARTABLE = ("rollout", "reward", "reference")
#: Seed offset of the built-in task's held-out problems.
HELDOUT_SEED_OFFSET = 20_011


def stage(message: str, since: float | None = None) -> None:
    """Print a start-up stage (``distrl: <message> [<s> s]``, seconds since ``since``) at once: the
    console's first minute of a run is the model build, the warm start and the engines' start."""
    elapsed = f" [{time.perf_counter() - since:.1f} s]" if since is not None else ""
    print(f"distrl: {message}{elapsed}", flush=True)


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


def column_map(cfg: Config, split: str) -> ColumnMap:
    """How Hugging Face dataset rows map to records (``data.prompt_key`` and its neighbours) for ``split``."""
    d = cfg.data
    return ColumnMap(prompt_key=d.prompt_key, answer_key=d.answer_key, data_source=d.data_source, split=split,
                     subset=d.subset)  # fmt: skip


def load_prompts(cfg: Config) -> list[PromptRecord]:
    """The training prompts: ``data.train_files`` or the built-in arithmetic task."""
    if not cfg.data.train_files:
        return make_problems(cfg.data.num_problems, digits=cfg.data.task_digits, seed=cfg.trainer.seed,
                             scratchpad=cfg.data.scratchpad, split="train")  # fmt: skip
    records, skipped = load_records(cfg.data.train_files, skip_bad_rows=cfg.data.skip_bad_rows,
                                    columns=column_map(cfg, cfg.data.train_split))  # fmt: skip
    if skipped:
        print(f"distrl: skipped {skipped} malformed row(s) of data.train_files (data.skip_bad_rows=true)")
    return records


def load_eval_prompts(cfg: Config, train: list[PromptRecord]) -> list[PromptRecord]:
    """The held-out prompts: ``data.val_files``, or with the built-in task ``data.val_size``
    problems that are neither training nor warm-start problems; none with other training data."""
    if cfg.data.val_files:
        records, skipped = load_records(cfg.data.val_files, skip_bad_rows=cfg.data.skip_bad_rows,
                                        columns=column_map(cfg, cfg.data.val_split))  # fmt: skip
        if skipped:
            print(f"distrl: skipped {skipped} malformed row(s) of data.val_files (data.skip_bad_rows=true)")
        return records
    if cfg.data.train_files or cfg.data.val_size == 0:
        return []
    seen = {r.prompt for r in train} | {r.prompt for r in warm_start_problems(cfg)}
    return make_heldout(cfg.data.val_size, digits=cfg.data.task_digits, seed=cfg.trainer.seed + HELDOUT_SEED_OFFSET,
                        exclude=seen, scratchpad=cfg.data.scratchpad, split="heldout")  # fmt: skip


@dataclass
class StopRequest:
    """The signal that asked the run to stop (``None``: none yet)."""

    signal: str | None = None


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """While the block runs (in the main thread), SIGTERM and SIGINT set :attr:`StopRequest.signal`
    so that the loop stops after the current step, whose update then is whole; a second signal
    raises ``KeyboardInterrupt`` at once."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request.signal:
            raise KeyboardInterrupt
        request.signal = signal.Signals(signum).name
        print(f"distrl: {request.signal}: finishing this step, saving a checkpoint, then stopping "
              "(send it again to stop at once)", flush=True)  # fmt: skip

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Trainer:
    """Owns the roles, the prompt stream and the loop."""

    #: The synchronous step's stages in order; the phases inside one stage run at the same time on
    #: different roles, so a stage lasts as long as its busiest phase (weight gather and load are
    #: stages of their own because the load waits for the gather).
    STAGES = (
        ("generation",),
        ("reward",),
        ("assemble",),
        ("sleep",),
        ("old_logprob", "reference", "values"),
        ("advantages",),
        ("update", "critic_update"),
        ("weight_gather",),
        ("weight_load",),
    )

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lock = checkpoint.claim_output_dir(cfg.trainer.output_dir, resume=cfg.trainer.resume,
                                                overwrite=cfg.trainer.overwrite)  # fmt: skip
        try:
            self._start(cfg)
        except BaseException:
            self.lock.close()  # a job that never started leaves its folder free
            raise

    def _start(self, cfg: Config) -> None:
        """Check the inputs, start the roles, restore a checkpoint's state."""
        self.startup_timeout_s = max(STARTUP_TIMEOUT_S, cfg.trainer.role_timeout_s)
        alg, c = cfg.algorithm, cfg.cluster
        # Cheap checks first: data, reward function, checkpoint — before any role starts.
        started = time.perf_counter()
        self.records = load_prompts(cfg)
        self.eval_records = load_eval_prompts(cfg, self.records)
        stage(f"data: {len(self.records)} training prompts, {len(self.eval_records)} held-out")
        RewardScorer(
            cfg.reward.function, cfg.reward.model_path, cfg.reward.batched, style=cfg.reward.style
        ).check_data_sources({r.data_source for r in self.records + self.eval_records})
        self.resumed = checkpoint.resolve(cfg.trainer.resume, cfg.trainer.output_dir)
        state = checkpoint.read_state(self.resumed) if self.resumed else {}
        stage("policy: preparing (the tiny model is built and warm-started once, then cached)"
              if cfg.model.path is None and "initial_model" not in state else "policy: loading")  # fmt: skip
        self.initial_model = state.get("initial_model") or prepare_policy(cfg)
        stage(f"policy ready: {self.initial_model}", started)
        tokenizer = load_tokenizer(self.initial_model, trust_remote_code=cfg.model.trust_remote_code)
        self.records, dropped = drop_long_prompts(self.records, tokenizer, cfg.data.max_prompt_len,
                                                  skip=cfg.data.skip_bad_rows)  # fmt: skip
        self.eval_records, eval_dropped = drop_long_prompts(self.eval_records, tokenizer, cfg.data.max_prompt_len,
                                                            skip=cfg.data.skip_bad_rows)  # fmt: skip
        for count, which in ((dropped, ""), (eval_dropped, "held-out ")):
            if count:
                print(f"distrl: dropped {count} {which}prompt(s) longer than data.max_prompt_len="
                      f"{cfg.data.max_prompt_len} tokens (data.skip_bad_rows=true)")  # fmt: skip
        policy_path = str(self.resumed) if self.resumed else self.initial_model
        self.start_step = state.get("step", 0)
        self.kl_coef = state.get("kl_coef", alg.kl.coef)
        stream = PromptStream(
            self.records, batch_size=cfg.data.train_batch_size, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle
        )
        if "data" in state:
            stream.load_state(state["data"])
        self.nonfinite = NonFiniteGuard(cfg.trainer.max_nonfinite_steps)
        self.last_examples: list[dict] = []

        roles = [f"{c.rollout_engines} rollout ({cfg.rollout.engine})", f"{c.learners} learner", "reward"]
        roles += [f"{c.references} reference"] * alg.needs_reference + [f"{c.critics} critic"] * cfg.critic_enabled
        stage(f"starting roles on the {c.backend} backend: {', '.join(roles)}", started)
        layout = plan_gpus(cfg, reference=alg.needs_reference, critic=cfg.critic_enabled)
        self.backend = make_backend(c.backend, num_cpus=c.num_cpus or self._cpus_needed(),
                                    timeout_s=cfg.trainer.role_timeout_s)  # fmt: skip
        self.backend.reserve_gpus(layout, bundle_cpus(cfg, layout))
        group = functools.partial(self._group, layout.bundles)
        self.rollout = group(
            "rollout", Rollout, c.rollout_engines, c.rollout, args=(policy_path, cfg.rollout), ranked=False,
            kwargs={"max_model_len": cfg.data.max_prompt_len + cfg.rollout.max_new_tokens, "seed": cfg.trainer.seed,
                    "resources": c.rollout, "trust_remote_code": cfg.model.trust_remote_code,
                    "colocated": c.colocate},
        )  # fmt: skip
        self.learner = group("learner", Learner, c.learners, c.learner, args=(policy_path, cfg))
        self.reward = group("reward", Reward, 1, c.reward, args=(cfg,), ranked=False)
        self.batches = group("batch", BatchRole, 1, RoleResources(cpus=0), args=(cfg,), ranked=False)
        self.reference: RoleGroup | None = None
        if alg.needs_reference:
            self.reference = group("reference", Reference, c.references, c.reference, args=(self.initial_model, cfg))
        self.critic: RoleGroup | None = None
        if cfg.critic_enabled:
            self.critic = group("critic", Critic, c.critics, c.critic, args=(self.initial_model, cfg))
        setups = self.setup_calls(self.learner, str(self.resumed / "optimizer.pt") if self.resumed else None)
        if self.critic is not None:
            setups += self.setup_calls(self.critic, str(self.resumed / "critic") if self.resumed else None)
        self.get(setups, "learner or critic", self.startup_timeout_s)
        self.check_shared_output_dir()
        if cfg.weight_sync == "collective":
            self.join_weight_sync()
        self.sync_bytes, self.full_sync_next = 0, False
        self.weight_sync = cfg.weight_sync
        self.restarts = state.get("restarts", 0)
        self.update_phase = "pending"
        """Where the step in flight is: ``pending`` (the learner holds the last step's weights),
        ``running`` (the update is under way) or ``done``."""
        self.version = self.start_step
        self.get(self.rollout.call("set_version", self.version), "rollout", self.startup_timeout_s)
        device, budget, total = self.get(
            self.rollout.call_rank(0, "memory_budget_gib"), "rollout", self.startup_timeout_s
        )
        stage(f"roles ready; each engine may use {budget:.1f} GiB of {total:.0f} GiB ({device}, "
              f"rollout.gpu_memory_utilization={cfg.rollout.gpu_memory_utilization:g})", started)  # fmt: skip
        if self.resumed:  # the engines loaded the checkpoint's float32 weights; an unbroken run's hold the synced ones
            self.sync_weights(same_version=True)

        self.metrics = MetricsLogger(
            cfg.trainer.output_dir,
            total_steps=cfg.trainer.total_steps,
            config=asdict(cfg),
            sinks=cfg.trainer.loggers,
            wandb_project=cfg.trainer.wandb_project,
            wandb_mode=cfg.trainer.wandb_mode,
            start_step=self.start_step,
        )
        collector = OneStepOffCollector if cfg.trainer.mode == "async" else Collector
        self.collector = collector(cfg, self.backend, self.rollout, self.reward, self.batches, stream,
                                   self.metrics.print)  # fmt: skip
        saved_values = state.get("prompt_values", state.get("pvpo_values", {}))  # the key before the roles split
        self.collector.prompt_values = {int(k): v for k, v in saved_values.items()}

    def setup_calls(self, group: RoleGroup, state: str | None) -> list[Handle]:
        """Every rank's ``setup``: where the group's process group meets (several ranks) and the
        checkpoint state to resume from."""
        address = port = None
        if len(group) > 1:
            address = group.node_address(0)
            port = self.get(group.call_rank(0, "free_port"), group.role, self.startup_timeout_s)
        return group.call("setup", address, port, state)

    def _group(self, bundles: dict[str, list[int]], role: str, *args, **kwargs) -> RoleGroup:
        """A role group, in its GPU-pool bundles where the layout puts it there."""
        return self.backend.group(role, *args, bundles=bundles.get(role), **kwargs)

    def _cpus_needed(self) -> int:
        """Logical CPUs for a local Ray instance: every role's bundles, rounded up."""
        c, alg = self.cfg.cluster, self.cfg.algorithm
        total = c.rollout_engines * c.rollout.cpus + c.learners * c.learner.cpus + c.reward.cpus
        total += (
            c.references * c.reference.cpus * alg.needs_reference + c.critics * c.critic.cpus * self.cfg.critic_enabled
        )
        return max(1, math.ceil(total))

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, float]:
        """Run from the start (or resumed) step to ``trainer.total_steps``; returns the summary.
        SIGTERM or SIGINT (a preemption, Ctrl-C) ends the run after the current step, with a
        checkpoint; a second one stops at once."""
        cfg = self.cfg
        self.last_saved, self.saved_step = self.resumed, self.start_step
        try:
            with stop_requests() as stop:
                if cfg.algorithm.needs_prompt_values and not self.collector.prompt_values:
                    self.estimate_prompt_values()
                if self.eval_records and cfg.trainer.eval_before_train and self.start_step == 0:
                    self.metrics.log(0, self.evaluate())
                for step in range(self.start_step, cfg.trainer.total_steps):
                    metrics = self.checked_step(step)
                    if self.eval_due(step + 1):
                        metrics |= self.evaluate()
                    self.after_step(step, metrics)
                    if stop.signal:
                        saved = self.save_if_new(step + 1)
                        raise TrainingError(f"stopped by {stop.signal} after step {step + 1}; saved {saved} "
                                            "(continue with trainer.resume=auto)")  # fmt: skip
        except (RoleTimeoutError, RoleDiedError) as err:  # outside a step: PVPO's estimate, a checkpoint
            raise TrainingError(f"{self.describe(err)}. Last checkpoint: {self.last_saved or 'none'} "
                                "(continue with trainer.resume=auto)") from err  # fmt: skip
        finally:
            summary = self.metrics.close()
            if self.last_saved:
                self.metrics.print(f"  checkpoint: {self.last_saved}")
        return summary

    def checked_step(self, step: int) -> dict[str, float]:
        """:meth:`step`. A dead member of a stateless role before the update is replaced and the
        step runs again from its first prompt (at most ``trainer.max_restarts`` in a run); any other
        error stops the run after saving what is sound (:meth:`save_what_is_sound`)."""
        while True:
            before = self.collector.data_state()
            self.update_phase = "pending"
            try:
                return self.step(step)
            except RoleDiedError as err:
                if self.update_phase == "pending" and self.restart_dead():
                    self.collector.rewind(before)
                    continue
                failure: Exception = err
            except Exception as err:
                failure = err
            saved = self.save_what_is_sound(step, before)
            raise TrainingError(
                f"{self.describe(failure)}. Last checkpoint: {saved or 'none'} (continue with trainer.resume=auto)"
            ) from failure

    def describe(self, err: Exception) -> str:
        """What stopped the run, in words: the dead members, the role that did not answer, or the error."""
        if isinstance(err, RoleDiedError):
            dead = [f"{g.role} (rank {r})" for g in self.groups() for r in g.dead_ranks()]
            return f"{', '.join(dead) or 'an'} actor died; the run stopped"
        if isinstance(err, RoleTimeoutError):
            return f"{err}. The run stopped"
        if isinstance(err, TrainingError):
            return str(err)
        return f"step failed: {type(err).__name__}: {err}"

    def restart_dead(self) -> bool:
        """Replace the dead members if every one is of a :data:`RESTARTABLE` role and
        ``trainer.max_restarts`` allows; new engines get the current weights. False: nothing restarted."""
        dead = [(group, rank) for group in self.groups() for rank in group.dead_ranks()]
        allowed = self.cfg.trainer.max_restarts
        if not dead or any(g.role not in RESTARTABLE for g, _ in dead) or self.restarts + len(dead) > allowed:
            return False
        for group, rank in dead:
            group.restart(rank)
            self.restarts += 1
            self.metrics.print(f"distrl: {group.role} (rank {rank}) died; started a new one "
                               f"({self.restarts} of trainer.max_restarts={allowed})")  # fmt: skip
        engines = [rank for group, rank in dead if group is self.rollout]
        if engines:
            self.reload_engines(engines)
        return True

    def reload_engines(self, engines: list[int]) -> None:
        """New engines ``engines`` get the learner's weights at the current version through the object
        store. The collective sync's group held the dead engine's workers: the object store carries
        every sync from here on."""
        if self.weight_sync == "collective":
            self.weight_sync = "object_store"
            self.metrics.print("distrl: weight sync through the object store from now on (the collective group "
                               "lost a member)")  # fmt: skip
        self.send_through_object_store(engines, full=True, timeout_s=self.startup_timeout_s)

    def save_what_is_sound(self, step: int, before: dict) -> Path | None:
        """After an error in step ``step``: a checkpoint of the ``step`` steps done if the update had not
        begun (with the data position ``before`` the step), of ``step + 1`` if it was done, none if it
        was under way (the weights may be half updated). The latest checkpoint."""
        if self.update_phase == "running":
            return self.last_saved
        done, data = (step, before) if self.update_phase == "pending" else (step + 1, None)
        try:
            return self.save_if_new(done, data)
        except Exception as err:  # a dead or stuck learner cannot save
            self.metrics.print(f"distrl: no checkpoint after the error ({type(err).__name__}: {err})")
            return self.last_saved

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        """Log the step, watch for NaN/inf updates, checkpoint when due, refresh PVPO's values."""
        cfg = self.cfg
        self.metrics.log(step + 1, metrics)
        every_samples = cfg.trainer.log_samples_every
        if every_samples and (step + 1) % every_samples == 0:
            self.metrics.log_samples(step + 1, self.last_examples)
        skipped = metrics["train/nonfinite_skipped"] + metrics.get("critic/nonfinite_skipped", 0.0)
        if skipped:
            self.metrics.print(f"distrl: step {step + 1}: NaN/inf gradient, update skipped")
        self.nonfinite.observe(skipped > 0, self.last_saved)
        every = cfg.trainer.save_every
        if (every and (step + 1) % every == 0) or step + 1 == cfg.trainer.total_steps:
            self.save_if_new(step + 1)
        if cfg.algorithm.needs_prompt_values and (step + 1) % cfg.algorithm.pvpo_refresh_every == 0:
            self.estimate_prompt_values()

    def eval_due(self, done: int) -> bool:
        """Whether to evaluate after ``done`` steps: every ``trainer.eval_every`` and after the last."""
        every = self.cfg.trainer.eval_every
        return bool(self.eval_records) and (done == self.cfg.trainer.total_steps or (every > 0 and done % every == 0))

    def evaluate(self) -> dict[str, float]:
        """The held-out prompts on the engines with their current weights: one greedy sample each
        (``eval/greedy_acc``) and ``trainer.eval_k`` at the rollout temperature (``eval/pass@1``,
        ``eval/pass@k``, ``eval/reward_mean``); per data source too when there are several."""
        records, k = self.eval_records, self.cfg.trainer.eval_k
        ids = [f"eval.{i}" for i in range(len(records))]
        timings: dict[str, float] = {}
        with timed(timings, "eval"):
            greedy = self.collector.generate_and_score(records, ids, 1, self.cfg.trainer.seed + 11, timings, 0.0)
            sampled = self.collector.generate_and_score(records, ids, k, self.cfg.trainer.seed + 13, timings)
        sources = {gid: r.data_source for gid, r in zip(ids, records, strict=True)}
        summaries = [[summary for _, summary in parts] for parts in (greedy, sampled)]
        return {"timing/eval_s": timings["eval"], **heldout_metrics(*summaries, sources)}

    def save_if_new(self, done: int, data: dict | None = None) -> Path | None:
        """A checkpoint after ``done`` steps unless the last one is that; the latest checkpoint."""
        if done > self.saved_step:
            self.last_saved, self.saved_step = self.save(done, data), done
        return self.last_saved

    def step(self, step: int) -> dict[str, float]:
        """One RL step; returns its metrics.

        1. collect: generate ``rollout.n`` samples per prompt, score them, filter (dynamic sampling);
           colocated engines then release their GPU memory until the weight sync
        2. log-probs: old (learner, only when the update is off-policy), reference, values (critic),
           at the same time on their roles
        3. advantages: token rewards (+ KL in the reward) and advantages (batch role)
        4. update: the policy (and the critic): epochs × mini-batches × micro-batches
        5. weight sync: the learner's weights to every engine, one flat buffer
        6. metrics: the adaptive KL coefficient, timings, throughput
        """
        timings: dict[str, float] = {}
        started = time.perf_counter()
        with timed(timings, "generation_wait"):
            collected = self.collector.collect(step)
            self.last_examples = collected.examples
        if self.cfg.cluster.colocate:  # the learner, reference and critic get the GPUs until the sync
            self.get(self.rollout.call("sleep"), "rollout")
        with timed(timings, "logprobs"):
            parts = self.logprob_parts(collected.batch)
        with timed(timings, "advantages"):
            update_batch, advantage_metrics = self.batches.call_rank(
                0, "prepare_update", collected.batch, *parts, self.kl_coef, self.collector.prompt_values, num_returns=2
            )
            advantage_metrics = self.get(advantage_metrics, "batch")
        with timed(timings, "update"):
            self.update_phase = "running"
            update_metrics = self.update(update_batch, step)
            self.update_phase = "done"
        generating_version = self.version
        with timed(timings, "weight_sync"):
            self.sync_weights()
        every = self.cfg.cluster.sync_check_every
        if every and self.version % every == 0:
            update_metrics["weight_sync/max_logprob_diff"] = self.check_sync(collected.batch)
        metrics = {**collected.metrics, **advantage_metrics, **update_metrics}
        self.adapt_kl_coef(metrics, collected.samples)
        return {**metrics, **self.step_metrics(collected, timings | collected.timings, started, generating_version)}

    def logprob_parts(self, batch: Handle) -> tuple[list | None, list | None, list | None]:
        """Per-rank handles of the old log-probs (when the old-log-prob pass runs), the reference
        log-probs and the values, computed at the same time; waits until all are done."""
        run_old = self.cfg.old_logprob_pass
        share = run_old + (self.reference is not None) + (self.critic is not None)
        old = self.learner.call("logprobs", batch, share) if run_old else None
        ref = self.reference.call("logprobs", batch, share) if self.reference else None
        values = self.critic.call("values", batch, share) if self.critic else None
        self.get((old or []) + (ref or []) + (values or []), "learner, reference or critic")
        return old, ref, values

    def update(self, batch: Handle, step: int) -> dict[str, float]:
        """The policy update on every learner rank (and the critic's at the same time); the ranks'
        metrics averaged."""
        policy = self.learner.call("update", batch, step, self.kl_coef)
        critic = self.critic.call("update", batch, step) if self.critic else []
        ranks = self.get(policy, "learner") + (self.get(critic, "critic") if critic else [])
        keys = {k for r in ranks for k in r}
        return {k: sum(r[k] for r in ranks if k in r) / sum(k in r for r in ranks) for k in keys}

    def join_weight_sync(self) -> None:
        """Build the weight-sync process group: learner rank 0, then every engine's workers in turn
        (all join at once; each waits for the others)."""
        dtype = self.cfg.rollout.sync_dtype
        address = self.learner.node_address(0)
        port, layout = self.get([self.learner.call_rank(0, "free_port"),
                                 self.learner.call_rank(0, "weight_layout", dtype)], "learner")  # fmt: skip
        ranks = self.get(self.rollout.call("sync_ranks"), "rollout")
        on_gpu = self.cfg.cluster.learner.gpus > 0
        group = SyncGroup(address, port, 1 + sum(ranks), "nccl" if on_gpu else "gloo")
        first = [1 + sum(ranks[:e]) for e in range(len(ranks))]
        joins = self.learner.call("join_weight_sync", group)
        joins += [self.rollout.call_rank(e, "join_weight_sync", group, first[e], layout) for e in range(len(ranks))]
        self.get(joins, "learner or rollout", self.startup_timeout_s)

    def sync_weights(self, same_version: bool = False) -> None:
        """Learner rank 0's weights (the whole flat buffer, or what changed) → every rollout engine,
        through the object store or the weight-sync group, as ``rollout.sync_dtype``; bump the
        version (``same_version``: the learner's weights did not change since the last sync)."""
        dtype, full = self.cfg.rollout.sync_dtype, self.full_sync_next
        self.version += not same_version
        if self.weight_sync == "collective":
            sent = self.learner.call("broadcast_weights", dtype, full)
            loaded = self.rollout.call("receive_weights", self.version)
            self.sync_bytes = self.get(sent + loaded, "learner or rollout")[0]
        elif self.weight_sync == "ipc":  # engine e reads learner rank e's buffer on their GPU
            shared = self.learner.call("share_weights", dtype)
            engines = len(self.rollout)
            loaded = [self.rollout.call_rank(e, "load_weights", shared[e % len(shared)], self.version)
                      for e in range(engines)]  # fmt: skip
            self.sync_bytes = self.get(shared[0], "learner").layout.nbytes
            self.get(loaded, "rollout")
            self.get(self.learner.call("release_shared"), "learner")
        else:
            self.sync_bytes = self.send_through_object_store(range(len(self.rollout)), full)
        self.full_sync_next = False

    def send_through_object_store(self, engines: range | list[int], full: bool, timeout_s: float | None = None) -> int:
        """Learner rank 0's next weight update (every rank gathers) → engines ``engines`` through the
        object store, at the current version; its size in bytes."""
        dtype = self.cfg.rollout.sync_dtype
        update, nbytes = self.learner.call_rank(0, "weights_update", dtype, full, num_returns=2)
        others = [self.learner.call_rank(r, "weights_update", dtype, full) for r in range(1, len(self.learner))]
        loaded = [self.rollout.call_rank(e, "load_weights", update, self.version) for e in engines]
        return self.get([nbytes, *others, *loaded], "learner or rollout", timeout_s)[0]

    def check_sync(self, batch: Handle) -> float:
        """The largest |engine − learner| log-prob over a few rows of ``batch``, every engine against
        the learner (teacher forcing); :class:`TrainingError` past ``cluster.sync_check_max_diff``."""
        probe = self.batches.call_rank(0, "head", batch, max(SYNC_PROBE_ROWS, self.cfg.cluster.learners))
        learner = self.learner.call("logprobs", probe)
        engines = self.rollout.call("teacher_logprobs", probe)
        rows, *values = self.get([probe, *learner, *engines], "rollout or learner")
        learner, engines = values[: len(learner)], values[len(learner) :]
        mask, learner = rows.response_mask.bool(), torch.cat(learner).float().cpu()
        gaps = [float((engine - learner).abs()[mask].max()) if mask.any() else 0.0 for engine in engines]
        worst = max(range(len(gaps)), key=gaps.__getitem__)
        limit = self.cfg.cluster.sync_check_max_diff
        if gaps[worst] > limit:
            raise TrainingError(
                f"after weight sync {self.version}, rollout engine {worst}'s log-probs differ from the learner's by "
                f"up to {gaps[worst]:.3g} nats (cluster.sync_check_max_diff={limit:g}): the engine does not hold the "
                "learner's weights, and training on its samples would be wrong. Check rollout.sync_dtype and the "
                "model's weight names; set cluster.sync_check_every=0 only to train anyway"
            )
        return gaps[worst]

    def adapt_kl_coef(self, metrics: dict[str, float], samples: int) -> None:
        """The adaptive KL controller (when ``algorithm.kl.target`` is set) after a step."""
        kl = self.cfg.algorithm.kl
        if kl.target is not None and "policy/kl_ref" in metrics:
            self.kl_coef = adaptive_kl_coef(
                self.kl_coef, metrics["policy/kl_ref"], target=kl.target, horizon=kl.horizon, n_steps=samples
            )

    def step_metrics(
        self, collected: Collected, timings: dict[str, float], started: float, generating_version: int
    ) -> dict[str, float]:
        """KL coefficient, staleness, phase timings, each role's compute time, overhead, throughput."""
        sync = self.cfg.trainer.mode == "sync"
        # in async mode the rollout, reward and batch roles are busy with the next batch: leave them
        training_side = [g for g in (self.learner, self.reference, self.critic) if g is not None]
        compute, peak_gib = self.busy_seconds(self.groups() if sync else training_side)
        wall = time.perf_counter() - started
        if sync:
            timings["overhead"] = wall - sum(
                max((compute.get(phase, 0.0) for phase in stage), default=0.0) for stage in self.STAGES
            )
        return {
            "policy/kl_coef": self.kl_coef,
            "rollout/policy_version": float(collected.oldest_version),
            "rollout/staleness": float(generating_version - collected.oldest_version),
            **{f"timing/{k}_s": v for k, v in timings.items()},
            **{f"compute/{k}_s": v for k, v in compute.items()},
            **{f"memory/{k}_peak_gib": v for k, v in peak_gib.items()},
            "timing/step_s": wall,
            "weight_sync/bytes": float(self.sync_bytes),
            "recovery/restarts": float(self.restarts),
            "throughput/tokens_per_s": (collected.response_tokens + collected.prompt_tokens) / wall,
            "throughput/generated_tokens_per_s": collected.response_tokens / max(timings["generation"], 1e-9),
        }

    def busy_seconds(self, groups: list[RoleGroup]) -> tuple[dict[str, float], dict[str, float]]:
        """Compute seconds and peak GPU GiB per phase since the last call, each the largest among
        the groups' members (the GiB only for roles on a GPU)."""
        per_member = self.get([h for g in groups for h in g.call("take_busy")], "any")
        seconds: dict[str, float] = {}
        peak: dict[str, float] = {}
        for taken in per_member:
            for out, values in ((seconds, taken["seconds"]), (peak, taken["peak_gib"])):
                for phase, value in values.items():
                    out[phase] = max(out.get(phase, 0.0), value)
        return seconds, peak

    # ------------------------------------------------------------------ outside the step

    def estimate_prompt_values(self) -> None:
        """Prompt values for the advantage (PVPO, arXiv 2508.21104): ``pvpo_samples`` reference-policy
        rollouts per prompt. The engines briefly take the reference weights, then get the policy back;
        prompts the reference always solves are skipped from then on."""
        cfg = self.cfg
        reference = self.reference.call_rank(0, "state_dict", cfg.rollout.sync_dtype)
        self.get(self.rollout.call("load_weights", reference, self.version), "rollout")
        self.full_sync_next = True  # the engines hold the reference's weights, which no delta applies to
        values = self.collector.estimate_prompt_values(
            self.records, cfg.algorithm.pvpo_samples, seed=cfg.trainer.seed + 7
        )
        self.collector.prompt_values = values
        solved = sum(v >= 1.0 for v in values.values())
        self.metrics.print(f"distrl: PVPO values estimated for {len(values)} prompts; {solved} always solved, dropped")
        self.sync_weights()
        self.busy_seconds(self.groups())  # not a step's compute

    def save(self, step: int, data: dict | None = None) -> Path:
        """Checkpoint at ``step`` (learner weights + optimizer, critic, trainer state; ``data``: the
        prompt stream's position, default the collector's)."""
        staging = checkpoint.staging_dir(self.cfg.trainer.output_dir, step)
        writers = [g for g in (self.learner, self.critic) if g is not None]
        roles = [g.role for g in writers for _ in range(len(g))]
        parts = self.get([h for g in writers for h in g.call("save", str(staging))], "learner or critic")
        written = [(role, *part) for role, part in zip(roles, parts, strict=True) if part is not None]
        state = {
            "step": step,
            "data": data or self.collector.data_state(),
            "restarts": self.restarts,
            "kl_coef": self.kl_coef,
            "initial_model": self.initial_model,
            "prompt_values": self.collector.prompt_values,
        }
        final = checkpoint.finish(staging, state, written)
        for old in checkpoint.prune(self.cfg.trainer.output_dir, self.cfg.trainer.keep_checkpoints):
            self.metrics.print(f"distrl: removed {old} (trainer.keep_checkpoints={self.cfg.trainer.keep_checkpoints})")
        return final

    def check_shared_output_dir(self) -> None:
        """Each writing role's rank 0 writes a file into ``trainer.output_dir``; the driver must see
        it, or checkpoints would land where resume cannot find them (:class:`CheckpointError`)."""
        for group in (g for g in (self.learner, self.critic) if g is not None):
            path = Path(self.cfg.trainer.output_dir) / f".probe-{group.role}-{uuid.uuid4().hex[:8]}"
            node = self.get(group.call_rank(0, "probe_output_dir", str(path)), group.role, self.startup_timeout_s)
            if not path.exists():
                raise checkpoint.not_shared_error(group.role, node, path)
            path.unlink()

    def get(self, handles: Handle | list[Handle], role: str, timeout_s: float | None = None):
        """The values of ``handles`` (see :meth:`distrl.backends.Backend.get`)."""
        return self.backend.get(handles, role, timeout_s)

    def groups(self) -> list[RoleGroup]:
        """The role groups this run started."""
        all_groups = (self.rollout, self.learner, self.reward, self.batches, self.reference, self.critic)
        return [g for g in all_groups if g is not None]

    def shutdown(self) -> None:
        """Stop the collector's background work, every role, and what the backend started."""
        self.collector.close()
        for group in self.groups():
            group.shutdown()
        self.backend.shutdown()
        self.lock.close()
