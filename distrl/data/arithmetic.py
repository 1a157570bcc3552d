"""The built-in verifiable task: multi-digit addition with an exact string answer.

Prompt ``"47+8="``, ground truth ``"55"``; the ``arithmetic`` verifier in :mod:`distrl.rewards`
scores 1 for exactly the right digits. Small enough that a tiny model learns it on a CPU, hard
enough that a short warm start leaves room for RL.

The scratchpad variant (``data_source`` ``arithmetic_scratchpad``) asks for the column sums before
the answer, :func:`worked_solution`: ``"47+8="`` → ``"7+8=15,4+0+1=5;55"``, so responses are several
times longer (where sequence- and token-level objectives differ); its verifier scores the text
after the last ``;``.
"""

from __future__ import annotations

import hashlib
import random

from distrl.data.records import PromptRecord

DATA_SOURCE = "arithmetic"
SCRATCHPAD_SOURCE = "arithmetic_scratchpad"
#: Each problem's split, by a hash of its prompt (:func:`split_of`): tenths of the problem space.
SPLIT_TENTHS = {"heldout": range(0, 1), "train": range(1, 4), "probe": range(4, 5), "warm_start": range(5, 10)}


def split_of(prompt: str) -> str:
    """The split ``prompt`` belongs to, fixed by its SHA-256 (10% ``heldout``, 30% ``train``, 10% ``probe``,
    the warm start's stop rule's, 50% ``warm_start``): the sets never share a problem and each follows the
    task's distribution, whatever the seeds and sizes."""
    tenth = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) % 10
    return next(name for name, tenths in SPLIT_TENTHS.items() if tenth in tenths)


def careless_sum(a: int, b: int) -> int:
    """``a + b`` with every carry forgotten: each column's digit sum mod 10, ``careless_sum(47, 8) == 45``,
    ``careless_sum(57, 68) == 15``; equal to ``a + b`` exactly when no column carries."""
    digits = [(a // 10**c % 10 + b // 10**c % 10) % 10 for c in range(max(len(str(a)), len(str(b))))]
    return sum(d * 10**c for c, d in enumerate(digits))


def worked_solution(a: int, b: int, *, carry: bool = True) -> str:
    """Column sums from the right, each ``x+y[+carry]=s``, comma-separated, then ``;`` and the sum:
    ``worked_solution(47, 8) == "7+8=15,4+0+1=5;55"``. ``carry=False`` writes the careless teacher's
    version, every carry forgotten: ``"7+8=15,4+0=4;45"`` (the answer is :func:`careless_sum`)."""
    steps, c = [], 0
    for column in range(max(len(str(a)), len(str(b)))):
        x, y = a // 10**column % 10, b // 10**column % 10
        total = x + y + c
        steps.append(f"{x}+{y}{f'+{c}' if c else ''}={total}")
        c = total // 10 if carry else 0
    return f"{','.join(steps)};{a + b if carry else careless_sum(a, b)}"


def _record(a: int, b: int, index: int, scratchpad: bool) -> PromptRecord:
    extra: dict = {"a": a, "b": b}
    if scratchpad:
        extra["ground_truth_response"] = worked_solution(a, b)
    return PromptRecord(prompt=f"{a}+{b}=", data_source=SCRATCHPAD_SOURCE if scratchpad else DATA_SOURCE,
                        ground_truth=str(a + b), extra_info=extra, index=index)  # fmt: skip


def _draw(rng: random.Random, digits: int, split: str | None) -> tuple[int, int]:
    """One operand pair with 1 to ``digits`` digits each, of ``split`` when given (rejection sampling)."""
    while True:
        a, b = (rng.randrange(10 ** rng.randint(1, digits)) for _ in range(2))
        if split is None or split_of(f"{a}+{b}=") == split:
            return a, b


def make_problems(
    count: int, *, digits: int, seed: int, scratchpad: bool = False, split: str | None = None
) -> list[PromptRecord]:
    """``count`` addition problems with operands of 1 to ``digits`` digits, reproducible by ``seed``
    (``scratchpad``: the variant whose responses show the column sums; ``split``: only problems of
    that split, :func:`split_of`)."""
    rng = random.Random(seed)
    return [_record(*_draw(rng, digits, split), index, scratchpad) for index in range(count)]


def make_heldout(
    count: int, *, digits: int, seed: int, exclude: set[str], scratchpad: bool = False, split: str | None = None
) -> list[PromptRecord]:
    """``count`` distinct problems like :func:`make_problems` (of ``split`` when given) whose prompts are
    not in ``exclude``; fewer when the task has no more."""
    rng = random.Random(seed)
    records: list[PromptRecord] = []
    seen = set(exclude)
    for _ in range(100 * count):
        if len(records) == count:
            break
        a, b = _draw(rng, digits, split)
        prompt = f"{a}+{b}="
        if prompt in seen:
            continue
        seen.add(prompt)
        records.append(_record(a, b, len(records), scratchpad))
    return records
