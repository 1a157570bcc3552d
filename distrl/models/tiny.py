"""A tiny Qwen2-architecture causal LM and a character-level tokenizer, built in code.

Nothing is downloaded: :func:`build_tiny_model` writes a Hugging Face folder (safetensors, config,
tokenizer with a chat template) that transformers and vLLM both load as they are.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
CHARACTERS = string.digits + string.ascii_letters + string.punctuation + " \n"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
VOCAB_SIZE = 128


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character, plus ``<pad>``, ``</s>`` (end of sequence), ``<unk>``."""
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *CHARACTERS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(
    *, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, max_positions: int = 512
) -> Qwen2Config:
    """A Qwen2 config over the character vocabulary (tied embeddings, 2 KV heads at most)."""
    tokenizer = build_tokenizer()
    return Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=min(2, num_heads),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )


def build_tiny_model(
    path: str | Path,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    seed: int = 0,
) -> Path:
    """Write a randomly initialized tiny model + tokenizer as a Hugging Face folder at ``path``
    (the sizes come from ``model.*``, :class:`~distrl.config.ModelConfig`)."""
    path = Path(path)
    torch.manual_seed(seed)
    config = tiny_config(
        hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, intermediate_size=intermediate_size
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    build_tokenizer().save_pretrained(path)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": config.eos_token_id}))
    return path
