"""verl and TRL data and rewards as users have them: any JSON ground truth, one-path data files, extra
reward-dict keys as metrics, the math_dapo verifier and TRL-signature reward functions."""

import json
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import train_inline

from distrl.collect import RolloutStats, extra_metric_name
from distrl.config import ConfigError, compose_config
from distrl.data.records import load_records
from distrl.rewards import RewardScorer, Sample
from distrl.rewards.isolated import Isolation
from distrl.rewards.verifiers import verify_math_dapo
from distrl.roles.reward import RewardSummary
from distrl.trainer import load_prompts

#: Rows as verl's preprocessing scripts write them, with structured ground truths: a countdown-style
#: target with its numbers, several accepted answers, and the plain string verl's GSM8K script writes.
ROWS = [
    {"data_source": "countdown", "prompt": [{"role": "user", "content": "3+4="}], "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": {"target": 7, "numbers": [3, 4]}},
     "extra_info": {"split": "train", "index": 0, "tags": ["easy"]}},
    {"data_source": "countdown", "prompt": "5+2=", "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": ["7", "seven"]}, "extra_info": {"split": "train", "index": 1}},
    {"data_source": "countdown", "prompt": "1+1=", "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": "2"}, "extra_info": {"split": "train", "index": 2}},
]  # fmt: skip

REWARD = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """verl's signature; the ground truth is a dict, a list or a string, as the row holds it."""
    if isinstance(ground_truth, dict):
        accepted = {str(ground_truth["target"])}
        assert isinstance(ground_truth["numbers"], list) and isinstance(extra_info["tags"], list)
    elif isinstance(ground_truth, list):
        accepted = set(ground_truth)
    else:
        accepted = {ground_truth}
    right = solution_str.strip() in accepted
    return {"score": float(right), "acc": right, "format": float(solution_str.strip().isdigit()),
            "structured": float(not isinstance(ground_truth, str)), "pred": solution_str}
'''


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a Parquet file, nested values as struct and list columns (as pandas/datasets write verl data)."""
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_json_and_parquet_rows_keep_structured_ground_truths(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    records, _ = load_records(jsonl)
    assert [r.ground_truth for r in records] == [{"target": 7, "numbers": [3, 4]}, ["7", "seven"], "2"]
    assert records[0].extra_info["tags"] == ["easy"]
    parquet = write_parquet(tmp_path / "dict.parquet", [ROWS[0]])  # one struct column
    assert load_records(parquet)[0][0].ground_truth == {"target": 7, "numbers": [3, 4]}
    lists = write_parquet(tmp_path / "list.parquet", [ROWS[1], {**ROWS[1], "reward_model": {"ground_truth": ["1"]}}])
    assert [r.ground_truth for r in load_records(lists)[0]] == [["7", "seven"], ["1"]]


def test_one_data_file_without_brackets_is_the_one_element_list(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    one = compose_config([f"data.train_files={jsonl}", f"data.val_files={jsonl}"])
    listed = compose_config([f"data.train_files=[{jsonl}]"])
    assert one.data.train_files == listed.data.train_files == [str(jsonl)] and one.data.val_files == [str(jsonl)]
    assert load_prompts(one) == load_prompts(listed)
    with pytest.raises(ConfigError, match=r"data.train_files=3 must be a path or a list of paths"):
        compose_config(["data.train_files=3"])


def test_extra_numeric_keys_of_reward_dicts_become_metrics(tmp_path):
    path = tmp_path / "reward.py"
    path.write_text(REWARD)
    samples = [Sample("p", r, "countdown", g, {"tags": ["easy"]}) for r, g in
               (("7", {"target": 7, "numbers": [3, 4]}), ("seven", ["7", "seven"]), ("x", "2"))]  # fmt: skip
    result = RewardScorer(function=f"{path}:compute_score").score(samples)
    assert result.errors == 0 and result.scores == [1.0, 1.0, 0.0]
    assert result.extras == {"format": [1.0, 0.0, 0.0], "structured": [1.0, 1.0, 0.0]}  # "pred" is text
    stats = RolloutStats()
    nan = float("nan")
    summary = RewardSummary(scores=[1.0, 1.0], raw_scores=[1.0, 1.0], accuracy=[1.0, 1.0], lengths=[1.0, 1.0],
                            prompt_lengths=[1.0, 1.0], truncated=[0.0, 0.0], policy_versions=[0.0, 0.0],
                            group_ids=["a", "a"], errors=0, timeouts=0, first_error=None,
                            extras={"format": [1.0, nan], "mean": [0.5, 0.5]})  # fmt: skip
    stats.add(summary)
    metrics = stats.metrics()
    assert metrics["reward/format"] == 1.0  # the mean over the samples that returned the key
    assert metrics["reward/fn_mean"] == 0.5 and metrics["reward/mean"] == 1.0  # distrl's own name is kept
    assert extra_metric_name("format") == "reward/format"


def test_a_built_in_verifier_given_a_structured_ground_truth_names_the_fix():
    result = RewardScorer().score([Sample("p", "7", "arithmetic", ["7"], {})])
    assert result.errors == 1 and "compares text" in result.first_error and "reward.function" in result.first_error


@pytest.mark.parametrize(
    ("response", "truth", "right"),
    [
        ("Let me think.\nAnswer: 34", "34", True),
        ("Answer: 12\n...wait.\nAnswer: $34.0$", "34", True),  # the last Answer: counts; numbers by value
        ("Answer: \\boxed{\\frac{1}{2}}", "\\frac12", True),
        ("The answer is 34", "34", False),  # no Answer: line
        ("Answer: 35", "34", False),
        ("Answer: 34" + "." * 400, "34", False),  # only the last 300 characters are searched
    ],
)
def test_math_dapo_scores_plus_or_minus_one_with_accuracy(response, truth, right):
    assert verify_math_dapo(response, truth) == {"score": 1.0 if right else -1.0, "acc": float(right)}
    result = RewardScorer().score([Sample("p", response, "math_dapo", truth, {})])
    assert result.scores == [1.0 if right else -1.0] and result.accuracy == [float(right)]


TRL_REWARDS = '''
def accuracy(completions, solution, **kwargs):
    """TRL's shape: the dataset's answer column by name; None where it does not apply."""
    assert kwargs["prompts"] == ["2+2=", "3+3=", "x"] and kwargs["data_source"] == ["d", "d", "d"]
    assert kwargs["difficulty"] == [1, 2, None] and kwargs["answer"] == solution
    return [float(c == s) if s is not None else None for c, s in zip(completions, solution)]


