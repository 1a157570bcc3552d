"""Learner role: the policy, sharded with FSDP2 over a torch.distributed group of N actors.

Every rank receives the whole batch by object reference and works on its own shard. One update
is ``learner.epochs`` passes × ``learner.mini_batches`` optimizer steps; each mini-batch is split
into micro-batches by a token budget (gradient accumulation). Loss denominators are those of
the whole mini-batch across ranks, so N ranks compute exactly the update of one (FSDP averages
gradients over ranks, hence the ``world_size`` factor). gloo on CPU, NCCL on GPU. A group of one
trains the plain module: with nothing to shard, FSDP's hooks would only add work.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
from pathlib import Path

import ray
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from distrl.algorithms import aggregate_loss, kl_penalty, policy_loss
from distrl.config import Config
from distrl.data.batch import TrajectoryBatch, shard_bounds
from distrl.models.flat import FlatWeights
from distrl.models.forward import response_logprobs, stack_rows
from distrl.models.loading import load_policy, load_tokenizer
from distrl.workers.group import actor_device, sharing_cores
from distrl.workers.timing import BusyClock, busy

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def make_optimizer(params, *, lr: float, weight_decay: float, warmup_steps: int, total_steps: int, schedule: str):
    """AdamW with linear warmup, then constant or cosine decay to 0 over ``total_steps``."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@ray.remote
