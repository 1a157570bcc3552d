"""Loading policies, references and critics from Hugging Face folders."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_model_path(path: str) -> None:
    """Fail early, naming the fix, when ``path`` is not a Hugging Face model folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model.path={path!r} does not exist; point model.path at a Hugging Face model folder "
            "(config.json + weights + tokenizer), or leave it unset to build the tiny built-in model"
        )
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"model.path={path!r} has no config.json; it must be a Hugging Face model folder")


def load_policy(path: str, dtype: str = "float32") -> PreTrainedModel:
    """The causal LM at ``path``, in ``dtype``."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])


def load_critic(path: str, dtype: str = "float32") -> PreTrainedModel:
    """The policy's backbone with a fresh one-output head: a token-classification model whose
    logit at each position is V(state). The head starts at zero, so initial values are 0."""
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1, dtype=DTYPES[dtype])
    head = model.score if hasattr(model, "score") else model.classifier
    torch.nn.init.zeros_(head.weight)
    if head.bias is not None:
        torch.nn.init.zeros_(head.bias)
    return model


def load_tokenizer(path: str):
    """The tokenizer saved beside the model."""
    return AutoTokenizer.from_pretrained(path)
