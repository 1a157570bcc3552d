"""Critic role: a value model (the policy's backbone + a scalar head) trained with the clipped
value loss, started only when the advantage estimator needs values (GAE)."""

from __future__ import annotations

from pathlib import Path

import ray
import torch

from distrl.algorithms import value_loss
from distrl.config import Config
from distrl.data.batch import TrajectoryBatch
from distrl.models.forward import response_values, stack_rows
from distrl.models.loading import load_critic
from distrl.workers.group import actor_device, sharing_cores
from distrl.workers.learner import make_optimizer
from distrl.workers.timing import BusyClock, busy


@ray.remote
class Critic(BusyClock):
    """The value model on one actor. ``state`` is a checkpoint's ``critic/`` folder to resume from."""

    def __init__(self, model_path: str, cfg: Config, *, state: str | None = None) -> None:
        self.cfg, self.model_path = cfg, model_path
        self.device = actor_device(cfg.cluster.critic, "critic")
        self.model = load_critic(model_path, cfg.model.dtype).to(self.device)
        if state is not None:
            self.model.load_state_dict(torch.load(Path(state) / "critic.pt", map_location="cpu"))
        learner = cfg.learner
        self.optimizer, self.scheduler = make_optimizer(
            self.model.parameters(),
            lr=cfg.critic.lr,
            weight_decay=learner.weight_decay,
            warmup_steps=learner.warmup_steps,
            total_steps=cfg.trainer.total_steps * learner.epochs * learner.mini_batches,
            schedule="constant",
        )
        if state is not None:
            saved = torch.load(Path(state) / "critic_optimizer.pt", map_location="cpu", weights_only=False)
            self.optimizer.load_state_dict(saved)

    @torch.no_grad()
    @busy("values")
    def values(self, batch: TrajectoryBatch, share: int = 1) -> torch.Tensor:
        """V(x, y_<t) ``[B, T]`` for every response token; ``share``: roles computing at the same
        time (see :func:`sharing_cores`)."""
        self.model.eval()
        with sharing_cores(self.cfg.cluster.critic, share):
            return stack_rows(
                batch.micro_batches(self.cfg.learner.micro_batch_tokens),
                lambda micro: response_values(self.model, micro),
                batch.response_ids.shape[1],
            )

    @busy("critic_update")
    def update(self, batch: TrajectoryBatch, step: int) -> dict[str, float]:
        """Clipped value-loss regression of V onto the returns, same epochs and mini-batches as the policy."""
        cfg = self.cfg
        self.model.train()
        generator = torch.Generator().manual_seed(cfg.trainer.seed * 100_003 + step + 1)
        sums: dict[str, float] = {}
        count = 0
        for _ in range(cfg.learner.epochs):
            for mini_index in torch.randperm(len(batch), generator=generator).chunk(cfg.learner.mini_batches):
                mini = batch.select(mini_index)
                tokens = float(mini.response_mask.sum())
                for micro in mini.micro_batches(cfg.learner.micro_batch_tokens)[0]:
                    mask = micro.response_mask.to(self.device)
                    loss, metrics = value_loss(
                        values=response_values(self.model, micro),
                        old_values=micro.token["values"].to(self.device),
                        returns=micro.token["returns"].to(self.device),
                        response_mask=mask,
                        clip=cfg.algorithm.value_clip,
                    )
                    (loss * mask.sum() / max(tokens, 1.0)).backward()
                    metrics["critic/loss"] = loss.detach()
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.learner.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
        return {k: v / max(1, count) for k, v in sums.items()}

    def save(self, folder: str) -> None:
        """Write the critic's weights and optimizer into a checkpoint folder."""
        path = Path(folder) / "critic"
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "critic.pt")
        torch.save(self.optimizer.state_dict(), path / "critic_optimizer.pt")
