"""The built-in verifiable task: multi-digit addition with an exact string answer.

Prompt ``"47+8="``, ground truth ``"55"``; the ``arithmetic`` verifier in :mod:`distrl.rewards`
scores 1 for exactly the right digits. Small enough that a tiny model learns it on a CPU, hard
enough that a short warm start leaves room for RL.
"""

from __future__ import annotations

import random

from distrl.data.records import PromptRecord

DATA_SOURCE = "arithmetic"


def make_problems(count: int, *, digits: int, seed: int) -> list[PromptRecord]:
    """``count`` addition problems with operands of 1 to ``digits`` digits, reproducible by ``seed``."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        a, b = (rng.randrange(10 ** rng.randint(1, digits)) for _ in range(2))
        records.append(
            PromptRecord(
                prompt=f"{a}+{b}=",
                data_source=DATA_SOURCE,
                ground_truth=str(a + b),
                extra_info={"a": a, "b": b},
                index=index,
            )
        )
    return records


def make_heldout(count: int, *, digits: int, seed: int, exclude: set[str]) -> list[PromptRecord]:
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
        records.append(PromptRecord(prompt=prompt, data_source=DATA_SOURCE, ground_truth=str(a + b),
                                    extra_info={"a": a, "b": b}, index=len(records)))  # fmt: skip
    return records
