"""Built-in verifiers: ``fn(response, ground_truth) -> 1.0 | 0.0``, chosen by the sample's ``data_source``.

The score doubles as the accuracy, except ``math_dapo``'s, which returns ``{"score": ±1, "acc": 1 | 0}``.
:data:`BUILTIN_VERIFIERS` maps each ``data_source`` to its verifier:

- ``arithmetic`` — the built-in task: the response, stripped of surrounding whitespace, must equal
  the ground truth exactly (``"46"`` and ``" 46\\n"`` match ``"46"``; ``"046"`` and ``"46x"`` do not).
- ``arithmetic_scratchpad`` — the built-in task's scratchpad variant: the text after the response's
  last ``;`` must equal the ground truth (no ``;``: 0).
- ``gsm8k``, ``openai/gsm8k`` — strict GSM8K format: the answer is the text after the *last*
  ``####`` in the response, with ``,`` and ``$`` removed and whitespace stripped; it must equal the
  ground truth normalized the same way (a bare ``"72"`` or a solution ending in ``"#### 72"``).
  A response without ``####`` scores 0: there is no fallback to "the last number in the text", so
  the policy learns the format.
- ``math``, ``lighteval/MATH``, ``DigitalLearningGmbH/MATH-lighteval``, ``HuggingFaceH4/MATH-500`` —
  the answer is the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``) in
  the response; a response without one scores 0. The ground truth may be a bare answer or a full
  solution containing ``\\boxed{...}``. Answers match when their normalized LaTeX strings are equal
  (see :func:`normalize_math_answer`) or, when the ``math_verify`` package is installed, when
  ``math_verify.verify`` judges them equivalent (``0.5`` and ``\\frac{1}{2}`` match only then).
- ``math_dapo`` — DAPO-Math-17k's format: the answer is the text after the last ``Answer:`` in the
  response's last 300 characters (the prompt asks for a last line ``Answer: $Answer``), unboxed and
  normalized like ``math``; numbers compare by value (``34.0`` matches ``34``). As in the DAPO paper
  the score is +1 when it matches and −1 otherwise (no ``Answer:`` too), with accuracy 1/0.
- ``code``, ``codecontests``, ``apps``, ``codeforces``, ``taco`` — the response's program must pass
  the ground truth's test cases (stdin/stdout pairs, function calls, or asserts), each run in a
  sandbox process (:mod:`distrl.rewards.sandbox`, which says what it does and does not protect against).
"""

from __future__ import annotations

import functools
import importlib
import re
import threading
from collections.abc import Callable
from types import ModuleType

from distrl.rewards.sandbox import verify_code


def verify_arithmetic(response: str, ground_truth: str) -> float:
    """1.0 iff the whitespace-stripped response equals the whitespace-stripped ground truth."""
    return 1.0 if response.strip() == ground_truth.strip() else 0.0


def verify_arithmetic_scratchpad(response: str, ground_truth: str) -> float:
    """1.0 iff the text after the response's last ``;`` equals the ground truth (whitespace stripped);
    a response without ``;`` scores 0 (the scratchpad format is part of the task)."""
    if ";" not in response:
        return 0.0
    return 1.0 if response.rsplit(";", 1)[1].strip() == ground_truth.strip() else 0.0


def _gsm8k_normalize(text: str) -> str:
    return text.replace(",", "").replace("$", "").strip()


def verify_gsm8k(response: str, ground_truth: str) -> float:
    """1.0 iff the text after the response's last ``####`` equals the ground truth's answer (strict format)."""
    if "####" not in response:
        return 0.0
    answer = _gsm8k_normalize(response.rsplit("####", 1)[1])
    truth = _gsm8k_normalize(ground_truth.rsplit("####", 1)[-1])
    return 1.0 if answer and answer == truth else 0.0