def wants_a_missing_column(completions, reasoning_trace, **kwargs):
    return [0.0] * len(completions)


def no_completions(prompts):
    return [0.0] * len(prompts)
'''


@pytest.mark.parametrize("workers", [0, 1])
def test_trl_reward_functions_get_prompts_completions_and_columns(tmp_path, workers):
    path = tmp_path / "trl_rewards.py"
    path.write_text(TRL_REWARDS)
    samples = [Sample("2+2=", "4", "d", "4", {"difficulty": 1}), Sample("3+3=", "7", "d", "6", {"difficulty": 2}),
               Sample("x", "y", "d", None, {})]  # fmt: skip
    isolation = Isolation(workers, 30.0, None)
    scorer = RewardScorer(function=f"{path}:accuracy", style="trl", isolation=isolation)
    try:
        result = scorer.score(samples)
    finally:
        scorer.close()
    assert (result.scores, result.errors) == ([1.0, 0.0, 0.0], 0)
    missing = RewardScorer(function=f"{path}:wants_a_missing_column", style="trl", isolation=isolation)
    try:
        failed = missing.score(samples)
    finally:
        missing.close()
    assert failed.errors == 3 and "reasoning_trace" in failed.first_error
    with pytest.raises(ValueError, match="no `completions` parameter"):
        RewardScorer(function=f"{path}:no_completions", style="trl")
    with pytest.raises(ValueError, match=r"reward.style='openrlhf' is not one of verl, trl"):
        RewardScorer(function=f"{path}:accuracy", style="openrlhf")


def test_verl_parquet_files_with_dict_and_list_ground_truths_train_and_log_extra_reward_keys(tiny_config, tmp_path):
    """The issue's done-when: Parquet ground truths that are objects (one file) and lists (another) reach
    the user's verl function as they are; its dict's extra numeric keys are logged per step."""

    def row(a: int, b: int, truth: object, tags: list[str]) -> dict:
        return {"data_source": "countdown", "prompt": f"{a}+{b}=", "reward_model": {"ground_truth": truth},
                "extra_info": {"tags": tags}}  # fmt: skip

    dicts = write_parquet(tmp_path / "dicts.parquet", [row(a, b, {"target": a + b, "numbers": [a, b]}, ["easy"])
                                                       for a, b in ((3, 4), (1, 2))])  # fmt: skip
    lists = write_parquet(
        tmp_path / "lists.parquet", [row(a, b, [str(a + b), "many"], []) for a, b in ((5, 2), (6, 1))]
    )
    reward = tmp_path / "reward.py"
    reward.write_text(textwrap.dedent(REWARD))
    cfg = tiny_config("cluster.backend=inline", "rollout=hf", f"data.train_files=[{dicts},{lists}]",
                      "data.train_batch_size=4", f"reward.function={reward}:compute_score",
                      "trainer.total_steps=3")  # fmt: skip
    _, rows = train_inline(cfg)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert row["reward/errors"] == 0
        assert row["reward/structured"] == 1.0  # every ground truth arrived as a dict or a list
        assert 0.0 <= row["reward/format"] <= 1.0 and "reward/pred" not in row
