"""Rewards: built-in verifiers, user functions (loading errors, failures, dicts, batched, async), the reward model."""

import asyncio
import math
import pickle
import re
import subprocess
import sys
import textwrap
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from distrl.rewards import BUILTIN_VERIFIERS, RewardScorer, Sample, load_user_function
from distrl.rewards import verifiers as verifiers_module
from distrl.rewards.verifiers import last_boxed_answer, normalize_math_answer

FIXTURE = Path(__file__).parent / "fixtures" / "reward_fn.py"


def sample(response: str, ground_truth: str | None = "4", data_source: str = "arithmetic", **extra) -> Sample:
    return Sample(
        prompt="2+2=", response=response, data_source=data_source, ground_truth=ground_truth, extra_info=extra
    )


def write_fn(tmp_path: Path, source: str, name: str = "reward.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def no_math_verify(monkeypatch):
    """Run the math verifier on its own normalization, whether or not math_verify is installed."""
    monkeypatch.setattr(verifiers_module, "_load_math_verify", lambda: None)


def test_rewards_import_no_ray_vllm_or_torch():
    code = (
        "import sys, distrl.rewards; "
        "bad = {'ray', 'vllm', 'torch', 'transformers', 'math_verify'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("response", "expected"),
    [("46", 1.0), ("46 ", 1.0), ("\n 46\n", 1.0), ("046", 0.0), ("46x", 0.0), ("4 6", 0.0), ("", 0.0)],
)
def test_arithmetic_exact_after_strip(response, expected):
    assert BUILTIN_VERIFIERS["arithmetic"](response, "46") == expected


@pytest.mark.parametrize(
    ("response", "ground_truth", "expected"),
    [
        ("The answer is #### 1,234", "1234", 1.0),
        ("#### $1,234 ", "#### 1234", 1.0),
        ("Natalia sold 48 clips... #### 72", "She sold 48/2 = 24 clips.\n#### 72", 1.0),
        ("#### 5 wrong first\nthen #### 72", "72", 1.0),
        ("#### 72\n#### 5", "72", 0.0),
        ("The answer is 72", "72", 0.0),
        ("#### ", "72", 0.0),
        ("#### 72 apples", "72", 0.0),
        ("#### 73", "72", 0.0),
    ],
)
def test_gsm8k_strict_last_marker(response, ground_truth, expected):
    for source in ("gsm8k", "openai/gsm8k"):
        assert BUILTIN_VERIFIERS[source](response, ground_truth) == expected


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
        ("\\fbox{7}", "7"),
        ("\\boxed{2} then \\fbox{7}", "7"),
        ("$\\boxed 5$ done", "5"),
        ("\\boxed {9}", "9"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{3", None),
        ("\\boxedx", None),
        ("no box", None),
    ],
)
def test_last_boxed_answer(text, answer):
    assert last_boxed_answer(text) == answer


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("\\dfrac{1}{2}", "\\frac12"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("\\$5.", "5"),
        ("1,\\!000", "1000"),
        ("x = 3", "3"),
        ("\\text{Monday}", "Monday"),
        ("2\\sqrt2", "2\\sqrt{2}"),
    ],
)
def test_math_normalization_equates_spellings(a, b):
    assert normalize_math_answer(a) == normalize_math_answer(b)


def test_math_normalization_does_no_arithmetic():
    assert normalize_math_answer("0.5") != normalize_math_answer("\\frac{1}{2}")
    assert normalize_math_answer("x=3") != normalize_math_answer("x==3")


