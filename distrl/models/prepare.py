"""The policy a job starts from: ``model.path`` as given, or the tiny model built and warm-started."""

from __future__ import annotations

import os
import random
from pathlib import Path

from distrl.config import Config, check_learning_rate
from distrl.data.arithmetic import careless_sum, make_heldout, make_problems, worked_solution
from distrl.data.records import PromptRecord
from distrl.models.loading import check_model_path, count_parameters
from distrl.models.tiny import build_tiny_model
from distrl.models.warm_start import StopRule, publish, warm_start

#: Seed offset so the warm-start problems differ from the RL training problems.
WARM_START_SEED_OFFSET = 10_007
#: Seed offset of the stop rule's probe problems (:func:`probe_problems`).
PROBE_SEED_OFFSET = 30_011
#: Problems in the warm-start set.
WARM_START_PROBLEMS = 4000
#: Demonstrations per warm-start problem, each drawn from the teacher on its own (:func:`teacher_pairs`).
DEMOS_PER_PROBLEM = 8


def prepare_policy(cfg: Config) -> str:
    """The folder of the initial policy (a given ``model.path`` is checked: it exists, and a real
    model's learning rate is a real model's). With ``model.path`` unset, build the tiny model (cached by
    its sizes) and warm-start it on the built-in task (cached by everything that determines it)."""
    if cfg.model.path is not None:
        check_model_path(cfg.model.path)
        check_learning_rate(cfg, count_parameters(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code))
        return cfg.model.path
    m = cfg.model
    cache = Path(m.cache_dir).expanduser()
    base = cache / f"tiny-h{m.hidden_size}-l{m.num_layers}-a{m.num_heads}-i{m.intermediate_size}-s{cfg.trainer.seed}"
    if not (base / "generation_config.json").exists():  # written last by build_tiny_model
        staging = base.with_name(f"{base.name}.tmp{os.getpid()}")
        build_tiny_model(
            staging,
            hidden_size=m.hidden_size,
            num_layers=m.num_layers,
            num_heads=m.num_heads,
            intermediate_size=m.intermediate_size,
            seed=cfg.trainer.seed,
        )
        publish(staging, base)
    if m.warm_start_steps == 0:
        return str(base)
    problems = warm_start_problems(cfg)
    probe = probe_problems(cfg)
    pairs = teacher_pairs(problems, m.warm_start_teacher_error, seed=cfg.trainer.seed, per_problem=DEMOS_PER_PROBLEM)
    rule = StopRule(check_every=m.warm_start_check_every, stop_pass_at_k=m.warm_start_stop_pass_at_k,
                    probe_k=m.warm_start_probe_k)  # fmt: skip
    folder = warm_start(
        base,
        pairs,
        cache / "warm_start",
        steps=m.warm_start_steps,
        batch_size=m.warm_start_batch_size,
        lr=m.warm_start_lr,
        weight_decay=m.warm_start_weight_decay,
        seed=cfg.trainer.seed,
        probe_pairs=[(p.prompt, supervised_target(p)) for p in probe] if rule.check_every > 0 else (),
        rule=rule,
    )
    return str(folder)


def warm_start_problems(cfg: Config) -> list[PromptRecord]:
    """The problems the tiny model is warm-started on (none when it is not warm-started):
    :data:`WARM_START_PROBLEMS` problems of the built-in task's ``warm_start`` split
    (:func:`~distrl.data.arithmetic.split_of`), so RL training, held-out and probe problems are never among them."""
    if cfg.model.path is not None or cfg.model.warm_start_steps == 0:
        return []
    seed = cfg.trainer.seed + WARM_START_SEED_OFFSET
    return make_problems(WARM_START_PROBLEMS, digits=cfg.data.task_digits, seed=seed, scratchpad=cfg.data.scratchpad,
                         split="warm_start")  # fmt: skip


def supervised_target(record: PromptRecord) -> str:
    """The right response to ``record``: its worked solution (the scratchpad variant), else the answer."""
    return (record.extra_info or {}).get("ground_truth_response") or record.ground_truth


def careless_target(record: PromptRecord) -> str:
    """The careless teacher's response to a built-in problem: every carry forgotten
    (:func:`~distrl.data.arithmetic.careless_sum`), in the worked form for the scratchpad variant."""
    a, b = record.extra_info["a"], record.extra_info["b"]
    if "ground_truth_response" in record.extra_info:
        return worked_solution(a, b, carry=False)
    return str(careless_sum(a, b))


def teacher_pairs(
    problems: list[PromptRecord], error: float, *, seed: int, per_problem: int = 1
) -> list[tuple[str, str]]:
    """The warm start's (prompt, response) demonstrations, ``per_problem`` for each problem in order (rows
    ``i * per_problem`` to ``(i + 1) * per_problem - 1`` are ``problems[i]``'s): each one independently the
    problem's :func:`careless_target` with probability ``error`` (reproducible by ``seed``), else its
    :func:`supervised_target`. The flaw shows only where a column carries, so the right answer stays among
    the model's samples while imitation makes the careless one its greedy answer there: what RL with a
    verifier can fix. Several independent draws per prompt teach that mixture for every prompt; with one,
    each prompt has a single answer to memorize, and held-out carry problems keep fewer right samples
    (seed 1: held-out pass@8 on carry problems 0.62 with one draw, 0.78 with eight;
    ``benchmarks/results/default-job-calibration/results.md``)."""
    rng = random.Random(seed + WARM_START_SEED_OFFSET)
    return [
        (p.prompt, careless_target(p) if rng.random() < error else supervised_target(p))
        for p in problems
        for _ in range(per_problem)
    ]


def probe_problems(cfg: Config) -> list[PromptRecord]:
    """The stop rule's probe: ``model.warm_start_probe_size`` distinct problems of the ``probe`` split,
    a tenth of the task like the held-out split and drawn the same way
    (:func:`~distrl.data.arithmetic.make_heldout`), so that the probe's pass@k reads what held-out pass@k
    will be, on problems neither the warm start, RL nor evaluation uses. The earlier probe, the last
    distinct warm-start problems, was easier than the held-out set (a quarter of it single-digit sums, of
    which the held-out set's distinct draws from a small split hold a tenth): it read pass@8 0.875 where
    held-out pass@8 was 0.71 (seed 1, 1300 steps, ``benchmarks/results/default-job-calibration/results.md``)."""
    return make_heldout(cfg.model.warm_start_probe_size, digits=cfg.data.task_digits,
                        seed=cfg.trainer.seed + PROBE_SEED_OFFSET, exclude=set(), scratchpad=cfg.data.scratchpad,
                        split="probe")  # fmt: skip
