"""User reward functions in worker processes: a hung, exiting, interrupted or noisy function fails
its own sample, within the deadline, and the run's scoring goes on."""

import time
from pathlib import Path

import pytest

from distrl.rewards.base import Sample
from distrl.rewards.isolated import OUTPUT_CAP, IsolatedScorer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "coin_reward.py"


def samples(*responses: str) -> list[Sample]:
    return [Sample(prompt="p", response=r, data_source="any", ground_truth=None) for r in responses]


@pytest.fixture
def scorer():
    s = IsolatedScorer(f"{FIXTURES}:misbehaves", batched=False, workers=2, timeout_s=2.0, memory_mb=None)
    yield s
    s.close()


def test_a_hung_exiting_or_interrupted_function_fails_only_its_sample_within_the_deadline(scorer):
    start = time.monotonic()
    result = scorer.score(samples("ab", "hang", "exit", "kill", "interrupt", "abcd", "hang"))
    elapsed = time.monotonic() - start
    assert result.scores == [2.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0]
    assert result.errors == 5 and result.timeouts == 2
    assert elapsed < 2 * 2.0 + 10  # two workers: the two hangs overlap; process starts cost seconds
    assert "SystemExit" in result.first_error or "timed out" in result.first_error
    again = scorer.score(samples("abc"))  # the killed workers were replaced
    assert again.scores == [3.0] and again.errors == 0


def test_printed_output_is_kept_up_to_the_cap_and_reported(scorer):
    result = scorer.score(samples("shout", "ab"))
    assert result.scores == [5.0, 2.0]
    assert result.output is not None and f"first {OUTPUT_CAP} of" in result.output
    assert len(result.output) < OUTPUT_CAP + 200


def test_a_batched_function_past_the_deadline_fails_the_batch():
    scorer = IsolatedScorer(f"{FIXTURES}:hangs_in_batch", batched=True, workers=1, timeout_s=1.0, memory_mb=None)
    try:
        result = scorer.score(samples("a", "b"))
    finally:
        scorer.close()
    assert result.scores == [0.0, 0.0] and result.errors == 2 and result.timeouts == 1
    assert "timed out after 1 s" in result.first_error
