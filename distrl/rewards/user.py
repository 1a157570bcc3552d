"""User reward functions, given as ``reward.function=path/to/file.py:fn``; verl's signature, so verl's work as they are.

Per sample (the default)::

    def fn(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None)
        -> float | int | bool | dict

Over the whole batch (``reward.batched=true``)::

    def fn(data_sources: list[str], solution_strs: list[str], ground_truths: list[Any],
           extra_infos: list[dict]) -> list[float | int | bool | dict]

- The function is called with keyword arguments, as verl calls it, so the parameter names above
  matter (extra parameters need defaults; ``**kwargs`` is fine). A mismatch fails when the scorer
  is built, before training starts.
- ``solution_str`` is the decoded response without special tokens; ``extra_info`` is the data
  row's ``extra_info`` (``{}`` when the row has none).
- ``ground_truth`` is the row's ``reward_model.ground_truth`` as it is: text (numbers become text),
  a list, an object (``{"target": 24, "numbers": [3, 8]}``), ...; ``None`` when the row has none.
- A dict return must hold ``"score"``; it may hold ``"acc"`` (1.0/0.0, or None), which is reported as
  ``reward/accuracy``. Its other keys with numeric values (bools too) are logged as ``reward/<key>``,
  the mean over the samples that returned them (``{"score": 1.0, "format": 1.0}`` → ``reward/format``;
  a key that is already a ``reward/`` metric, such as ``mean``, becomes ``reward/fn_<key>``). Text
  values (verl's ``"pred"``) are ignored.
TRL's signature (``reward.style=trl``), over the whole batch::

    def fn(prompts: list[str], completions: list[str], **columns) -> list[float | None]

- ``columns`` are the rows' columns by name, one list each: ``data_source``, ``ground_truth`` (also
  given as ``solution`` and ``answer``, the names TRL datasets use, unless the rows have such
  columns), and every ``extra_info`` key. A TRL function reads the ones it names
  (``def accuracy(completions, solution, **kwargs)``); a name no row has fails the batch, listing
  the columns there are.
- ``prompts`` are the prompts as rendered for the model and ``completions`` the decoded responses
  (text, also for chat prompts). ``None`` for a sample (TRL: "this function does not apply") scores 0.

- ``async def`` functions work in both modes; per-sample coroutines run concurrently (``asyncio.gather``).
- A sample whose call raises, or returns a non-number, NaN or infinity, scores 0.0 and is counted as
  an error; the first traceback is logged. A batched function that raises, or returns a list of the
  wrong length, fails every sample of the batch. Training goes on either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import reprlib
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sized
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distrl.rewards.base import ResultBuilder, Sample, ScoreResult

PER_SAMPLE_PARAMS = ("data_source", "solution_str", "ground_truth", "extra_info")
BATCHED_PARAMS = ("data_sources", "solution_strs", "ground_truths", "extra_infos")
#: ``reward.style``: verl's signatures (per sample or batched) or TRL's.
STYLES = ("verl", "trl")
#: Column names TRL datasets give the reference answer; each gets ``ground_truth`` unless the rows have it.
TRL_ANSWER_COLUMNS = ("solution", "answer")


def load_user_function(spec: str) -> Callable[..., Any]:
    """The function named by ``"path/to/file.py:fn"``.

    The file is executed as a module of its own (registered in ``sys.modules`` under a name derived
    from its path, so dataclasses and pickling inside it work). Raises ``FileNotFoundError`` when
    there is no such file, and ``ValueError`` when the spec has no ``:``, the file is not ``.py``, it
    raises on import (the message includes the exception), it has no such attribute (the message
    lists the functions it defines), or the attribute is not callable.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name:
        raise ValueError(f"reward.function={spec!r} must be 'path/to/file.py:function_name'")
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"reward.function={spec!r}: no file {path}; set reward.function to an existing path/to/file.py:fn"
        )
    if path.suffix != ".py":
        raise ValueError(f"reward.function={spec!r}: {path.name} is not a Python file; point it at a .py file")
    module_name = f"distrl_user_reward_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ValueError(
            f"reward.function={spec!r}: importing {path} raised {type(exc).__name__}: {exc}; fix the file"
        ) from exc
    if not hasattr(module, name):
        defined = [
            attr
            for attr, value in vars(module).items()
            if callable(value) and not inspect.isclass(value) and getattr(value, "__module__", None) == module_name
        ]
        found = ", ".join(defined) or "none"
        raise ValueError(f"reward.function={spec!r}: {path.name} has no '{name}'; functions defined there: {found}")
    fn = getattr(module, name)
    if not callable(fn):
        raise ValueError(
            f"reward.function={spec!r}: '{name}' in {path.name} is not callable (it is {type(fn).__name__} "
            f"{reprlib.repr(fn)}); name a function"
        )
    return fn


