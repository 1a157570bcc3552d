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
