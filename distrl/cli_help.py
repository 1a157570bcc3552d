"""``distrl-train --help``: the config groups and every key with its default and the first sentence of
its documentation (the attribute docstrings of :mod:`distrl.config`, read from its source)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
from typing import Any

from distrl import config as config_module
from distrl.config import CONF_DIR, Config

USAGE = """usage: distrl-train [KEY=VALUE ...] [GROUP=OPTION ...] [--cfg job] [-m]

Train a policy with RL (python -m distrl.train works the same). Every setting is a Hydra override:
  distrl-train algorithm=gspo data.train_files=~/data/gsm8k/train.parquet model.path=Qwen/Qwen2.5-0.5B
  distrl-train --cfg job ...      print the composed config and exit
  distrl-train -m algorithm=grpo,gspo trainer.seed=0,1   one run per combination, each in its own folder
  distrl-train --hydra-help       Hydra's own options
"""


@functools.cache
def attribute_docs() -> dict[str, dict[str, str]]:
    """``{class name: {field: docstring}}`` for the dataclasses of :mod:`distrl.config`: the string
    literal right after each annotated field, as the source writes them."""
    tree = ast.parse(inspect.getsource(config_module))
    docs: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = docs.setdefault(node.name, {})
        for current, following in zip(node.body, node.body[1:], strict=False):
            if (isinstance(current, ast.AnnAssign) and isinstance(current.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):  # fmt: skip
                fields[current.target.id] = inspect.cleandoc(following.value.value)
    return docs


#: A sentence end: a period, space and a capital, not after an abbreviation (``Dr.``, ``e.g.``, ``et al.``).
_SENTENCE_END = re.compile(r"(?<!\bDr)(?<!e\.g)(?<!i\.e)(?<!\bal)(?<!\bvs)\.\s+(?=[A-Z(`])")


def first_sentence(text: str) -> str:
    """The doc's first sentence on one line (its first paragraph up to the first sentence end)."""
    paragraph = " ".join(text.split("\n\n", 1)[0].split())
    parts = _SENTENCE_END.split(paragraph, maxsplit=1)
    return parts[0] + ("." if len(parts) > 1 else "")


def _keys(obj: Any, prefix: str) -> list[tuple[str, Any, str]]:
    rows = []
    docs = attribute_docs().get(type(obj).__name__, {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            rows += _keys(value, key + ".")
        else:
            rows.append((key, value, first_sentence(docs.get(f.name, ""))))
    return rows


def help_text() -> str:
    """The ``--help`` text: usage, the config groups with their options (default marked), every key."""
    defaults = {"algorithm": "grpo", "model": "tiny", "data": "arithmetic", "rollout": "vllm", "cluster": "local"}
    lines = [USAGE, "Config groups (GROUP=OPTION; * = the default job's):"]
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        options = sorted(p.stem for p in group.glob("*.yaml"))
        shown = ", ".join(f"{o}*" if defaults.get(group.name) == o else o for o in options)
        lines.append(f"  {group.name}: {shown}")
    lines += ["", "Keys (KEY=VALUE; the default, then what it does; docs in distrl/config.py):"]
    for key, value, doc in _keys(Config(), ""):
        lines.append(f"  {key}={value!r}" + (f"  {doc}" if doc else ""))
    return "\n".join(lines)
