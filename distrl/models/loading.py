"""Loading policies, references and critics from Hugging Face folders."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


#: A Hugging Face hub id: ``org/name`` (letters, digits, ``-``, ``_``, ``.``).
HUB_ID = re.compile(r"[\w][\w.-]*/[\w][\w.-]*")


def check_model_path(path: str) -> None:
    """Fail early, naming the fix, when ``path`` is neither a Hugging Face model folder nor a hub id
    this machine can reach (a hub id is loaded by every role on its own node, from the hub cache)."""
    folder = Path(path).expanduser()
    if not folder.exists() and HUB_ID.fullmatch(path):
        _check_hub_id(path)
        return
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model.path={path!r} does not exist; point model.path at a Hugging Face model folder "
            "(config.json + weights + tokenizer) or a hub id (org/name), or leave it unset to build the tiny "
            "built-in model"
        )
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"model.path={path!r} has no config.json; it must be a Hugging Face model folder")


def _check_hub_id(repo_id: str) -> None:
    """The hub id's ``config.json`` is in the local cache or downloadable now; else a clear error."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo_id, "config.json")
    except Exception as err:
        raise FileNotFoundError(
            f"model.path={repo_id!r} is not a folder here, and the Hugging Face hub did not give its config.json "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Offline or behind a firewall, "
            f"download it where the hub is reachable (huggingface-cli download {repo_id} --local-dir DIR) and set "
            "model.path=DIR"
        ) from err


def decoder_layers(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The repeated blocks that FSDP shards one by one: the modules whose class the model lists in
    ``_no_split_modules`` (every Hugging Face causal LM names its decoder layer there)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__} to shard (its _no_split_modules is "
            f"{sorted(names)}); use cluster.learners=1, or a model class that names its layers there"
        )
    return layers


def count_parameters(path: str, *, trust_remote_code: bool = False) -> int:
    """The parameter count of the causal LM at ``path``, from its config alone (built on the meta
    device: no weights are read)."""
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return model.num_parameters()


def load_policy(path: str, dtype: str = "float32", *, trust_remote_code: bool = False) -> PreTrainedModel:
    """The causal LM at ``path``, in ``dtype`` (``trust_remote_code``: ``model.trust_remote_code``)."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)


def load_critic(path: str, dtype: str = "float32", *, trust_remote_code: bool = False) -> PreTrainedModel:
    """The policy's backbone with a fresh one-output head: a token-classification model whose
    logit at each position is V(state). The head starts at zero, so initial values are 0, and has no
    dropout (transformers puts 0.1 before a token-classification head by default, which would make V a
    random regression target and the update differ with the number of ranks)."""
    config = AutoConfig.from_pretrained(path, num_labels=1, trust_remote_code=trust_remote_code)
    config.classifier_dropout = 0.0
    model = AutoModelForTokenClassification.from_pretrained(
        path, config=config, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
    )
    head = model.score if hasattr(model, "score") else model.classifier
    torch.nn.init.zeros_(head.weight)
    if head.bias is not None:
        torch.nn.init.zeros_(head.bias)
    return model


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    """The tokenizer saved beside the model."""
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def set_gradient_checkpointing(model: PreTrainedModel, enabled: bool) -> None:
    """Turn activation checkpointing of a Hugging Face model on (non-reentrant, which FSDP2 and
    ``torch.autocast`` need) or off."""
    if enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
