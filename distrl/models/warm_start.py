"""A short supervised warm start, optionally stopped at a measured capability, cached on disk.

RL needs a policy that is right sometimes: a random tiny model never is, so the default job first
fine-tunes it on (prompt, answer) pairs. RL turns pass@k into pass@1 and cannot go past what the
start can sometimes do, and it has nothing to add where greedy decoding is already right; so with a
:class:`StopRule` the warm start stops at the first check (every ``check_every`` steps) where, on
a probe set of problems it does not train on, pass@k at temperature 1 reaches ``stop_pass_at_k``
(:func:`should_stop`), or after ``steps`` steps. The result is a Hugging Face folder under
``<cache_dir>/<key>``; the key hashes the base model's files, the pairs and every hyperparameter,
the probe and the stop rule's included when it is on, so a second run with the same settings loads
it instead of training again. The folder's ``warm_start.json`` records each check (step, probe
greedy accuracy, pass@k) and the step it stopped at.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class StopRule:
    """When the warm start stops: at the first step ``s`` with ``s % check_every == 0`` where the probe's
    pass@``probe_k`` (temperature 1) is ``>= stop_pass_at_k``; ``check_every=0``: never early."""

    check_every: int = 0
    stop_pass_at_k: float = 1.0
    probe_k: int = 8


def should_stop(step: int, pass_at_k: float | None, rule: StopRule) -> bool:
    """``True`` when ``step`` is a check step of ``rule`` and its probe ``pass_at_k`` reached the threshold."""
    if rule.check_every <= 0 or step % rule.check_every != 0 or pass_at_k is None:
        return False
    return pass_at_k >= rule.stop_pass_at_k


@torch.no_grad()
def probe(
    model, tokenizer, pairs: Sequence[tuple[str, str]], *, k: int, seed: int, max_new_tokens: int = 8
) -> tuple[float, float]:
    """(greedy accuracy, pass@k at temperature 1) of ``model`` on ``pairs``: the fraction of prompts whose
    greedy answer is exactly right, and the fraction with at least one exactly right answer among
    ``k`` samples."""
    was_training = model.training
    model.eval()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in pairs]
    answers = [a for _, a in pairs]

    def correct(n: int, **sampling) -> list[bool]:
        rows = [p for p in prompts for _ in range(n)]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad,
                             eos_token_id=eos, **sampling)  # fmt: skip
        hits = []
        for row, tokens in enumerate(out[:, width:].tolist()):
            tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
            hits.append(tokenizer.decode(tokens, skip_special_tokens=True).strip() == answers[row // n])
        return [any(hits[i * n : (i + 1) * n]) for i in range(len(prompts))]

    greedy = correct(1, do_sample=False)
    torch.manual_seed(seed)
    sampled = correct(k, do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
    model.train(was_training)
    return sum(greedy) / len(pairs), sum(sampled) / len(pairs)


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
    weight_decay: float = 0.0,
    seed: int = 0,
    probe_pairs: Sequence[tuple[str, str]] = (),
    rule: StopRule = StopRule(),
    watch_pairs: Sequence[tuple[str, str]] = (),
) -> Path:
    """Fine-tune ``base_path`` on ``pairs`` (cross-entropy on the answers) for at most ``steps`` steps,
    stopping early by ``rule`` on ``probe_pairs`` (none: never early), or reuse the cached result.
    The learning rate warms up linearly over 20 steps and decays linearly to 0 at ``steps``.
    ``watch_pairs`` (a calibration's held-out set) are probed at every check beside the probe and recorded
    as ``watch_greedy_acc`` and ``watch_pass@k``; they never stop the run.

    Returns the folder of the warm-started model (weights, config, tokenizer, ``warm_start.json``).
    """
    base_path = Path(base_path)
    hyper = {"steps": steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed}
    if probe_pairs and rule.check_every > 0:
        hyper |= {"probe": [list(p) for p in probe_pairs], "watch": [list(p) for p in watch_pairs], **asdict(rule)}
    out = Path(cache_dir) / cache_key(base_path, pairs, **hyper)
    if (out / "model.safetensors").exists():
        report(out)
        return out
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    checks: list[dict[str, float]] = []
    stopped = steps

    def check(step: int) -> float:
        """Probe (and watch) at ``step``, record it; the probe's pass@k."""
        greedy, pass_k = probe(model, tokenizer, probe_pairs, k=rule.probe_k, seed=seed + step)
        checks.append({"step": step, "greedy_acc": greedy, f"pass@{rule.probe_k}": pass_k})
        if watch_pairs:
            greedy, watched = probe(model, tokenizer, watch_pairs, k=rule.probe_k, seed=seed + step)
            checks[-1] |= {"watch_greedy_acc": greedy, f"watch_pass@{rule.probe_k}": watched}
        return pass_k

    with Progress(transient=True) as progress:
        task = progress.add_task("warm start (supervised)", total=steps)
        for step in range(steps):
            if probe_pairs and rule.check_every > 0 and step > 0 and step % rule.check_every == 0:
                if should_stop(step, check(step), rule):
                    stopped = step
                    break
            pick = torch.randint(len(pairs), (batch_size,), generator=generator).tolist()
            ids, mask, labels = _batch(tokenizer, [pairs[i] for i in pick])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            progress.update(task, advance=1, description=f"warm start (supervised) loss {loss.item():.3f}")
    if probe_pairs and stopped == steps:
        check(steps)
    staging = out.with_name(f"{out.name}.tmp{os.getpid()}")
    model.save_pretrained(staging, safe_serialization=True)
    record = {"stopped_at": stopped, "max_steps": steps, "probe_k": rule.probe_k, "checks": checks}
    (staging / "warm_start.json").write_text(json.dumps(record))
    tokenizer.save_pretrained(staging)
    if (base_path / "generation_config.json").exists():
        shutil.copy(base_path / "generation_config.json", staging / "generation_config.json")
    publish(staging, out)
    report(out)
    return out


def report(folder: Path) -> None:
    """Print where a warm start stopped and its last probe measurement (from ``warm_start.json``)."""
    path = folder / "warm_start.json"
    if not path.exists():
        return
    record = json.loads(path.read_text())
    if record["checks"]:
        last, k = record["checks"][-1], record["probe_k"]
        print(f"distrl: warm start stopped at step {record['stopped_at']}/{record['max_steps']}: probe greedy "
              f"accuracy {last['greedy_acc']:.3f}, pass@{k} {last[f'pass@{k}']:.3f}")  # fmt: skip


def publish(staging: Path, final: Path) -> None:
    """Move a finished folder into place; if a concurrent job got there first, keep theirs."""
    try:
        staging.rename(final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