@pytest.mark.parametrize(
    ("response", "ground_truth", "expected"),
    [
        ("so it is \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),
        ("\\boxed{3}", "We add them, so \\boxed{3}.", 1.0),
        ("\\boxed{\\dfrac{1}{2}}", "\\boxed{\\frac12}", 1.0),
        ("\\fbox{3}", "3", 1.0),
        ("\\boxed 3", "3", 1.0),
        ("\\boxed{4}", "We add them, so \\boxed{3}.", 0.0),
        ("the answer is 3", "3", 0.0),
        ("\\boxed{}", "3", 0.0),
        ("\\boxed{3", "3", 0.0),
    ],
)
def test_math_verifier(no_math_verify, response, ground_truth, expected):
    for source in ("math", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500"):
        assert BUILTIN_VERIFIERS[source](response, ground_truth) == expected


def test_math_verifier_asks_math_verify_when_strings_differ(monkeypatch):
    calls = []

    def parse(text, **kwargs):
        calls.append((text, kwargs))
        return [text]

    def verify(gold, target, **kwargs):
        calls.append(("verify", kwargs))
        return gold == ["\\boxed{\\frac{1}{2}}"]

    monkeypatch.setattr(
        verifiers_module, "_load_math_verify", lambda: types.SimpleNamespace(parse=parse, verify=verify)
    )
    assert BUILTIN_VERIFIERS["math"]("\\boxed{0.5}", "\\frac{1}{2}") == 1.0
    assert calls == [("\\boxed{\\frac{1}{2}}", {}), ("\\boxed{0.5}", {}), ("verify", {})]
    assert BUILTIN_VERIFIERS["math"]("\\boxed{7}", "3") == 0.0
    calls.clear()
    with ThreadPoolExecutor(1) as pool:  # math_verify's signal-based timeouts only work on the main thread
        assert pool.submit(BUILTIN_VERIFIERS["math"], "\\boxed{0.5}", "\\frac{1}{2}").result() == 1.0
    assert [kwargs for _, kwargs in calls] == [{"parsing_timeout": None}] * 2 + [{"timeout_seconds": None}]


def test_builtin_scorer_reports_accuracy_and_missing_ground_truth():
    result = RewardScorer().score(
        [
            sample("4"),
            sample("5"),
            sample("#### 4", data_source="openai/gsm8k"),
            sample("4", ground_truth=None),
        ]
    )
    assert result.scores == [1.0, 0.0, 1.0, 0.0]
    assert result.accuracy == [1.0, 0.0, 1.0, None]
    assert result.errors == 1
    assert "sample 3" in result.first_error and "no ground truth" in result.first_error


def test_check_data_sources_names_unknown_known_and_fix():
    scorer = RewardScorer()
    scorer.check_data_sources(["arithmetic", "openai/gsm8k", "lighteval/MATH"])
    with pytest.raises(ValueError) as info:
        scorer.check_data_sources(["arithmetic", "my/task", "other"])
    message = str(info.value)
    assert "'my/task'" in message and "'other'" in message
    assert "arithmetic" in message and "openai/gsm8k" in message and "HuggingFaceH4/MATH-500" in message
    assert "reward.function=path/to/file.py:fn" in message
    with pytest.raises(ValueError, match="my/task"):
        scorer.score([sample("4", data_source="my/task")])


def test_check_data_sources_accepts_anything_with_a_user_function():
    RewardScorer(function=f"{FIXTURE}:contains_answer").check_data_sources(["my/task"])


def test_example_fixture_function():
    result = RewardScorer(function=f"{FIXTURE}:contains_answer").score(
        [sample("it is 4", data_source="my/task"), sample("it is 5", data_source="my/task")]
    )
    assert (result.scores, result.accuracy, result.errors, result.first_error) == ([1.0, 0.0], [1.0, 0.0], 0, None)


def test_load_user_function_errors(tmp_path):
    with pytest.raises(ValueError, match=re.escape("path/to/file.py:function_name")):
        load_user_function(str(FIXTURE))
    with pytest.raises(FileNotFoundError, match=re.escape("missing.py")):
        load_user_function(f"{tmp_path}/missing.py:fn")
    broken = write_fn(tmp_path, "import nonexistent_package_xyz\n", "broken.py")
    with pytest.raises(ValueError, match="ModuleNotFoundError: No module named 'nonexistent_package_xyz'"):
        load_user_function(f"{broken}:fn")
    with pytest.raises(ValueError, match="has no 'nope'; functions defined there: contains_answer"):
        load_user_function(f"{FIXTURE}:nope")
    constant = write_fn(tmp_path, "SCORE = 3\n", "constant.py")
    with pytest.raises(ValueError, match=re.escape("'SCORE' in constant.py is not callable")):
        load_user_function(f"{constant}:SCORE")


def test_listing_omits_imported_callables(tmp_path):
    path = write_fn(tmp_path, "from os.path import join\n\ndef mine(): ...\n")
    with pytest.raises(ValueError, match=r"functions defined there: mine$"):
        load_user_function(f"{path}:other")


def test_signature_mismatch_fails_at_construction_and_names_batched(tmp_path):
    path = write_fn(
        tmp_path,
        """
        def per_sample(data_source, solution_str, ground_truth, extra_info=None):
            return 1.0

        def batch(data_sources, solution_strs, ground_truths, extra_infos):
            return [1.0] * len(data_sources)
        """,
    )
    with pytest.raises(ValueError, match=re.escape("reward.batched=true")):
        RewardScorer(function=f"{path}:batch")
    with pytest.raises(ValueError, match=re.escape("reward.batched=false")):
        RewardScorer(function=f"{path}:per_sample", batched=True)
    with pytest.raises(ValueError, match=re.escape("reward.function")):
        RewardScorer(batched=True)
    with pytest.raises(ValueError, match="set one of them"):
        RewardScorer(function=f"{path}:batch", model_path=str(tmp_path))


def test_user_function_failures_score_zero_and_are_counted(tmp_path):
    path = write_fn(
        tmp_path,
        """
        import math

        def fn(data_source, solution_str, ground_truth, extra_info=None):
            if solution_str == "boom":
                raise RuntimeError("exploded on purpose")
            return {"text": "a string", "nan": math.nan, "inf": math.inf, "none": None}.get(solution_str, 0.5)
        """,
    )
    scorer = RewardScorer(function=f"{path}:fn")
    result = scorer.score([sample("ok"), sample("boom"), sample("ok")])
    assert result.scores == [0.5, 0.0, 0.5]
    assert result.accuracy == [None, None, None]
    assert result.errors == 1
    assert result.first_error.startswith("sample 1 (data_source='arithmetic')")
    assert "Traceback" in result.first_error and "RuntimeError: exploded on purpose" in result.first_error

    for bad, shown in [("text", "'a string' (str)"), ("nan", "nan"), ("inf", "inf"), ("none", "None (NoneType)")]:
        result = scorer.score([sample("ok"), sample(bad)])
        assert (result.scores, result.errors) == ([0.5, 0.0], 1)
        assert shown in result.first_error


def test_user_function_dict_returns(tmp_path):
    path = write_fn(
        tmp_path,
        """
        def fn(data_source, solution_str, ground_truth, extra_info=None):
            return {
                "good": {"score": 2, "acc": True, "note": "ignored"},
                "no_acc": {"score": -1.5},
                "no_score": {"acc": 1.0},
                "bad_acc": {"score": 1.0, "acc": "yes"},
            }[solution_str]
        """,
    )
    result = RewardScorer(function=f"{path}:fn").score(
        [sample("good"), sample("no_acc"), sample("no_score"), sample("bad_acc")]
    )
    assert result.scores == [2.0, -1.5, 0.0, 0.0]
    assert result.accuracy == [1.0, None, None, None]
    assert result.errors == 2
    assert "without a 'score' key" in result.first_error


def test_user_function_receives_verl_arguments(tmp_path):
    path = write_fn(
        tmp_path,
        """
        def fn(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
            assert data_source == "my/task" and ground_truth is None and extra_info == {"index": 7}
            return len(solution_str)
        """,
    )
    result = RewardScorer(function=f"{path}:fn").score([sample("abc", None, "my/task", index=7)])
    assert (result.scores, result.errors) == ([3.0], 0)


def test_async_per_sample_runs_concurrently(tmp_path):
    path = write_fn(
        tmp_path,
        """
        import asyncio

        started = 0

        async def fn(data_source, solution_str, ground_truth, extra_info=None):
            global started
            started += 1
            for _ in range(1000):
                if started == 4:
                    break
                await asyncio.sleep(0.001)
            else:
                raise RuntimeError("the calls did not overlap")
            if solution_str == "boom":
                raise ValueError("async failure")
            return float(solution_str == ground_truth)
        """,
    )
    result = RewardScorer(function=f"{path}:fn").score([sample("4"), sample("boom"), sample("5"), sample("4")])
    assert result.scores == [1.0, 0.0, 0.0, 1.0]
    assert result.errors == 1 and "ValueError: async failure" in result.first_error


def test_async_scoring_from_inside_a_running_event_loop(tmp_path):
    path = write_fn(
        tmp_path,
        """
        async def fn(data_source, solution_str, ground_truth, extra_info=None):
            return 1.0
        """,
    )
    scorer = RewardScorer(function=f"{path}:fn")

    async def caller():
        return scorer.score([sample("4")])

    assert asyncio.run(caller()).scores == [1.0]


BATCHED = """
    import asyncio

    def good(data_sources, solution_strs, ground_truths, extra_infos):
        return [{"score": float(s == g), "acc": float(s == g)} if s != "bad" else "x"
                for s, g in zip(solution_strs, ground_truths)]

    def short(data_sources, solution_strs, ground_truths, extra_infos):
        return [1.0]

    def scalar(data_sources, solution_strs, ground_truths, extra_infos):
        return 1.0

    def raises(data_sources, solution_strs, ground_truths, extra_infos):
        raise KeyError("batch failure")

    async def async_good(data_sources, solution_strs, ground_truths, extra_infos):
        await asyncio.sleep(0)
        return [len(s) for s in solution_strs]
"""


def test_batched_user_function(tmp_path):
    path = write_fn(tmp_path, BATCHED)
    batch = [sample("4"), sample("5"), sample("bad")]
    result = RewardScorer(function=f"{path}:good", batched=True).score(batch)
    assert (result.scores, result.accuracy, result.errors) == ([1.0, 0.0, 0.0], [1.0, 0.0, None], 1)
    assert "sample 2" in result.first_error
    result = RewardScorer(function=f"{path}:async_good", batched=True).score(batch)
    assert (result.scores, result.errors) == ([1.0, 1.0, 3.0], 0)
    assert RewardScorer(function=f"{path}:good", batched=True).score([]).scores == []


@pytest.mark.parametrize(
    ("name", "message"),
    [("short", "returned 1 scores for 3 samples"), ("scalar", "returned a float"), ("raises", "KeyError")],
)
def test_batched_failure_fails_every_sample(tmp_path, name, message):
    path = write_fn(tmp_path, BATCHED)
    result = RewardScorer(function=f"{path}:{name}", batched=True).score([sample("4"), sample("4"), sample("4")])
    assert (result.scores, result.accuracy, result.errors) == ([0.0] * 3, [None] * 3, 3)
    assert message in result.first_error
    if name != "raises":
        assert "expected length 3" in result.first_error


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from distrl.models.tiny import build_tokenizer

    path = tmp_path_factory.mktemp("reward_model")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=0,
    )
    Qwen2ForSequenceClassification(config).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def test_reward_model_scores_are_finite_and_deterministic(reward_model_dir):
    scorer = RewardScorer(model_path=str(reward_model_dir))
    batch = [sample("4"), sample("a much longer response, padded in the batch"), sample("4")]
    result = scorer.score(batch)
    assert all(math.isfinite(s) for s in result.scores)
    assert result.scores[0] == result.scores[2]
    assert result.scores[0] != result.scores[1]
    assert (result.accuracy, result.errors, result.first_error) == ([None] * 3, 0, None)
    alone = scorer.score([batch[1]]).scores[0]
    assert alone == pytest.approx(result.scores[1], abs=1e-5)
    scorer.check_data_sources(["anything"])


def test_reward_model_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("set reward.model_path")) as info:
        RewardScorer(model_path=str(tmp_path / "nowhere"))
    assert "nowhere" in str(info.value)


def test_scorer_pickles_as_its_settings_and_reloads_in_another_process():
    scorer = RewardScorer(function=f"{FIXTURE}:contains_answer")
    code = (
        "import pickle, sys; from distrl.rewards import Sample; scorer = pickle.loads(sys.stdin.buffer.read()); "
        "print(scorer.score([Sample('p', 'it is 4', 'my/task', '4', {})]).scores)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(scorer), capture_output=True, check=True, timeout=60
    )
    assert done.stdout.decode().strip() == "[1.0]"


@pytest.mark.parametrize("value", [1e300, -1e20, 2e6])
def test_an_absurd_score_fails_its_sample_instead_of_breaking_the_advantages(value):
    from distrl.rewards.base import ResultBuilder

    builder = ResultBuilder([sample("1")] * 2)
    builder.record(0, value)
    builder.record(1, 1.0)
    result = builder.result()
    assert result.scores == [0.0, 1.0] and result.errors == 1
    assert "rescale the reward" in result.first_error