class Learner(BusyClock):
    """One rank of the policy learner group."""

    def __init__(self, model_path: str, cfg: Config, *, rank: int, world_size: int) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.model_path = model_path
        self.device = actor_device(cfg.cluster.learner, "learner", share=world_size)

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0's address for the process group."""
        return ray.util.get_node_ip_address(), free_port()

    def setup(self, address: str, port: int, optimizer_state: str | None = None) -> int:
        """Join the process group, shard the model, build the optimizer (optionally restored)."""
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group(
            backend, init_method=f"tcp://{address}:{port}", rank=self.rank, world_size=self.world_size
        )
        model = load_policy(self.model_path, self.cfg.model.dtype).to(self.device)
        model.gradient_checkpointing_disable()
        if self.world_size > 1:  # one rank holds the whole model: FSDP's hooks would only add work
            mesh = init_device_mesh(self.device.type, (self.world_size,))
            for layer in model.model.layers:
                fully_shard(layer, mesh=mesh)
            model = fully_shard(model, mesh=mesh)
        self.model = model
        learner = self.cfg.learner
        total = self.cfg.trainer.total_steps * learner.epochs * learner.mini_batches
        self.optimizer, self.scheduler = make_optimizer(
            self.model.parameters(),
            lr=learner.lr,
            weight_decay=learner.weight_decay,
            warmup_steps=learner.warmup_steps,
            total_steps=total,
            schedule=learner.lr_schedule,
        )
        if optimizer_state is not None:
            saved = torch.load(optimizer_state, map_location="cpu", weights_only=False)
            set_optimizer_state_dict(self.model, self.optimizer, saved["optimizer"], options=FULL_STATE)
            self.scheduler.load_state_dict(saved["scheduler"])
        return sum(p.numel() for p in model.parameters())

    @torch.no_grad()
    @busy("old_logprob")
    def logprobs(self, batch: TrajectoryBatch, share: int = 1) -> torch.Tensor:
        """This rank's shard's log-probs ``[shard, T]`` under the current policy (old log-probs);
        ``share``: roles computing at the same time (see :func:`sharing_cores`)."""
        shard = batch.shard(self.rank, self.world_size)
        temperature = self.cfg.rollout.temperature
        with sharing_cores(self.cfg.cluster.learner, share):
            return stack_rows(
                self._micro_batches(batch, shard),
                lambda micro: response_logprobs(self.model, micro, temperature=temperature)[0],
                shard.response_ids.shape[1],
            )

    def _micro_batches(
        self, whole: TrajectoryBatch, shard: TrajectoryBatch
    ) -> tuple[list[TrajectoryBatch], torch.Tensor]:
        """Split ``shard``, its rows sorted by length, into as many micro-batches as the busiest rank
        needs (FSDP needs every rank to run the same number of forward passes); and the row order."""
        width = whole.prompt_len + whole.response_ids.shape[1]
        bounds = shard_bounds(len(whole), self.world_size)
        rows = [hi - lo for lo, hi in itertools.pairwise(bounds)]
        need = max(math.ceil(n * width / self.cfg.learner.micro_batch_tokens) for n in rows)
        return shard.split_by_length(max(1, min(need, min(rows))))

    @busy("update")
    def update(self, batch: TrajectoryBatch, step: int, kl_coef: float = 0.0) -> dict[str, float]:
        """One policy update on a batch with ``advantages`` (and ``ref_logprobs`` when the KL term is
        a loss, weighted by ``kl_coef``, which the adaptive controller may change between steps).
        Without ``old_logprobs`` in the batch (no old-log-prob pass, see
        :attr:`~distrl.config.LearnerConfig.old_logprob_pass`) π_old is the forward's own detached
        log-probs, and this update also reports ``policy/kl_ref`` and ``rollout/logprob_diff`` over the
        whole batch. Returns metrics averaged over micro-batches."""
        cfg = self.cfg
        self.model.train()
        sums: dict[str, float] = {}
        count, skipped, grad_norms = 0, 0, []
        # Σ|log π − log π_rollout|, Σ KL(π‖π_ref), Σ tokens: the old-log-prob pass's metrics, when it was skipped
        old_stats = torch.zeros(3, device=self.device)
        generator = torch.Generator().manual_seed(cfg.trainer.seed * 100_003 + step)
        for _ in range(cfg.learner.epochs):
            order = torch.randperm(len(batch), generator=generator)
            for mini_index in order.chunk(cfg.learner.mini_batches):
                mini = batch.select(mini_index)
                denominators = {"num_seqs": len(mini), "num_tokens": float(mini.response_mask.sum())}
                for micro in self._micro_batches(mini, mini.shard(self.rank, self.world_size))[0]:
                    loss, metrics = self._micro_loss(micro, denominators, generator, kl_coef, old_stats)
                    (loss * self.world_size).backward()
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.learner.grad_clip)
                grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
                if math.isfinite(grad_norm):
                    self.optimizer.step()
                    grad_norms.append(grad_norm)
                else:
                    skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
        out = {k: v / max(1, count) for k, v in sums.items()}
        out["policy/grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
        out["policy/lr"] = self.scheduler.get_last_lr()[0]
        out["train/nonfinite_skipped"] = float(skipped)
        if "old_logprobs" not in batch.token:
            if self.world_size > 1:
                dist.all_reduce(old_stats)
            tokens = float(old_stats[2].clamp(min=1))
            out["rollout/logprob_diff"] = float(old_stats[0]) / tokens
            if "ref_logprobs" in batch.token:
                out["policy/kl_ref"] = float(old_stats[1]) / tokens
        return out

    def _micro_loss(
        self,
        micro: TrajectoryBatch,
        denominators: dict[str, float],
        generator: torch.Generator,
        kl_coef: float,
        old_stats: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy loss (+ KL loss − entropy bonus) of one micro-batch, with mini-batch denominators."""
        alg = self.cfg.algorithm
        move = {k: v.to(self.device) for k, v in micro.token.items()}
        mask = micro.response_mask.to(self.device)
        if alg.mask_truncated:
            mask = mask * (1 - micro.sample["truncated"].to(self.device))[:, None]
        logprobs, entropy = response_logprobs(
            self.model, micro, temperature=self.cfg.rollout.temperature, with_entropy=True
        )
        logprobs = logprobs.float()
        old_logprobs = move.get("old_logprobs")
        if old_logprobs is None:
            old_logprobs = logprobs.detach()
            valid = micro.response_mask.to(self.device)
            old_stats[0] += ((old_logprobs - move["rollout_logprobs"]).abs() * valid).sum()
            if "ref_logprobs" in move:
                old_stats[1] += (kl_penalty(old_logprobs, move["ref_logprobs"], alg.kl.estimator) * valid).sum()
            old_stats[2] += valid.sum()
        agg = {"max_len": self.cfg.rollout.max_new_tokens, **denominators}
        loss, metrics = policy_loss(
            alg.policy_loss,
            logprobs=logprobs,
            old_logprobs=old_logprobs,
            advantages=move["advantages"],
            response_mask=mask,
            clip_low=alg.clip_low,
            clip_high=alg.clip_high,
            clip_c=alg.clip_c,
            agg=alg.loss_agg,
            rollout_logprobs=move["rollout_logprobs"] if self.cfg.tis_cap is not None else None,
            tis_cap=self.cfg.tis_cap,
            rollout_correction=alg.rollout_correction,
            clip_cov_ratio=alg.clip_cov_ratio,
            clip_cov_lb=alg.clip_cov_lb,
            clip_cov_ub=alg.clip_cov_ub,
            kl_cov_ratio=alg.kl_cov_ratio,
            kl_coef=alg.kl_cov_coef,
            generator=generator,
            **agg,
        )
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["policy/pg_loss"] = loss.item()
        mean_entropy = aggregate_loss(entropy.float(), mask, alg.loss_agg, **agg)
        metrics["policy/entropy"] = float((entropy.detach() * mask).sum() / mask.sum().clamp(min=1))
        if kl_coef > 0 and alg.kl.uses_loss:
            kl = aggregate_loss(kl_penalty(logprobs, move["ref_logprobs"], alg.kl.estimator), mask, alg.loss_agg, **agg)
            loss = loss + kl_coef * kl
        if alg.entropy_coef > 0:
            loss = loss - alg.entropy_coef * mean_entropy
        metrics["policy/loss"] = loss.item()
        return loss, metrics

    @busy("weight_gather")
    def state_dict(self, dtype: str) -> FlatWeights | None:
        """The full weights on rank 0 as one flat buffer in ``dtype`` (a collective: every rank must
        call it). Each sharded tensor is gathered and copied (cast, to CPU) into its slot in turn."""
        state = self.model.state_dict()
        flat = (
            FlatWeights.allocate({k: v.shape for k, v in state.items()}, getattr(torch, dtype))
            if self.rank == 0
            else None
        )
        for i, tensor in enumerate(state.values()):
            full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor  # every rank joins the gather
            if flat is not None:
                flat.view(i).copy_(full.detach())
        return flat

    def save(self, folder: str) -> None:
        """Write a Hugging Face folder (weights, config, tokenizer) plus ``optimizer.pt`` (collective)."""
        weights = get_model_state_dict(self.model, options=FULL_STATE)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=FULL_STATE)
        if self.rank != 0:
            return
        path = Path(folder)
        self.model.save_pretrained(path, state_dict=weights, safe_serialization=True)
        load_tokenizer(self.model_path).save_pretrained(path)
        torch.save({"optimizer": optim, "scheduler": self.scheduler.state_dict()}, path / "optimizer.pt")

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
