"""Dead actors: a rollout engine that dies as the step's generation starts is replaced, given the current weights and
the step runs again; a dead learner, or one death more than trainer.max_restarts allows, stops
the run naming the member and the last checkpoint."""

import threading
import time
from pathlib import Path

import pytest
import ray

from distrl.backends.ray_backend import RayBackend
from distrl.config import RoleResources
from distrl.metrics import read_metrics
from distrl.trainer import Trainer, TrainingError

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.ray, pytest.mark.vllm]


def kill_when_called(trainer: Trainer, role: str, method: str, at_call: int) -> None:
    """Kill member 0 of ``role`` as the driver sends it its ``at_call``-th ``method`` call: the call
    goes to a dead actor (killed after it is sent, a fast call could finish first, and the death
    would show at some later phase instead)."""
    group = getattr(trainer, role)
    call_rank, calls = group.call_rank, []

    def kill_then_call(rank, name, *args, **kwargs):
        if name == method and rank == 0:
            calls.append(name)
            if len(calls) == at_call:
                ray.kill(group.actors[0])
        return call_rank(rank, name, *args, **kwargs)

    group.call_rank = kill_then_call


def kill_in_step(trainer: Trainer, role: str, method: str, step: int) -> None:
    """Kill member 0 of ``role`` as the driver sends it its first ``method`` call of step ``step`` (0-based,
    as :meth:`Trainer.step` counts). Unlike a call count, this does not depend on how many calls an
    earlier, restarted step made (whether a dead engine's result still went to scoring is a race)."""
    run_step, current = trainer.step, []

    def counted_step(at: int) -> dict[str, float]:
        current.append(at)
        return run_step(at)

    trainer.step = counted_step
    group = getattr(trainer, role)
    call_rank, killed = group.call_rank, []

    def kill_then_call(rank, name, *args, **kwargs):
        if name == method and rank == 0 and current and current[-1] == step and not killed:
            killed.append(step)
            ray.kill(group.actors[0])
        return call_rank(rank, name, *args, **kwargs)

    group.call_rank = kill_then_call


def stopped_run(trainer: Trainer, message: str) -> list[dict]:
    """Fit ``trainer``, which must stop with a :class:`TrainingError` matching ``message``; its metrics rows."""
    try:
        with pytest.raises(TrainingError, match=message):
            trainer.fit()
    finally:
        trainer.shutdown()
    return read_metrics(Path(trainer.cfg.trainer.output_dir) / "metrics.jsonl")


def test_a_killed_engine_is_replaced_and_the_run_goes_on_until_restarts_run_out(tiny_config):
    cfg = tiny_config("trainer.total_steps=3", "trainer.save_every=1", "trainer.max_restarts=1")
    trainer = Trainer(cfg)
    kill_when_called(trainer, "rollout", "generate", at_call=2)  # step 2's generation: replaced, step 2 again
    kill_in_step(trainer, "reward", "score", step=2)  # step 3's scoring: one death too many
    done = stopped_run(trainer, r"^reward \(rank 0\) actor died.*Last checkpoint: .*step_2 ")
    assert [m["step"] for m in done] == [1, 2]
    assert [m["recovery/restarts"] for m in done] == [0.0, 1.0]
    assert done[1]["rollout/policy_version"] == 1.0  # the new engine generated with step 1's weights
    assert done[1]["rollout/logprob_diff"] < 0.05  # … and they are the learner's, not the initial model's


def test_a_dead_learner_stops_the_run_naming_it_and_the_checkpoint(tiny_config):
    cfg = tiny_config("trainer.total_steps=3", "trainer.save_every=1")
    trainer = Trainer(cfg)
    save = trainer.save

    def save_then_kill(step: int, data=None) -> Path:
        saved = save(step, data)
        if step == 1:
            ray.kill(trainer.learner.actors[0])
        return saved

    trainer.save = save_then_kill
    done = stopped_run(trainer, r"^learner \(rank 0\) actor died.*Last checkpoint: .*step_1 ")
    assert [m["step"] for m in done] == [1]  # step 2 never finished


def test_a_busy_member_is_not_named_dead_and_a_killed_one_is():
    group = RayBackend(num_cpus=8).group("busy", threading.Event, 2, RoleResources(cpus=0), ranked=False)
    try:
        group.call_rank(0, "wait", 30)  # busy for 30 s: a ping would queue behind it
        started = time.monotonic()
        assert group.dead_ranks() == []
        assert time.monotonic() - started < 5
        ray.kill(group.actors[1])
        deadline = time.monotonic() + 10
        while group.dead_ranks() != [1] and time.monotonic() < deadline:  # the control store hears of it
            time.sleep(0.2)
        assert group.dead_ranks() == [1]
        group.restart(1)
        assert group.dead_ranks() == [] and ray.get(group.call_rank(1, "is_set")) is False
    finally:
        group.shutdown()
