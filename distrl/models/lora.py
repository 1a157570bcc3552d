"""LoRA adapters on the policy (peft): the learner trains the adapters only; engines, checkpoints and
the weight sync see the merged weights under the base model's names.

A target linear layer's weight W (frozen) gains a low-rank update: W' = W + (α / r) · B·A, with
A ∈ ℝ^{r×in} (random init) and B ∈ ℝ^{out×r} (zero init, so the policy starts unchanged) trained
(Hu et al., arXiv 2106.09685). peft names W ``<layer>.base_layer.weight`` and A, B
``<layer>.lora_A.default.weight`` / ``<layer>.lora_B.default.weight`` under ``base_model.model.``;
:func:`merged` turns such a state dict back into the base model's names with W' in place of W.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from distrl.config import LoraSettings

PEFT_PREFIX = "base_model.model."
BASE = ".base_layer.weight"
BASE_BIAS = ".base_layer.bias"
ADAPTER = (".lora_A.default.weight", ".lora_B.default.weight")


def attach_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """``model`` wrapped with LoRA adapters on ``settings.target_modules`` (every other weight frozen)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("model.lora.rank > 0 needs peft: pip install peft") from None
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")  # fmt: skip
    return get_peft_model(model, config)


def is_adapter(name: str) -> bool:
    """Whether ``name`` (a peft state-dict key) is a LoRA A or B matrix."""
    return name.endswith(ADAPTER)


def base_name(name: str) -> str:
    """The base model's name for a peft key: ``base_model.model.x.q_proj.base_layer.weight`` → ``x.q_proj.weight``."""
    name = name.removeprefix(PEFT_PREFIX)
    if name.endswith(BASE):
        return name[: -len(BASE)] + ".weight"
    if name.endswith(BASE_BIAS):
        return name[: -len(BASE_BIAS)] + ".bias"
    return name


def merged_shapes(shapes: Iterable[tuple[str, torch.Size]]) -> dict[str, torch.Size]:
    """The merged weights' names and shapes, from the peft model's (adapters dropped)."""
    return {base_name(name): shape for name, shape in shapes if not is_adapter(name)}


def merged(tensors: Iterable[tuple[str, torch.Tensor]], scale: float) -> Iterator[tuple[str, torch.Tensor]]:
    """The base model's weights from a peft model's whole tensors, in order: W + scale·B·A for every
    adapted layer, the others as they are (``scale`` = α / r)."""
    state = dict(tensors)
    for name, tensor in state.items():
        if is_adapter(name):
            continue
        if name.endswith(BASE):
            stem = name[: -len(BASE)]
            a, b = state[stem + ADAPTER[0]], state[stem + ADAPTER[1]]
            tensor = tensor + scale * (b.to(tensor.dtype) @ a.to(tensor.dtype))
        yield base_name(name), tensor
