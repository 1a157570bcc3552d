"""Critic role: a value model (the policy's backbone + a scalar head) trained with the clipped
value loss, started only when the advantage estimator needs values (GAE)."""

from __future__ import annotations

from pathlib import Path

import torch

from distrl.algorithms import value_loss
from distrl.config import Config
from distrl.data.batch import TrajectoryBatch
from distrl.models.forward import response_values, stack_rows
from distrl.models.loading import load_critic, set_gradient_checkpointing
from distrl.roles.resources import actor_device, compute_precision, sharing_cores
from distrl.roles.timing import BusyClock, busy
from distrl.roles.update import make_optimizer, run_update


class Critic(BusyClock):
    """The value model on one process. ``state`` is a checkpoint's ``critic/`` folder to resume from."""

    def __init__(self, model_path: str, cfg: Config, *, state: str | None = None) -> None:
        self.cfg, self.model_path = cfg, model_path
        self.device = actor_device(cfg.cluster.critic, "critic")
        # float32 masters (learner.precision)
        self.model = load_critic(model_path, "float32", trust_remote_code=cfg.model.trust_remote_code).to(self.device)
        set_gradient_checkpointing(self.model, cfg.gradient_checkpointing)
        self.compute = compute_precision(cfg.learner.precision, self.device)
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
        with sharing_cores(self.cfg.cluster.critic, share), self.compute():
            return stack_rows(
                batch.micro_batches(self.cfg.learner.micro_batch_tokens),
                lambda micro: response_values(self.model, micro),
                batch.response_ids.shape[1],
            )

    @busy("critic_update")
    def update(self, batch: TrajectoryBatch, step: int) -> dict[str, float]:
        """Clipped value-loss regression of V onto the returns, same epochs and mini-batches as the
        policy; each micro-batch's token-mean loss is weighted by its share of the mini-batch's tokens."""
        cfg = self.cfg

        def micro_loss(micro: TrajectoryBatch, mini: TrajectoryBatch) -> tuple[torch.Tensor, dict[str, float]]:
            mask = micro.response_mask.to(self.device)
            with self.compute():
                values = response_values(self.model, micro)
            loss, metrics = value_loss(
                values=values,
                old_values=micro.token["values"].to(self.device),
                returns=micro.token["returns"].to(self.device),
                response_mask=mask,
                clip=cfg.algorithm.value_clip,
            )
            metrics["critic/loss"] = loss.detach()
            return loss * mask.sum() / max(float(mini.response_mask.sum()), 1.0), metrics

        stats = run_update(
            self.model, self.optimizer, self.scheduler, batch,
            epochs=cfg.learner.epochs, mini_batches=cfg.learner.mini_batches, grad_clip=cfg.learner.grad_clip,
            generator=torch.Generator().manual_seed(cfg.trainer.seed * 100_003 + step + 1), micro_loss=micro_loss,
            micro_batches=lambda mini: mini.micro_batches(cfg.learner.micro_batch_tokens)[0],
        )  # fmt: skip
        return {**stats.means(), "critic/nonfinite_skipped": float(stats.skipped)}

    def save(self, folder: str) -> None:
        """Write the critic's weights and optimizer into a checkpoint folder."""
        path = Path(folder) / "critic"
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "critic.pt")
        torch.save(self.optimizer.state_dict(), path / "critic_optimizer.pt")
