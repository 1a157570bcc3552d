"""Held-out evaluation: which prompts, what is counted, and a run that logs it."""

import json
import math

import pytest
from conftest import train_inline

from distrl.config import compose_config
from distrl.evaluation import heldout_metrics
from distrl.models.prepare import warm_start_problems
from distrl.roles.reward import RewardSummary
from distrl.trainer import load_eval_prompts, load_prompts


def summary(group_ids: list[str], accuracy: list[float], scores: list[float]) -> RewardSummary:
    n = len(group_ids)
    return RewardSummary(scores=scores, raw_scores=scores, accuracy=accuracy, lengths=[1.0] * n,
                         prompt_lengths=[1.0] * n, truncated=[0.0] * n, policy_versions=[0.0] * n,
                         group_ids=group_ids, errors=0, timeouts=0, first_error=None)  # fmt: skip


def test_heldout_metrics_count_prompts_not_samples():
    sources = {"a": "math", "b": "math", "c": "code"}
    greedy = [summary(["a", "b", "c"], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0])]
    sampled = [  # two engines' shards; prompt a: 1 of 4 right, b: 0 of 4, c: 4 of 4
        summary(["a", "a", "b", "b", "c", "c"], [1.0, 0.0, 0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
        summary(["a", "a", "b", "b", "c", "c"], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.0, 0.0, 1.0, 1.0]),
    ]
    metrics = heldout_metrics(greedy, sampled, sources)
    assert metrics["eval/greedy_acc"] == pytest.approx(1 / 3)
    assert metrics["eval/pass@1"] == pytest.approx((0.25 + 0.0 + 1.0) / 3)
    assert metrics["eval/pass@k"] == pytest.approx(2 / 3)
    assert metrics["eval/reward_mean"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert metrics["eval/math/pass@k"] == 0.5 and metrics["eval/code/greedy_acc"] == 0.0


def test_prompts_no_verifier_judged_count_in_reward_only():
    nan = math.nan
    metrics = heldout_metrics([summary(["a"], [nan], [0.7])], [summary(["a", "a"], [nan, nan], [0.2, 0.4])], {"a": "x"})
    assert metrics == {"eval/reward_mean": pytest.approx(0.3)}


def test_the_built_in_heldout_split_shares_no_prompt_with_training_or_warm_start():
    cfg = compose_config(["data.num_problems=256", "data.val_size=128"])
    train = load_prompts(cfg)
    heldout = load_eval_prompts(cfg, train)
    assert len(heldout) == 128 and len({r.prompt for r in heldout}) == 128
    seen = {r.prompt for r in train} | {r.prompt for r in warm_start_problems(cfg)}
    assert not seen & {r.prompt for r in heldout}


def test_val_files_are_evaluated_before_training_every_k_steps_and_at_the_end(tiny_config, tmp_path, capsys):
    rows = [{"prompt": f"{a}+{b}=", "data_source": "arithmetic", "reward_model": {"ground_truth": str(a + b)}}
            for a, b in ((3, 4), (12, 30), (7, 7))]  # fmt: skip
    rows.append({"prompt": "2+2=", "data_source": "gsm8k", "reward_model": {"ground_truth": "4"}})
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config("cluster.backend=inline", f"data.val_files=[{val}]", "trainer.total_steps=3",
                      "trainer.eval_every=2", "trainer.eval_k=3", "trainer.eval_before_train=true")  # fmt: skip
    _, metrics = train_inline(cfg)
    assert [m["step"] for m in metrics] == [0, 1, 2, 3]
    evaluated = [m["step"] for m in metrics if "eval/greedy_acc" in m]
    assert evaluated == [0, 2, 3]
    for m in metrics:
        if m["step"] in evaluated:
            assert 0 <= m["eval/greedy_acc"] <= 1 and m["eval/pass@1"] <= m["eval/pass@k"] <= 1
            assert {"eval/arithmetic/pass@k", "eval/gsm8k/greedy_acc", "timing/eval_s"} <= m.keys()
    assert "batch/groups_with_spread" in metrics[1]
    first, last = metrics[0]["eval/greedy_acc"], metrics[3]["eval/greedy_acc"]
    assert f"held-out greedy accuracy: {first:.3f} at step 0 -> {last:.3f} at step 3" in capsys.readouterr().out


def test_the_scratchpad_variant_reaches_training_heldout_and_warm_start_alike():
    from distrl.models.prepare import supervised_target

    cfg = compose_config(["data.scratchpad=true", "data.val_size=8", "data.num_problems=16"])
    train, warm = load_prompts(cfg), warm_start_problems(cfg)
    heldout = load_eval_prompts(cfg, train)
    assert {r.data_source for r in train + heldout + warm} == {"arithmetic_scratchpad"}
    a, b = warm[0].extra_info["a"], warm[0].extra_info["b"]
    assert supervised_target(warm[0]).endswith(f";{a + b}") and "+" in supervised_target(warm[0])
