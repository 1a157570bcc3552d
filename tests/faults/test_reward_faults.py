"""Faults in user reward functions, in a whole run: nothing hangs, the cause is named and counted."""

from pathlib import Path

import pytest

from distrl.metrics import read_metrics
from distrl.trainer import Trainer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "coin_reward.py"


@pytest.mark.vllm
def test_a_reward_function_that_hangs_on_some_samples_times_them_out_and_the_run_goes_on(tiny_config):
    cfg = tiny_config("cluster.backend=inline", "rollout=hf", "reward.workers=2", "reward.timeout_s=1",
                      f"reward.function={FIXTURES}:hangs_on_odd_length")  # fmt: skip
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    steps = read_metrics(Path(cfg.trainer.output_dir) / "metrics.jsonl")
    assert [m["step"] for m in steps] == [1, 2]
    timeouts = sum(m["reward/timeouts"] for m in steps)
    assert timeouts > 0 and all(m["reward/errors"] >= m["reward/timeouts"] for m in steps)
