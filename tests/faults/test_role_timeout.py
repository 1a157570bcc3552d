"""A role that never answers ends the run within trainer.role_timeout_s, naming the role."""

from pathlib import Path

import pytest

from distrl.trainer import Trainer, TrainingError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "coin_reward.py"


@pytest.mark.ray
def test_a_stuck_role_stops_the_run_naming_it_instead_of_hanging(tiny_config):
    cfg = tiny_config("reward.workers=0", "trainer.role_timeout_s=5",  # the scorer blocks the reward actor itself
                      f"reward.function={FIXTURES}:hangs_on_odd_length")  # fmt: skip
    trainer = Trainer(cfg)
    try:
        with pytest.raises(TrainingError, match=r"the reward role did not answer within 5 s .*Last checkpoint|last"):
            trainer.fit()
    finally:
        trainer.shutdown()
