"""A short supervised warm start, cached on disk by everything that determines its result.

RL needs a policy that is right sometimes: a random tiny model never is, so the default job first
fine-tunes it on (prompt, answer) pairs for a few hundred steps. The result is a Hugging Face
folder under ``<cache_dir>/<key>``; the key hashes the base model's files, the pairs and the
hyperparameters, so a second run with the same settings loads it instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.progress import Progress
from transformers import AutoModelForCausalLM, AutoTokenizer


def cache_key(base_path: Path, pairs: Sequence[tuple[str, str]], **hyper: float) -> str:
    """Hash of the base model's config and weights, the training pairs and the hyperparameters."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((base_path / name).read_bytes())
    digest.update(json.dumps([list(pairs), hyper], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _batch(tokenizer, pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels that score only the answer and the EOS token."""
    rows, labels = [], []
    for prompt, answer in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    lab = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)], lab[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(lb), 1
    return ids, mask, lab


def warm_start(
    base_path: str | Path,
    pairs: Sequence[tuple[str, str]],
    cache_dir: str | Path,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Fine-tune ``base_path`` on ``pairs`` (cross-entropy on the answers) or reuse the cached result.

    Returns the folder of the warm-started model (weights, config, tokenizer).
    """
    base_path = Path(base_path)
    out = Path(cache_dir) / cache_key(base_path, pairs, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    if (out / "model.safetensors").exists():
        return out
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with Progress(transient=True) as progress:
        task = progress.add_task("warm start (supervised)", total=steps)
        for _ in range(steps):
            pick = torch.randint(len(pairs), (batch_size,), generator=generator).tolist()
            ids, mask, labels = _batch(tokenizer, [pairs[i] for i in pick])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            progress.update(task, advance=1, description=f"warm start (supervised) loss {loss.item():.3f}")
    staging = out.with_name(f"{out.name}.tmp{os.getpid()}")
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if (base_path / "generation_config.json").exists():
        shutil.copy(base_path / "generation_config.json", staging / "generation_config.json")
    publish(staging, out)
    return out


def publish(staging: Path, final: Path) -> None:
    """Move a finished folder into place; if a concurrent job got there first, keep theirs."""
    try:
        staging.rename(final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
