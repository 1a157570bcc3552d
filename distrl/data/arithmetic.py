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

import random

from distrl.data.records import PromptRecord

DATA_SOURCE = "arithmetic"
SCRATCHPAD_SOURCE = "arithmetic_scratchpad"


def worked_solution(a: int, b: int) -> str:
    """Column sums from the right, each ``x+y[+carry]=s``, comma-separated, then ``;`` and the sum:
    ``worked_solution(47, 8) == "7+8=15,4+0+1=5;55"``."""
    steps, carry = [], 0
    for column in range(max(len(str(a)), len(str(b)))):
        x, y = a // 10**column % 10, b // 10**column % 10
        total = x + y + carry
        steps.append(f"{x}+{y}{f'+{carry}' if carry else ''}={total}")
        carry = total // 10
    return f"{','.join(steps)};{a + b}"


def _record(a: int, b: int, index: int, scratchpad: bool) -> PromptRecord:
    extra: dict = {"a": a, "b": b}
    if scratchpad:
        extra["ground_truth_response"] = worked_solution(a, b)
    return PromptRecord(prompt=f"{a}+{b}=", data_source=SCRATCHPAD_SOURCE if scratchpad else DATA_SOURCE,
                        ground_truth=str(a + b), extra_info=extra, index=index)  # fmt: skip


def make_problems(count: int, *, digits: int, seed: int, scratchpad: bool = False) -> list[PromptRecord]:
    """``count`` addition problems with operands of 1 to ``digits`` digits, reproducible by ``seed``
    (``scratchpad``: the variant whose responses show the column sums)."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        a, b = (rng.randrange(10 ** rng.randint(1, digits)) for _ in range(2))
        records.append(_record(a, b, index, scratchpad))
    return records


def make_heldout(
    count: int, *, digits: int, seed: int, exclude: set[str], scratchpad: bool = False
) -> list[PromptRecord]:
    """``count`` problems like :func:`make_problems` whose prompts are not in ``exclude`` (the
    training and warm-start prompts) nor repeated; fewer when the task has no more."""
    rng = random.Random(seed)
    records: list[PromptRecord] = []
    seen = set(exclude)
    for _ in range(100 * count):
        if len(records) == count:
            break
        a, b = (rng.randrange(10 ** rng.randint(1, digits)) for _ in range(2))
        prompt = f"{a}+{b}="
        if prompt in seen:
            continue
        seen.add(prompt)
        records.append(_record(a, b, len(records), scratchpad))
    return records
