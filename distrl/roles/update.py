"""The one update loop that the learner and the critic share.

An update is ``epochs`` passes over a batch, each cut into ``mini_batches`` random mini-batches
(one optimizer step each); a mini-batch is cut into micro-batches whose losses are backpropagated
one by one (gradient accumulation). The gradient is clipped to ``grad_clip``; a step whose gradient
norm is NaN or infinite is skipped (weights and optimizer state untouched) and counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from distrl.data.batch import TrajectoryBatch


def make_optimizer(params, *, lr: float, weight_decay: float, warmup_steps: int, total_steps: int, schedule: str):
    """AdamW with linear warmup, then constant or cosine decay to 0 over ``total_steps``:
    lr_k = lr·(k+1)/warmup for k < warmup; then lr (constant) or lr·½(1 + cos(π·progress)) (cosine)."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class UpdateStats:
    """What an update did: metric sums over micro-batches, grad norms of the steps taken, skips."""

    sums: dict[str, float] = field(default_factory=dict)
    micro_batches: int = 0
    grad_norms: list[float] = field(default_factory=list)
    skipped: int = 0

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.micro_batches += 1

    def means(self) -> dict[str, float]:
        """Each metric averaged over micro-batches."""
        return {k: v / max(1, self.micro_batches) for k, v in self.sums.items()}

    @property
    def grad_norm(self) -> float:
        """Mean gradient norm (before clipping) of the optimizer steps taken; NaN if none was."""
        return sum(self.grad_norms) / len(self.grad_norms) if self.grad_norms else float("nan")


def run_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: TrajectoryBatch,
    *,
    epochs: int,
    mini_batches: int,
    grad_clip: float,
    generator: torch.Generator,
    micro_batches: Callable[[TrajectoryBatch], Iterable[TrajectoryBatch]],
    micro_loss: Callable[[TrajectoryBatch, TrajectoryBatch], tuple[torch.Tensor, dict[str, float]]],
) -> UpdateStats:
    """Train ``model`` on ``batch``: for each epoch, a random permutation (``generator``) cut into
    ``mini_batches`` mini-batches; ``micro_batches(mini)`` gives the micro-batches this process
    computes and ``micro_loss(micro, mini)`` their loss (already scaled so that the accumulated
    gradient is the mini-batch's) and metrics. Dropout draws from torch's global RNG, seeded here
    with ``generator``'s seed, so that a resumed run draws the masks an unbroken run draws."""
    torch.manual_seed(generator.initial_seed())
    model.train()
    stats = UpdateStats()
    for _ in range(epochs):
        for index in torch.randperm(len(batch), generator=generator).chunk(mini_batches):
            mini = batch.select(index)
            for micro in micro_batches(mini):
                loss, metrics = micro_loss(micro, mini)
                loss.backward()
                stats.add(metrics)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            if math.isfinite(norm):
                optimizer.step()
                stats.grad_norms.append(norm)
            else:
                stats.skipped += 1
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
    return stats