def last_boxed_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text`` (nested and escaped
    braces handled), or of a brace-less ``\\boxed 5`` up to the next ``$`` or line end; ``None`` if
    there is none or its braces do not close."""
    start, command = max((text.rfind(c), c) for c in ("\\boxed", "\\fbox"))
    if start < 0:
        return None
    pos = start + len(command)
    body_start = pos
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos < len(text) and text[pos] == "{":
        return _braced(text, pos)
    if pos == body_start:
        return None
    return re.split(r"[$\n]", text[pos:], maxsplit=1)[0].strip()


def _braced(text: str, open_pos: int) -> str | None:
    depth = 0
    pos = open_pos
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_pos + 1 : pos]
        pos += 1
    return None


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_SHORT_FRAC = re.compile(r"\\frac(\w)(\w)")
_SHORT_SQRT = re.compile(r"\\sqrt(\w)")
_VARIABLE_PREFIX = re.compile(r"^[A-Za-z]=(?!=)")


def normalize_math_answer(answer: str) -> str:
    """A canonical string for a LaTeX answer, so that spellings of the same answer compare equal.

    Unwraps ``\\text{...}``-style wrappers (keeping their content); removes ``\\left``/``\\right``,
    spacing commands (``\\!``, ``\\,``, ...), degree marks, dollar signs, all whitespace, thousands
    commas, a trailing ``.`` and a leading ``x=``; turns ``\\dfrac``/``\\tfrac`` into ``\\frac`` and
    ``\\frac12``/``\\sqrt2`` into ``\\frac{1}{2}``/``\\sqrt{2}``. No arithmetic: ``0.5`` stays ``0.5``.
    """
    text = _TEXT_WRAPPER.sub(r"\1", answer)
    text = text.replace("\\left", "").replace("\\right", "")
    text = _SPACING.sub("", text)
    for mark in ("^{\\circ}", "^\\circ", "\\$", "$"):
        text = text.replace(mark, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = "".join(text.split())
    text = _THOUSANDS_COMMA.sub("", text)
    text = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", text)
    text = _SHORT_SQRT.sub(r"\\sqrt{\1}", text)
    text = _VARIABLE_PREFIX.sub("", text)
    return text.rstrip(".")


@functools.cache
def _load_math_verify() -> ModuleType | None:
    """The ``math_verify`` module if it is installed (imported on first use: it pulls in sympy)."""
    try:
        return importlib.import_module("math_verify")
    except ImportError:
        return None


def _math_verify_equal(math_verify: ModuleType, answer: str, truth: str) -> bool:
    # math_verify times out with signal.alarm, which only works on the main thread; elsewhere run without.
    on_main = threading.current_thread() is threading.main_thread()
    parse_limit = {} if on_main else {"parsing_timeout": None}
    verify_limit = {} if on_main else {"timeout_seconds": None}
    gold = math_verify.parse(f"\\boxed{{{truth}}}", **parse_limit)
    target = math_verify.parse(f"\\boxed{{{answer}}}", **parse_limit)
    return bool(math_verify.verify(gold, target, **verify_limit))


def verify_math(response: str, ground_truth: str) -> float:
    """1.0 iff the last boxed answer in the response matches the ground truth's answer (see the module doc)."""
    answer = last_boxed_answer(response)
    if not answer:
        return 0.0
    truth = last_boxed_answer(ground_truth) or ground_truth.strip()
    if normalize_math_answer(answer) == normalize_math_answer(truth):
        return 1.0
    math_verify = _load_math_verify()
    return 1.0 if math_verify is not None and _math_verify_equal(math_verify, answer, truth) else 0.0


_DAPO_ANSWER = re.compile(r"answer\s*:\s*([^\n]*)", re.IGNORECASE)
#: How much of the response's end ``math_dapo`` searches for ``Answer:`` (the format puts it on the last line).
DAPO_TAIL_CHARS = 300


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def verify_math_dapo(response: str, ground_truth: str) -> dict[str, float]:
    """``{"score": 1.0, "acc": 1.0}`` iff the answer after the last ``Answer:`` near the response's end
    matches the ground truth, else ``{"score": -1.0, "acc": 0.0}`` (see the module doc)."""
    found = _DAPO_ANSWER.findall(response[-DAPO_TAIL_CHARS:])
    answer = normalize_math_answer(last_boxed_answer(found[-1]) or found[-1]) if found else ""
    truth = normalize_math_answer(last_boxed_answer(ground_truth) or ground_truth)
    a, t = _as_number(answer), _as_number(truth)
    same_number = a is not None and t is not None and abs(a - t) <= 1e-9 * max(1.0, abs(t))
    right = bool(answer) and (answer == truth or same_number)
    return {"score": 1.0 if right else -1.0, "acc": 1.0 if right else 0.0}


BUILTIN_VERIFIERS: dict[str, Callable[[str, str], float | dict[str, float]]] = {
    "arithmetic": verify_arithmetic,
    "arithmetic_scratchpad": verify_arithmetic_scratchpad,
    "gsm8k": verify_gsm8k,
    "openai/gsm8k": verify_gsm8k,
    "math": verify_math,
    "lighteval/MATH": verify_math,
    "DigitalLearningGmbH/MATH-lighteval": verify_math,
    "HuggingFaceH4/MATH-500": verify_math,
    "math_dapo": verify_math_dapo,
    **dict.fromkeys(("code", "codecontests", "apps", "codeforces", "taco"), verify_code),
}
"""``data_source`` -> verifier ``fn(response, ground_truth) -> 1.0 | 0.0`` (``math_dapo``: a score/acc dict)."""

#: The data sources whose verifier takes a ground truth that is not text (a list or object of test cases).
STRUCTURED_GROUND_TRUTH = frozenset(("code", "codecontests", "apps", "codeforces", "taco"))
