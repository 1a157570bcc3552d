import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent

#: Overrides that make a job small enough for a 2-core CI machine.
TINY = [
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.intermediate_size=128",
    "model.warm_start_steps=20",
    "model.warm_start_check_every=0",  # no probe: tests/test_warm_start.py covers the stop rule
    "data.train_batch_size=2",
    "data.num_problems=32",
    "rollout.n=4",
    "rollout.max_new_tokens=6",
    "trainer.total_steps=2",
    "trainer.loggers=[jsonl]",
    "algorithm.pvpo_samples=2",
    "data.val_size=4",
    "trainer.eval_k=2",
    "trainer.eval_before_train=false",  # no step-0 row; tests/test_eval.py covers it
]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache of built and warm-started tiny models for the whole session."""
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture
def tiny_config(tmp_path, model_cache):
    """``tiny_config(*overrides)`` → a validated Config writing into tmp_path."""
    from distrl.config import compose_config

    def make(*overrides: str):
        return compose_config(
            [*TINY, f"model.cache_dir={model_cache}", f"trainer.output_dir={tmp_path / 'run'}", *overrides]
        )

    return make


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance shared by the tests of one module."""
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def train_inline(cfg) -> tuple:
    """Train ``cfg`` to the end in this process (shut down whatever happens); the trainer and the
    rows of its ``metrics.jsonl``."""
    from distrl.metrics import read_metrics
    from distrl.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    return trainer, read_metrics(trainer.metrics.jsonl_path)
