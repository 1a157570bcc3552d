"""The policy a job starts from: ``model.path`` as given, or the tiny model built and warm-started."""

from __future__ import annotations

import os
from pathlib import Path

from distrl.config import Config, check_learning_rate
from distrl.data.arithmetic import make_problems
from distrl.data.records import PromptRecord
from distrl.models.loading import check_model_path, count_parameters
from distrl.models.tiny import build_tiny_model
from distrl.models.warm_start import publish, warm_start

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
    pairs = [(p.prompt, p.ground_truth) for p in warm_start_problems(cfg)]
    return str(warm_start(base, pairs, cache / "warm_start", steps=m.warm_start_steps, seed=cfg.trainer.seed))


def warm_start_problems(cfg: Config) -> list[PromptRecord]:
    """The problems the tiny model is warm-started on (none when it is not)."""
    if cfg.model.path is not None or cfg.model.warm_start_steps == 0:
        return []
    return make_problems(
        WARM_START_PROBLEMS, digits=cfg.data.task_digits, seed=cfg.trainer.seed + WARM_START_SEED_OFFSET
    )
