"""The types every scorer shares: one :class:`Sample` in, one :class:`ScoreResult` out per batch.

A scorer never raises because one sample failed: :class:`ResultBuilder` records the failure (score
0.0, counted in ``errors``, the first message kept in ``first_error``) and scoring goes on.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """What a scorer sees for one response."""

    prompt: str
    """The prompt text as rendered for the model."""
    response: str
    """The decoded response (no special tokens)."""
    data_source: str
    """Which task the row comes from, e.g. ``"arithmetic"``, ``"openai/gsm8k"``, ``"lighteval/MATH"``."""
    ground_truth: Any
    """The reference answer (verl's ``reward_model.ground_truth``) as the row holds it: text (numbers become
    text), a list, an object, ...; ``None`` when the data has none."""
    extra_info: dict = field(default_factory=dict)
    """verl's ``extra_info`` column, passed to user functions as it is; may be empty."""


@dataclass
class ScoreResult:
    """Scores for a list of samples, in the same order."""

    scores: list[float]
    """One finite float per sample; a sample whose scorer failed scores 0.0."""
    accuracy: list[float | None]
    """1.0/0.0 where a verifier (or a user function returning ``{"acc": ...}``) judged correctness, else None."""
    errors: int
    """How many samples failed: the scorer raised, or returned a non-number, NaN or infinity."""
    first_error: str | None
    """The first failure's traceback or message, for the log; ``None`` when ``errors == 0``."""
    timeouts: int = 0
    """How many of the failures ran past ``reward.timeout_s`` (user functions in worker processes)."""
    output: str | None = None
    """What user functions printed, capped (worker processes only)."""
    extras: dict[str, list[float | None]] = field(default_factory=dict)
    """The other numeric keys of the dicts a user function returned (``{"score": s, "format": f}`` →
    ``extras["format"]``), one value per sample (None where that sample's dict had no such number);
    logged as ``reward/<key>``."""


#: The largest |score| accepted. A group's advantages are (r − mean) / std in float32: a score of
#: 1e20 beside scores of order 1 leaves their differences below float32 resolution (all their
#: advantages become equal), and 1e300 overflows float32 to inf (NaN advantages).
MAX_ABS_SCORE = 1e6


def coerce_score(value: object) -> tuple[float, float | None]:
    """``(score, accuracy)`` from what a scorer returned for one sample.

    Accepted: a finite real number (int, float, bool, numpy scalar, 0-d tensor: anything ``float()``
    takes except text), or a mapping with a finite ``"score"`` and an optional ``"acc"`` (a finite
    number or ``None``; its other keys: :func:`extra_numbers`). Anything else raises ``ValueError``
    naming what came back.
    """
    if isinstance(value, Mapping):
        if "score" not in value:
            keys = ", ".join(repr(k) for k in value) or "none"
            raise ValueError(f"returned a dict without a 'score' key (keys: {keys}); return {{'score': float, ...}}")
        acc = value.get("acc")
        return _finite(value["score"], "score"), None if acc is None else _finite(acc, "acc")
    return _finite(value, "score"), None


def extra_numbers(value: object) -> dict[str, float]:
    """The keys of a returned mapping besides ``score`` and ``acc`` whose values are finite numbers (bools
    count as 0/1), as floats; other values (text such as verl's ``"pred"``, lists, None) are left out."""
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for key, item in value.items():
        if key in ("score", "acc") or isinstance(item, str | bytes) or not hasattr(type(item), "__float__"):
            continue
        try:
            number = float(item)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[str(key)] = number
    return out


def _finite(value: object, what: str) -> float:
    shown = f"{reprlib.repr(value)} ({type(value).__name__})"
    if isinstance(value, str | bytes) or not hasattr(type(value), "__float__"):
        raise ValueError(f"returned {shown} as the {what}; expected a float, int or bool")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"returned {shown} as the {what}, which is not a single number: {exc}") from exc
    if not math.isfinite(number):
        raise ValueError(f"returned {number} as the {what}; a score must be finite")
    if abs(number) > MAX_ABS_SCORE:
        raise ValueError(
            f"returned {number:g} as the {what}; beyond ±{MAX_ABS_SCORE:g} the float32 advantages overflow or lose "
            "every other score's difference: rescale the reward"
        )
    return number


class ResultBuilder:
    """Collects per-sample outcomes into a :class:`ScoreResult` (every sample starts as 0.0 / None)."""

    def __init__(self, samples: list[Sample]) -> None:
        self._samples = samples
        self._scores = [0.0] * len(samples)
        self._accuracy: list[float | None] = [None] * len(samples)
        self._errors = 0
        self._first_error: str | None = None
        self._extras: dict[str, list[float | None]] = {}

    def record(self, index: int, value: object, accuracy: float | None = None) -> None:
        """Record what the scorer returned for sample ``index`` (see :func:`coerce_score`); an invalid
        value is recorded as a failure. ``accuracy`` applies when ``value`` carries none itself."""
        try:
            score, acc = coerce_score(value)
        except ValueError as exc:
            self.fail(index, str(exc))
            return
        self._scores[index] = score
        self._accuracy[index] = accuracy if acc is None else acc
        for key, number in extra_numbers(value).items():
            self._extras.setdefault(key, [None] * len(self._samples))[index] = number

    def fail(self, index: int, message: str) -> None:
        """Record that sample ``index`` failed: it scores 0.0; the log text names the sample."""
        source = self._samples[index].data_source
        self._mark_failed(index, f"sample {index} (data_source={source!r}): {message}")

    def fail_all(self, message: str) -> None:
        """Record the same failure for every sample (a failure of the whole batch)."""
        for index in range(len(self._samples)):
            self._mark_failed(index, message)

    def _mark_failed(self, index: int, log_text: str) -> None:
        self._scores[index] = 0.0
        self._accuracy[index] = None
        for values in self._extras.values():
            values[index] = None
        self._errors += 1
        if self._first_error is None:
            self._first_error = log_text

    def result(self) -> ScoreResult:
        """The collected :class:`ScoreResult`."""
        return ScoreResult(list(self._scores), list(self._accuracy), self._errors, self._first_error,
                           extras={key: list(values) for key, values in self._extras.items()})  # fmt: skip