def check_signature(fn: Callable[..., Any], spec: str, *, batched: bool, style: str = "verl") -> None:
    """Raise ``ValueError`` unless ``fn`` accepts the keyword arguments it will be called with (TRL
    style: ``prompts`` and ``completions``; the columns it names are checked at the call)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no introspectable signature (some builtins): found out at the first call instead
    if style == "trl":
        params = signature.parameters.values()
        takes = {p.name for p in params} | ({"prompts", "completions"} if any(p.kind is p.VAR_KEYWORD for p in params)
                                            else set())  # fmt: skip
        if "completions" not in takes:
            raise ValueError(
                f"reward.function={spec!r}: {getattr(fn, '__name__', 'the function')}{signature} has no `completions` "
                "parameter; a TRL reward function is fn(prompts, completions, **columns) -> list[float] "
                "(or set reward.style=verl for verl's signature)"
            )
        return
    names, other_names = (BATCHED_PARAMS, PER_SAMPLE_PARAMS) if batched else (PER_SAMPLE_PARAMS, BATCHED_PARAMS)
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError as exc:
        mode, other_mode = ("batched", "per-sample") if batched else ("per-sample", "batched")
        shown = f"{getattr(fn, '__name__', 'the function')}{signature}"
        raise ValueError(
            f"reward.function={spec!r}: {shown} cannot take the {mode} arguments ({', '.join(names)}): {exc}. "
            f"A {other_mode} function takes ({', '.join(other_names)}); "
            f"set reward.batched={str(not batched).lower()} if that is what it is."
        ) from exc


def sample_kwargs(sample: Sample) -> dict[str, Any]:
    """The keyword arguments of a per-sample call (verl's names)."""
    return dict(zip(PER_SAMPLE_PARAMS, (sample.data_source, sample.response, sample.ground_truth, sample.extra_info),
                    strict=True))  # fmt: skip


def batch_kwargs(samples: list[Sample]) -> dict[str, Any]:
    """The keyword arguments of a batched call (verl's names)."""
    columns = ([s.data_source for s in samples], [s.response for s in samples], [s.ground_truth for s in samples],
               [s.extra_info for s in samples])  # fmt: skip
    return dict(zip(BATCHED_PARAMS, columns, strict=True))


def trl_kwargs(samples: list[Sample]) -> dict[str, list[Any]]:
    """The keyword arguments of a TRL-style call: ``prompts``, ``completions`` and the rows' columns
    (``data_source``, ``ground_truth``, every ``extra_info`` key, ``solution``/``answer`` = ``ground_truth``
    unless a row has them), one list each; a column a row lacks is None there."""
    columns: dict[str, list[Any]] = {
        "prompts": [s.prompt for s in samples],
        "completions": [s.response for s in samples],
        "data_source": [s.data_source for s in samples],
        "ground_truth": [s.ground_truth for s in samples],
    }
    for key in dict.fromkeys(k for s in samples for k in s.extra_info):
        columns.setdefault(key, [s.extra_info.get(key) for s in samples])
    for alias in TRL_ANSWER_COLUMNS:
        columns.setdefault(alias, columns["ground_truth"])
    return columns


def call_kwargs(samples: list[Sample], style: str) -> dict[str, Any]:
    """The keyword arguments of one call over the whole batch: TRL's or verl's batched ones."""
    return trl_kwargs(samples) if style == "trl" else batch_kwargs(samples)


def run_coroutine(coroutine: Awaitable[Any]) -> Any:
    """Run a coroutine to completion from synchronous code, also when this thread runs an event loop."""

    async def main() -> Any:
        return await coroutine

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()


def score_per_sample(fn: Callable[..., Any], samples: list[Sample]) -> ScoreResult:
    """Call ``fn`` once per sample (awaiting coroutines together); failures score 0 and are counted."""
    builder = ResultBuilder(samples)
    pending: dict[int, Awaitable[Any]] = {}
    for index, sample in enumerate(samples):
        try:
            value = fn(**sample_kwargs(sample))
        except Exception as exc:
            builder.fail(index, _traceback(exc))
            continue
        if inspect.isawaitable(value):
            pending[index] = value
        else:
            builder.record(index, value)
    if pending:

        async def gather() -> list[Any]:
            return await asyncio.gather(*pending.values(), return_exceptions=True)

        for index, value in zip(pending, run_coroutine(gather()), strict=True):
            if isinstance(value, BaseException):
                builder.fail(index, _traceback(value))
            else:
                builder.record(index, value)
    return builder.result()


def score_batched(fn: Callable[..., Any], samples: list[Sample], style: str = "verl") -> ScoreResult:
    """Call ``fn`` once on the whole batch (verl's batched arguments, or TRL's with ``style="trl"``); if
    it raises or returns the wrong length, every sample fails."""
    builder = ResultBuilder(samples)
    if not samples:
        return builder.result()
    kwargs = call_kwargs(samples, style)
    try:
        values = fn(**kwargs)
        if inspect.isawaitable(values):
            values = run_coroutine(values)
    except TypeError as exc:
        builder.fail_all(f"the batched reward function could not be called ({exc}); it is called with the "
                         f"keyword arguments {', '.join(kwargs)}")  # fmt: skip
        return builder.result()
    except Exception as exc:
        builder.fail_all(f"the batched reward function raised:\n{_traceback(exc)}")
        return builder.result()
    record_batch(values, builder, len(samples), style)
    return builder.result()


def record_batch(values: Any, builder: ResultBuilder, count: int, style: str) -> None:
    """Record a batched call's return: every sample fails when it is not a list of ``count`` values; in
    TRL style a None value scores 0 (the function does not apply to that sample)."""
    problem = check_batch_values(values, count)
    if problem:
        builder.fail_all(problem)
        return
    for index, value in enumerate(values):
        builder.record(index, 0.0 if value is None and style == "trl" else value)


def check_batch_values(values: Any, expected: int) -> str | None:
    """What is wrong with a batched function's return value (None: a list of ``expected`` values)."""
    if isinstance(values, str | bytes | Mapping) or not (isinstance(values, Sized) and isinstance(values, Iterable)):
        return (
            f"the batched reward function returned a {type(values).__name__}; "
            f"it must return a list of {expected} scores (expected length {expected}, one per sample, in order)"
        )
    if len(values) != expected:
        return (
            f"the batched reward function returned {len(values)} scores for {expected} samples; "
            f"it must return one per sample, in order (expected length {expected})"
        )
    return None
