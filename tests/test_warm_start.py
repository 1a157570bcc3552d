"""The warm start's stop rule: pure logic, and a tiny model on CPU that stops at the first check that passes."""

import json

import pytest

from distrl.config import ConfigError, compose_config
from distrl.models import warm_start as ws
from distrl.models.prepare import probe_problems, warm_start_problems
from distrl.models.tiny import build_tiny_model


def test_the_rule_fires_only_on_check_steps_at_the_threshold():
    rule = ws.StopRule(check_every=25, stop_pass_at_k=0.5)
    assert not ws.should_stop(25, 0.49, rule)
    assert ws.should_stop(25, 0.5, rule)
    assert not ws.should_stop(30, 0.9, rule)  # not a check step
    assert not ws.should_stop(50, None, rule)  # not measured
    assert not ws.should_stop(25, 1.0, ws.StopRule(check_every=0))  # rule off


def test_warm_start_stops_at_the_first_passing_check_and_keys_the_cache_by_the_rule(tmp_path, monkeypatch):
    base = build_tiny_model(tmp_path / "base", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    pairs = [(f"{a}+{b}=", str(a + b)) for a in range(5) for b in range(5)]
    measured = iter([(0.0, 0.1), (0.0, 0.7), (0.0, 0.9)])
    monkeypatch.setattr(ws, "probe", lambda *args, **kwargs: next(measured))
    rule = ws.StopRule(check_every=2, stop_pass_at_k=0.6, probe_k=4)
    out = ws.warm_start(base, pairs, tmp_path / "cache", steps=10, batch_size=4, probe_pairs=pairs[:3], rule=rule)
    record = json.loads((out / "warm_start.json").read_text())
    assert record["stopped_at"] == 4
    assert [c["step"] for c in record["checks"]] == [2, 4]
    other = ws.warm_start(base, pairs, tmp_path / "cache", steps=2, batch_size=4, probe_pairs=pairs[:3],
                          rule=ws.StopRule(check_every=2, stop_pass_at_k=0.8, probe_k=4))  # fmt: skip
    assert other != out


def test_watched_pairs_are_recorded_at_every_check_but_never_stop_the_warm_start(tmp_path, monkeypatch):
    base = build_tiny_model(tmp_path / "base", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    pairs = [(f"{a}+{b}=", str(a + b)) for a in range(5) for b in range(5)]
    probe_pairs, watch_pairs = pairs[:3], pairs[3:6]
    seen = []

    def measure(model, tokenizer, measured, **kwargs):
        seen.append(list(measured))
        return (0.5, 1.0) if list(measured) == watch_pairs else (0.0, 0.1)  # the watch set would pass

    monkeypatch.setattr(ws, "probe", measure)
    rule = ws.StopRule(check_every=2, stop_pass_at_k=0.6, probe_k=4)
    out = ws.warm_start(base, pairs, tmp_path / "cache", steps=4, batch_size=4, probe_pairs=probe_pairs, rule=rule,
                        watch_pairs=watch_pairs)  # fmt: skip
    record = json.loads((out / "warm_start.json").read_text())
    assert record["stopped_at"] == 4 and [c["step"] for c in record["checks"]] == [2, 4]
    assert [c["watch_greedy_acc"] for c in record["checks"]] == [0.5, 0.5]
    assert [c["watch_pass@4"] for c in record["checks"]] == [1.0, 1.0]
    assert seen == [probe_pairs, watch_pairs] * 2
    unwatched = ws.warm_start(base, pairs, tmp_path / "cache", steps=4, batch_size=4, probe_pairs=probe_pairs,
                              rule=rule)  # fmt: skip
    assert unwatched != out  # a record with the watch set is not served for a run without it


def test_probe_measures_greedy_accuracy_and_pass_at_k(tmp_path):
    base = build_tiny_model(tmp_path / "base", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    greedy, pass_k = ws.probe(model, tokenizer, [("1+1=", "2"), ("2+3=", "5")], k=4, seed=0)
    assert 0.0 <= greedy <= 1.0 and 0.0 <= pass_k <= 1.0


def test_warm_start_and_probe_problems_avoid_the_rl_training_and_heldout_prompts():
    cfg = compose_config([])
    from distrl.trainer import load_eval_prompts, load_prompts

    records = load_prompts(cfg)
    training, heldout = {p.prompt for p in records}, {p.prompt for p in load_eval_prompts(cfg, records)}
    problems = {p.prompt for p in warm_start_problems(cfg)}
    probe = {p.prompt for p in probe_problems(cfg)}
    assert problems and not training & problems and not heldout & problems
    assert len(probe) == cfg.model.warm_start_probe_size
    assert not probe & (training | heldout | problems)


def test_the_probe_is_drawn_like_the_heldout_set_so_it_is_no_easier():
    """The stop rule reads the probe as a forecast of held-out pass@k: the probe must not be made of
    easier problems (the old probe, the last distinct warm-start problems, was a quarter single-digit sums
    against a tenth of the held-out set, and read pass@8 0.875 where held-out pass@8 was 0.71)."""
    from distrl.data.arithmetic import careless_sum
    from distrl.trainer import load_eval_prompts, load_prompts

    def single_digit(records):
        return sum(r.extra_info["a"] < 10 and r.extra_info["b"] < 10 for r in records) / len(records)

    def carrying(records):
        return sum(careless_sum(r.extra_info["a"], r.extra_info["b"]) != int(r.ground_truth) for r in records) / len(
            records
        )

    for seed in (0, 1, 2):
        cfg = compose_config([f"trainer.seed={seed}"])
        probe, heldout = probe_problems(cfg), load_eval_prompts(cfg, load_prompts(cfg))
        assert single_digit(probe) <= single_digit(heldout) + 0.03
        assert carrying(probe) >= carrying(heldout) - 0.05


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.warm_start_stop_pass_at_k=1.5", "model.warm_start_stop_pass_at_k=1.5 must be in"),
        ("model.warm_start_check_every=-1", "model.warm_start_check_every=-1 must be >= 0"),
        ("model.warm_start_probe_k=0", "model.warm_start_probe_k=0 must be >= 1"),
        ("model.warm_start_teacher_error=1.2", "model.warm_start_teacher_error=1.2 must be in"),
        ("model.warm_start_weight_decay=-0.1", "model.warm_start_weight_decay=-0.1 must be >= 0"),
        ("model.warm_start_batch_size=0", "model.warm_start_batch_size=0 must be >= 1"),
    ],
)
def test_out_of_range_stop_rule_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config([override])


@pytest.mark.parametrize("scratchpad", [False, True])
def test_the_careless_teacher_drops_carries_in_about_its_error_rate_and_the_probe_keeps_right_answers(scratchpad):
    from distrl.data.arithmetic import careless_sum
    from distrl.models.prepare import supervised_target, teacher_pairs

    cfg = compose_config([f"data.scratchpad={str(scratchpad).lower()}"])
    problems = warm_start_problems(cfg)
    pairs = teacher_pairs(problems, 0.7, seed=0)
    careless = [str(careless_sum(p.extra_info["a"], p.extra_info["b"])) for p in problems]
    carries = [i for i, p in enumerate(problems) if careless[i] != p.ground_truth]
    wrong = [i for i in carries if pairs[i][1] != supervised_target(problems[i])]
    assert 0.65 < len(wrong) / len(carries) < 0.75
    assert all(pairs[i][1].split(";")[-1] == careless[i] for i in wrong)
    assert all(pairs[i][1] == supervised_target(p) for i, p in enumerate(problems) if i not in set(carries))
    assert teacher_pairs(problems, 0.0, seed=0) == [(p.prompt, supervised_target(p)) for p in problems]
    assert teacher_pairs(problems, 0.7, seed=0) == pairs  # reproducible: the cache key depends on it


def test_each_problem_gets_its_own_teacher_draws_so_both_answers_are_taught_for_most_carry_prompts():
    from distrl.data.arithmetic import careless_sum
    from distrl.models.prepare import supervised_target, teacher_pairs

    problems = warm_start_problems(compose_config([]))
    pairs = teacher_pairs(problems, 0.7, seed=0, per_problem=8)
    assert len(pairs) == 8 * len(problems)
    assert [prompt for prompt, _ in pairs[::8]] == [p.prompt for p in problems]
    careless = [str(careless_sum(p.extra_info["a"], p.extra_info["b"])) for p in problems]
    carries = [i for i, p in enumerate(problems) if careless[i] != p.ground_truth]
    taught = [[answer for _, answer in pairs[8 * i : 8 * i + 8]] for i in carries]
    both = [set(t) == {supervised_target(problems[i]), careless[i]} for t, i in zip(taught, carries, strict=True)]
    assert sum(both) / len(carries) > 0.9  # 1 - 0.7**8 - 0.3**8 = 0.94 of carry prompts
    wrong = sum(a == careless[i] for t, i in zip(taught, carries, strict=True) for a in t)
    assert 0.67 < wrong / (8 * len(carries)) < 0.73
