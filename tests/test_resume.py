"""Exact resume: a run stopped half way (SIGTERM after step 2, the preemption path) and resumed
gives the same metrics.jsonl rows (every metric but timings) and the same final weights as a run
that was never stopped, with the default dtypes (bf16 weight sync), for GRPO and PPO (critic)."""

import json
import os
import signal

import pytest
import torch
from conftest import ROOT
from transformers import AutoModelForCausalLM

from distrl.metrics import read_metrics
from distrl.roles.update import make_optimizer, run_update
from distrl.trainer import Trainer, TrainingError

SPREAD = f"reward.function={ROOT / 'tests/fixtures/coin_reward.py'}:odd_length"
#: Metrics that measure time or memory: the only ones a resumed run may log differently.
CLOCKS = ("timing/", "compute/", "memory/", "throughput/")

pytestmark = pytest.mark.vllm


def run(cfg, stop_after: int | None = None) -> Trainer:
    """Train ``cfg``; with ``stop_after``, a SIGTERM arrives during step ``stop_after``."""
    trainer = Trainer(cfg)
    if stop_after is not None:
        step = trainer.step

        def preempted(k: int) -> dict[str, float]:
            if k + 1 == stop_after:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(k)

        trainer.step = preempted
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    return trainer


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(CLOCKS)} for row in rows]


@pytest.mark.parametrize("preset", ["grpo", "ppo"])
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(preset, tiny_config, tmp_path):
    common = [f"algorithm={preset}", SPREAD, "cluster.backend=inline", "trainer.total_steps=4",
              "learner.mini_batches=2", "learner.warmup_steps=3", "learner.lr_schedule=cosine"]  # fmt: skip
    whole = tmp_path / "whole"
    run(tiny_config(*common, f"trainer.output_dir={whole}"))
    cut = tmp_path / "cut"
    with pytest.raises(TrainingError, match="stopped by SIGTERM after step 2"):
        run(tiny_config(*common, f"trainer.output_dir={cut}"), stop_after=2)
    resumed = run(tiny_config(*common, f"trainer.output_dir={cut}", "trainer.resume=auto"))
    assert resumed.start_step == 2

    rows = {name: read_metrics(folder / "metrics.jsonl") for name, folder in (("whole", whole), ("cut", cut))}
    assert [r["step"] for r in rows["cut"]] == [r["step"] for r in rows["whole"]] == [1, 2, 3, 4]
    assert comparable(rows["cut"]) == comparable(rows["whole"])
    assert rows["whole"][3]["policy/grad_norm"] > 0  # the steps after the cut trained
    if preset == "ppo":
        assert "critic/loss" in rows["whole"][3]

    final = {name: folder / "checkpoints" / "step_4" for name, folder in (("whole", whole), ("cut", cut))}
    a, b = (AutoModelForCausalLM.from_pretrained(final[n]).state_dict() for n in ("whole", "cut"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    if preset == "ppo":
        critic = [torch.load(final[n] / "critic" / "critic.pt", weights_only=True) for n in ("whole", "cut")]
        for name in critic[0]:
            assert torch.equal(critic[0][name], critic[1][name]), name
    states = [json.loads((final[n] / "trainer_state.json").read_text()) for n in ("whole", "cut")]
    assert states[0]["data"] == states[1]["data"]


class Rows:
    """The two things :func:`run_update` asks of a batch: its length and a selection of rows."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def select(self, index: torch.Tensor) -> "Rows":
        return Rows(self.x[index])


def test_dropout_masks_follow_the_step_seed_not_what_ran_before():
    """A resumed process has drawn other random numbers than an unbroken one before the same step."""

    def trained(history: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))
        optimizer, scheduler = make_optimizer(model.parameters(), lr=1e-2, weight_decay=0.0, warmup_steps=0,
                                              total_steps=4, schedule="constant")  # fmt: skip
        torch.manual_seed(history)
        run_update(
            model, optimizer, scheduler, Rows(torch.ones(8, 8)), epochs=2, mini_batches=2, grad_clip=1.0,
            generator=torch.Generator().manual_seed(5), micro_batches=lambda mini: [mini],
            micro_loss=lambda micro, mini: (model(micro.x).square().mean(), {}),
        )  # fmt: skip
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(trained(history=1), trained(history=2))
