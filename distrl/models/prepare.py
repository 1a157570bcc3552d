"""The policy a job starts from: ``model.path`` as given, or the tiny model built and warm-started."""

from __future__ import annotations

import os
from pathlib import Path

from distrl.config import Config, check_learning_rate
from distrl.data.arithmetic import make_problems
from distrl.data.records import PromptRecord
from distrl.models.loading import check_model_path, count_parameters
from distrl.models.tiny import build_tiny_model
from distrl.models.warm_start import StopRule, publish, warm_start

#: Seed offset so the warm-start problems differ from the RL training problems.
WARM_START_SEED_OFFSET = 10_007
#: Problems in the warm-start set.
WARM_START_PROBLEMS = 4000


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
    probe = probe_problems(cfg, problems)
    probe_prompts = {p.prompt for p in probe}
    pairs = [(p.prompt, supervised_target(p)) for p in problems if p.prompt not in probe_prompts]
    rule = StopRule(check_every=m.warm_start_check_every, stop_pass_at_k=m.warm_start_stop_pass_at_k,
                    probe_k=m.warm_start_probe_k)  # fmt: skip
    folder = warm_start(
        base,
        pairs,
        cache / "warm_start",
        steps=m.warm_start_steps,
        lr=m.warm_start_lr,
        seed=cfg.trainer.seed,
        probe_pairs=[(p.prompt, supervised_target(p)) for p in probe] if rule.check_every > 0 else (),
        rule=rule,
    )
    return str(folder)


def warm_start_problems(cfg: Config) -> list[PromptRecord]:
    """The problems the tiny model is warm-started on, the probe of its stop rule included (none when it
    is not warm-started): :data:`WARM_START_PROBLEMS` generated problems less any built-in RL training
    prompt, so RL trains on problems the warm start never saw."""
    if cfg.model.path is not None or cfg.model.warm_start_steps == 0:
        return []
    training = set()
    if not cfg.data.train_files:
        training = {p.prompt for p in make_problems(cfg.data.num_problems, digits=cfg.data.task_digits,
                                                    seed=cfg.trainer.seed)}  # fmt: skip
    problems = make_problems(
        WARM_START_PROBLEMS,
        digits=cfg.data.task_digits,
        seed=cfg.trainer.seed + WARM_START_SEED_OFFSET,
        scratchpad=cfg.data.scratchpad,
    )
    return [p for p in problems if p.prompt not in training]


def supervised_target(record: PromptRecord) -> str:
    """What the warm start teaches for ``record``: its worked solution (the scratchpad variant), else the answer."""
    return (record.extra_info or {}).get("ground_truth_response") or record.ground_truth


def probe_problems(cfg: Config, problems: list[PromptRecord]) -> list[PromptRecord]:
    """The stop rule's probe: the last ``model.warm_start_probe_size`` distinct prompts of the warm-start
    ``problems`` (its supervised pairs exclude them; the held-out split excludes every warm-start problem)."""
    probe: dict[str, PromptRecord] = {}
    for p in reversed(problems):
        if len(probe) == cfg.model.warm_start_probe_size:
            break
        probe.setdefault(p.prompt, p)
    return list(probe.values())
