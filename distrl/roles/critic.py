"""Critic role: a value model (the policy's backbone + a scalar head) trained with the clipped
value loss, started only when the advantage estimator needs values (GAE). Its ``cluster.critics``
ranks shard the model (FSDP2, as the learner's) and split each batch: a data-parallel update."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from distrl import checkpoint
from distrl.algorithms import value_loss
from distrl.config import Config
from distrl.data.batch import TrajectoryBatch
from distrl.models.forward import response_values, stack_rows
from distrl.models.loading import load_critic, set_gradient_checkpointing
from distrl.roles.fsdp import FULL_STATE, leave_group, shard_model
from distrl.roles.learner import free_port
from distrl.roles.resources import actor_device, sharing_cores
from distrl.roles.timing import BusyClock, busy
from distrl.roles.update import make_optimizer, run_update


class Critic(BusyClock):
    """One rank of the value model; :meth:`setup` joins the ranks and builds the optimizer."""

    def __init__(self, model_path: str, cfg: Config, *, rank: int = 0, world_size: int = 1) -> None:
        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        self.device = actor_device(cfg.cluster.critic, "critic", share=world_size)

    def free_port(self) -> int:
        """A free port on this rank's node, for the process group's rendezvous (rank 0)."""
        return free_port()

    def setup(self, address: str | None = None, port: int | None = None, state: str | None = None) -> None:
        """Join the critic's process group at ``address:port`` (several ranks), load the model
        (float32 masters; ``state``: a checkpoint's ``critic/`` folder to resume from), shard it,
        build the optimizer."""
        cfg = self.cfg
        model = load_critic(self.model_path, "float32", trust_remote_code=cfg.model.trust_remote_code)
        if state is not None:
            model.load_state_dict(torch.load(Path(state) / "critic.pt", map_location="cpu", weights_only=True))
        set_gradient_checkpointing(model, cfg.gradient_checkpointing)
        self.model, self.compute = shard_model(
            model.to(self.device), precision=cfg.learner.precision, device=self.device,
            rank=self.rank, world_size=self.world_size, address=address, port=port,
        )  # fmt: skip
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
            self._load_optimizer(Path(state) / "critic_optimizer.pt")

    def _load_optimizer(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if "optimizer" not in saved:  # written before the critic had ranks: a plain optimizer state dict
            self.optimizer.load_state_dict(saved)
            return
        set_optimizer_state_dict(self.model, self.optimizer, saved["optimizer"], options=FULL_STATE)
        self.scheduler.load_state_dict(saved["scheduler"])

    @torch.no_grad()
    @busy("values")
    def values(self, batch: TrajectoryBatch, share: int = 1) -> torch.Tensor:
        """V(x, y_<t) ``[shard, T]`` for every response token of this rank's shard; ``share``: roles
        computing at the same time (see :func:`sharing_cores`)."""
        self.model.eval()
        shard = batch.shard(self.rank, self.world_size)
        with sharing_cores(self.cfg.cluster.critic, share), self.compute():
            return stack_rows(
                shard.micro_batches(self.cfg.learner.micro_batch_tokens),
                lambda micro: response_values(self.model, micro),
                shard.response_ids.shape[1],
            )

    @busy("critic_update")
    def update(self, batch: TrajectoryBatch, step: int) -> dict[str, float]:
        """Clipped value-loss regression of V onto the returns, same epochs and mini-batches as the
        policy; each micro-batch's token-mean loss is weighted by its share of the mini-batch's tokens
        (times the ranks: FSDP averages the ranks' gradients, each rank holding its shard's micro-batches)."""
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
            return loss * mask.sum() / max(float(mini.response_mask.sum()), 1.0) * self.world_size, metrics

        tokens = cfg.learner.micro_batch_tokens
        stats = run_update(
            self.model, self.optimizer, self.scheduler, batch,
            epochs=cfg.learner.epochs, mini_batches=cfg.learner.mini_batches, grad_clip=cfg.learner.grad_clip,
            generator=torch.Generator().manual_seed(cfg.trainer.seed * 100_003 + step + 1), micro_loss=micro_loss,
            micro_batches=lambda mini: mini.shard(self.rank, self.world_size).micro_batches(tokens)[0],
        )  # fmt: skip
        return {**stats.means(), "critic/nonfinite_skipped": float(stats.skipped)}

    def save(self, folder: str) -> tuple[str, dict[str, list]] | None:
        """Write the critic's whole weights, optimizer and LR schedule into ``folder/critic`` (a
        collective: every rank gathers, rank 0 writes); rank 0 returns its node and the files'
        sizes and hashes (:func:`checkpoint.seal`)."""
        weights = get_model_state_dict(self.model, options=FULL_STATE)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=FULL_STATE)
        if self.rank != 0:
            return None
        path = Path(folder) / "critic"
        path.mkdir(parents=True, exist_ok=True)
        torch.save(weights, path / "critic.pt")
        torch.save({"optimizer": optim, "scheduler": self.scheduler.state_dict()}, path / "critic_optimizer.pt")
        return socket.gethostname(), checkpoint.seal(folder, path)

    def probe_output_dir(self, path: str) -> str:
        """Write ``path`` on this rank's node (the driver then looks for it); returns the node's name."""
        return checkpoint.probe(path)

    def close(self) -> None:
        """Leave the process group (several ranks)."""
        leave_group(self.world_size)
