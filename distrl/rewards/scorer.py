""":class:`RewardScorer`: the one entry point the reward workers call, whatever scores the samples.

Exactly one source of scores is used: a user function (``reward.function``), a reward model
(``reward.model_path``), or, with neither, the built-in verifier of each sample's ``data_source``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from typing import Any

from distrl.rewards.base import ResultBuilder, Sample, ScoreResult
from distrl.rewards.isolated import IsolatedScorer, Isolation
from distrl.rewards.model import RewardModelScorer
from distrl.rewards.user import STYLES, check_signature, load_user_function, score_batched, score_per_sample
from distrl.rewards.verifiers import BUILTIN_VERIFIERS, STRUCTURED_GROUND_TRUTH


class RewardScorer:
    """Scores lists of :class:`Sample`; built once per reward worker from the ``reward`` config."""

    def __init__(
        self,
        function: str | None = None,
        model_path: str | None = None,
        batched: bool = False,
        isolation: Isolation | None = None,
        style: str = "verl",
    ) -> None:
        """``function``: a user function ``"path/to/file.py:fn"`` (see :mod:`distrl.rewards.user`);
        ``model_path``: a sequence-classification reward model folder; ``batched``: ``function`` takes
        the whole batch; ``style``: ``"verl"`` or ``"trl"`` (TRL's ``fn(prompts, completions, **columns)``,
        :mod:`distrl.rewards.user`); ``isolation``: run ``function`` in worker processes with a deadline
        (:mod:`distrl.rewards.isolated`; ``None`` or 0 workers: in this process). Bad settings fail
        here, before training, with ``ValueError`` or ``FileNotFoundError`` saying what is wrong and
        how to fix it. The worker processes start at the first :meth:`score`."""
        if function is not None and model_path is not None:
            raise ValueError(
                "reward.function and reward.model_path are both set; set one of them "
                "(or neither, to score with the built-in verifier of each data_source)"
            )
        if batched and function is None:
            raise ValueError("reward.batched=true applies to a user function; set reward.function=path/to/file.py:fn")
        if style not in STYLES:
            raise ValueError(f"reward.style={style!r} is not one of {', '.join(STYLES)}")
        if style == "trl" and function is None:
            raise ValueError("reward.style=trl applies to a user function; set reward.function=path/to/file.py:fn")
        self.function = function
        self.model_path = model_path
        self.batched = batched
        self.style = style
        self.isolation = isolation
        self._isolated: IsolatedScorer | None = None
        self._user_fn: Callable[..., Any] | None = None
        self._model: RewardModelScorer | None = None
        if function is not None:
            self._user_fn = load_user_function(function)
            check_signature(self._user_fn, function, batched=batched, style=style)
        elif model_path is not None:
            self._model = RewardModelScorer(model_path)

    def __reduce__(self) -> tuple[type[RewardScorer], tuple[str | None, str | None, bool, Isolation | None, str]]:
        """Pickle as the settings: where it is unpickled, the function or model is loaded again."""
        return (RewardScorer, (self.function, self.model_path, self.batched, self.isolation, self.style))

    def check_data_sources(self, sources: Iterable[str]) -> None:
        """With only built-in verifiers, raise ``ValueError`` unless every source has one; the message
        lists the unknown and the known sources. A user function or reward model accepts any source."""
        if self._user_fn is not None or self._model is not None:
            return
        unknown = sorted(set(sources) - BUILTIN_VERIFIERS.keys())
        if unknown:
            raise ValueError(
                f"no built-in verifier for data_source {', '.join(map(repr, unknown))}; "
                f"built-in ones: {', '.join(sorted(BUILTIN_VERIFIERS))}. "
                "To score other data, set reward.function=path/to/file.py:fn (or reward.model_path)"
            )

    def score(self, samples: list[Sample]) -> ScoreResult:
        """Score ``samples`` in order. A sample whose scoring fails scores 0.0 and is counted in
        ``errors``; this never raises for that. With built-in verifiers it raises ``ValueError`` for a
        ``data_source`` without one (what :meth:`check_data_sources` reports before training)."""
        if self._user_fn is not None and self.isolation is not None and self.isolation.workers > 0:
            if self._isolated is None:
                i = self.isolation
                self._isolated = IsolatedScorer(
                    self.function,
                    batched=self.batched,
                    style=self.style,
                    workers=i.workers,
                    timeout_s=i.timeout_s,
                    memory_mb=i.memory_mb,
                )
            return self._isolated.score(samples)
        if self._user_fn is not None and (self.batched or self.style == "trl"):
            return score_batched(self._user_fn, samples, self.style)
        if self._user_fn is not None:
            return score_per_sample(self._user_fn, samples)
        builder = ResultBuilder(samples)
        if self._model is not None:
            for index, value in enumerate(self._model.score([s.prompt + s.response for s in samples])):
                builder.record(index, value)
            return builder.result()
        return self._score_builtin(samples, builder)

    def _score_builtin(self, samples: list[Sample], builder: ResultBuilder) -> ScoreResult:
        """Each sample by the built-in verifier of its ``data_source``."""
        self.check_data_sources(s.data_source for s in samples)
        for index, sample in enumerate(samples):
            if sample.ground_truth is None:
                builder.fail(
                    index, "no ground truth; the built-in verifier needs reward_model.ground_truth in the data"
                )
                continue
            if not isinstance(sample.ground_truth, str) and sample.data_source not in STRUCTURED_GROUND_TRUTH:
                builder.fail(
                    index, f"the built-in {sample.data_source!r} verifier compares text, but this row's ground truth "
                    f"is a {type(sample.ground_truth).__name__}; give reward_model.ground_truth as a string, or "
                    "score the row with reward.function=path/to/file.py:fn (it gets the value as it is)",
                )  # fmt: skip
                continue
            try:
                value = BUILTIN_VERIFIERS[sample.data_source](sample.response, sample.ground_truth)
            except Exception:
                builder.fail(index, traceback.format_exc().rstrip())
                continue
            builder.record(index, value, accuracy=None if isinstance(value, dict) else value)
        return builder.result()

    def close(self) -> None:
        """Stop the worker processes, if any started."""
        if self._isolated is not None:
            self._isolated.close()
            self._isolated = None
