"""Learner role: the policy, sharded with FSDP2 over a torch.distributed group of N ranks.

Every rank receives the whole batch and works on its own shard. One update is
``learner.epochs`` passes × ``learner.mini_batches`` optimizer steps (:func:`run_update`); each
mini-batch is split into micro-batches by a token budget (gradient accumulation). Loss
denominators are those of the whole mini-batch across ranks, so N ranks compute exactly the
update of one (FSDP averages gradients over ranks, hence the ``world_size`` factor). gloo on CPU,
NCCL on GPU. A group of one trains the plain module in its own process, without a process group:
with nothing to shard, FSDP's hooks would only add work.
"""

from __future__ import annotations

import functools
import itertools
import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from distrl import checkpoint
from distrl.algorithms import POLICY_LOSSES, ROLLOUT_CORRECTIONS, aggregate_loss, kl_penalty, policy_loss
from distrl.config import Config
from distrl.data.batch import TrajectoryBatch, shard_bounds
from distrl.models.flat import FlatLayout, FlatWeights, TensorFlat
from distrl.models.forward import response_logprobs, stack_rows
from distrl.models.loading import load_policy, load_tokenizer, set_gradient_checkpointing
from distrl.models.lora import attach_lora, merged, merged_shapes
from distrl.roles.fsdp import FULL_STATE, leave_group, shard_model
from distrl.roles.resources import actor_device, sharing_cores
from distrl.roles.timing import BusyClock, busy
from distrl.roles.update import make_optimizer, run_update
from distrl.roles.weight_sync import DeltaEncoder, SharedWeights, SyncGroup, WeightUpdate, send_update


@dataclass(frozen=True)
class PolicyObjective:
    """The loss the config asks for, resolved once per run: the registered policy loss with the
    config fields it reads, the rollout correction in force (with its inputs), the KL loss and the
    entropy bonus. ``needs`` are the inputs it uses (see :data:`distrl.algorithms.INPUTS`)."""

    loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    needs: frozenset[str]
    loss_agg: str
    kl_estimator: str
    kl_in_loss: bool
    entropy_coef: float
    mask_truncated: bool

    @classmethod
    def from_config(cls, cfg: Config) -> PolicyObjective:
        alg = cfg.algorithm
        params = cfg.algorithm_params(POLICY_LOSSES, alg.policy_loss)
        needs = set(POLICY_LOSSES.needs(alg.policy_loss))
        correction = cfg.rollout_correction
        if correction is not None:
            params |= cfg.algorithm_params(ROLLOUT_CORRECTIONS, correction)
            needs |= ROLLOUT_CORRECTIONS.needs(correction)
        loss = functools.partial(
            policy_loss,
            alg.policy_loss,
            agg=alg.loss_agg,
            rollout_correction=correction or "tis",
            max_len=cfg.rollout.max_new_tokens,
            **params,
        )
        return cls(
            loss=loss,
            needs=frozenset(needs),
            loss_agg=alg.loss_agg,
            kl_estimator=alg.kl.estimator,
            kl_in_loss=alg.kl.uses_loss and alg.kl.coef > 0,
            entropy_coef=alg.entropy_coef,
            mask_truncated=alg.mask_truncated,
        )


def free_port() -> int:
    """A TCP port that is free on this node now."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Learner(BusyClock):
    """One rank of the policy learner group."""

    def __init__(self, model_path: str, cfg: Config, *, rank: int = 0, world_size: int = 1) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.model_path = model_path
        self.device = actor_device(cfg.cluster.learner, "learner", share=world_size)
        self.objective = PolicyObjective.from_config(cfg)
        self.encoder = DeltaEncoder(delta=cfg.rollout.sync_delta)
        self.sync_group: dist.ProcessGroup | None = None
        self.shared: TensorFlat | None = None

    def free_port(self) -> int:
        """A free port on this rank's node, for the process group's rendezvous (rank 0)."""
        return free_port()

    def setup(self, address: str | None = None, port: int | None = None, optimizer_state: str | None = None) -> int:
        """Join the process group at ``address:port`` (several ranks only), shard the model, build
        the optimizer (optionally restored from ``optimizer_state``); returns the parameter count.
        Weights and optimizer state are float32; ``learner.precision=bf16`` computes in bfloat16."""
        model = load_policy(self.model_path, "float32", trust_remote_code=self.cfg.model.trust_remote_code).to(
            self.device
        )
        lora = self.cfg.model.lora
        self.lora_scale = lora.alpha / lora.rank if lora.rank > 0 else None
        if lora.rank > 0:
            model = attach_lora(model, lora)
        set_gradient_checkpointing(model, self.cfg.gradient_checkpointing)
        self.model, self.compute = shard_model(
            model, precision=self.cfg.learner.precision, device=self.device,
            rank=self.rank, world_size=self.world_size, address=address, port=port,
        )  # fmt: skip
        learner = self.cfg.learner
        self.optimizer, self.scheduler = make_optimizer(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.cfg.learner_lr,
            weight_decay=learner.weight_decay,
            warmup_steps=learner.warmup_steps,
            total_steps=self.cfg.trainer.total_steps * learner.epochs * learner.mini_batches,
            schedule=learner.lr_schedule,
        )
        if optimizer_state is not None and self.lora_scale is None:  # LoRA resumes from the merged weights
            saved = torch.load(optimizer_state, map_location="cpu", weights_only=True)  # a crafted file cannot run code
            set_optimizer_state_dict(self.model, self.optimizer, saved["optimizer"], options=FULL_STATE)
            self.scheduler.load_state_dict(saved["scheduler"])
        return sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    @busy("old_logprob")
    def logprobs(self, batch: TrajectoryBatch, share: int = 1) -> torch.Tensor:
        """This rank's shard's log-probs ``[shard, T]`` under the current policy (old log-probs);
        ``share``: roles computing at the same time (see :func:`sharing_cores`)."""
        shard = batch.shard(self.rank, self.world_size)
        temperature = self.cfg.rollout.temperature
        with sharing_cores(self.cfg.cluster.learner, share), self.compute():
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
        # Σ|log π − log π_rollout|, Σ KL(π‖π_ref), Σ tokens: the old-log-prob pass's metrics, when it was skipped
        old_stats = torch.zeros(3, device=self.device)
        generator = torch.Generator().manual_seed(cfg.trainer.seed * 100_003 + step)

        def micro_loss(micro: TrajectoryBatch, mini: TrajectoryBatch) -> tuple[torch.Tensor, dict[str, float]]:
            denominators = {"num_seqs": len(mini), "num_tokens": float(mini.response_mask.sum())}
            loss, metrics = self._micro_loss(micro, denominators, generator, kl_coef, old_stats)
            return loss * self.world_size, metrics

        stats = run_update(
            self.model, self.optimizer, self.scheduler, batch,
            epochs=cfg.learner.epochs, mini_batches=cfg.learner.mini_batches, grad_clip=cfg.learner.grad_clip,
            generator=generator, micro_loss=micro_loss,
            micro_batches=lambda mini: self._micro_batches(mini, mini.shard(self.rank, self.world_size))[0],
        )  # fmt: skip
        out = stats.means()
        out["policy/grad_norm"] = stats.grad_norm
        out["policy/lr"] = self.scheduler.get_last_lr()[0]
        out["train/nonfinite_skipped"] = float(stats.skipped)
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
        objective = self.objective
        move = {k: v.to(self.device) for k, v in micro.token.items()}
        valid = micro.response_mask.to(self.device)
        mask = valid * (1 - micro.sample["truncated"].to(self.device))[:, None] if objective.mask_truncated else valid
        with self.compute():
            logprobs, entropy = response_logprobs(
                self.model, micro, temperature=self.cfg.rollout.temperature, with_entropy=True,
                entropy_grad=objective.entropy_coef > 0,
            )  # fmt: skip
        logprobs = logprobs.float()
        old_logprobs = move.get("old_logprobs")
        if old_logprobs is None:
            old_logprobs = logprobs.detach()
            old_stats[0] += ((old_logprobs - move["rollout_logprobs"]).abs() * valid).sum()
            if "ref_logprobs" in move:
                old_stats[1] += (kl_penalty(old_logprobs, move["ref_logprobs"], objective.kl_estimator) * valid).sum()
            old_stats[2] += valid.sum()
        inputs = {
            "rollout_logprobs": move["rollout_logprobs"] if "rollout_logprobs" in objective.needs else None,
            **({"generator": generator} if "generator" in objective.needs else {}),
        }
        loss, metrics = objective.loss(
            logprobs=logprobs, old_logprobs=old_logprobs, advantages=move["advantages"], response_mask=mask,
            **denominators, **inputs,
        )  # fmt: skip
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["policy/pg_loss"] = loss.item()
        agg = {"max_len": self.cfg.rollout.max_new_tokens, **denominators}
        metrics["policy/entropy"] = float((entropy.detach() * mask).sum() / mask.sum().clamp(min=1))
        if kl_coef > 0 and objective.kl_in_loss:
            kl = aggregate_loss(kl_penalty(logprobs, move["ref_logprobs"], objective.kl_estimator), mask,
                                objective.loss_agg, **agg)  # fmt: skip
            loss = loss + kl_coef * kl
        if objective.entropy_coef > 0:
            loss = loss - objective.entropy_coef * aggregate_loss(entropy.float(), mask, objective.loss_agg, **agg)
        metrics["policy/loss"] = loss.item()
        return loss, metrics

    @busy("weight_gather")
    def state_dict(self, dtype: str) -> FlatWeights | None:
        """The full weights on rank 0 as one flat buffer in ``dtype`` (a collective: every rank must
        call it). Each sharded tensor is gathered and copied (cast, to CPU) into its slot in turn."""
        flat = FlatWeights.allocate(self._shapes(), getattr(torch, dtype)) if self.rank == 0 else None
        for i, (_, full) in enumerate(self._full_tensors()):
            if flat is not None:
                flat.view(i).copy_(full)
        return flat

    def _shapes(self) -> dict[str, torch.Size]:
        """The names and shapes of the weights engines load (with LoRA: the merged ones)."""
        shapes = ((k, v.shape) for k, v in self.model.state_dict().items())
        return merged_shapes(shapes) if self.lora_scale is not None else dict(shapes)

    def _full_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) of the weights engines load, each whole, in order (every rank must iterate:
        a sharded tensor's gather is a collective); with LoRA the adapters are merged in."""
        state = self.model.state_dict()
        whole = ((k, (v.full_tensor() if isinstance(v, DTensor) else v).detach()) for k, v in state.items())
        return merged(whole, self.lora_scale) if self.lora_scale is not None else whole

    def weight_layout(self, dtype: str) -> FlatLayout:
        """The layout of :meth:`state_dict`'s buffer (names, shapes, offsets), without gathering."""
        return FlatLayout.for_shapes(self._shapes(), getattr(torch, dtype))

    def weights_update(self, dtype: str, full: bool = False) -> tuple[WeightUpdate | None, int]:
        """The next weight sync's payload on rank 0 (a collective) and its size in bytes: the whole
        buffer, or with ``rollout.sync_delta`` the words changed since the last one (``full``: the
        whole buffer regardless). Other ranks: ``(None, 0)``."""
        flat = self.state_dict(dtype)
        if flat is None:
            return None, 0
        update = self.encoder.encode(flat, full=full)
        return update, update.nbytes

    def join_weight_sync(self, group: SyncGroup) -> None:
        """Rank 0 joins the weight-sync process group as its rank 0 (blocks until every engine worker joins)."""
        if self.rank == 0:
            self.sync_group = group.join(0)

    def broadcast_weights(self, dtype: str, full: bool = False) -> int:
        """:meth:`weights_update`, broadcast through the weight-sync group; returns the bytes sent."""
        update, nbytes = self.weights_update(dtype, full)
        if update is not None:
            send_update(self.sync_group, update)
        return nbytes

    def share_weights(self, dtype: str) -> SharedWeights:
        """The whole weights in ``dtype`` gathered on every rank into a buffer on this rank's device,
        and a handle the engine on the same GPU (or host) opens (``cluster.weight_sync=ipc``; a
        collective). The buffer lives until :meth:`release_shared`."""
        flat = FlatLayout.for_shapes(self._shapes(), getattr(torch, dtype)).empty_tensor(self.device)
        for (_, view), (_, full) in zip(flat.items(), self._full_tensors(), strict=True):
            view.copy_(full)
        self.shared = flat
        return SharedWeights.share(flat)

    def release_shared(self) -> None:
        """Free the buffer of :meth:`share_weights` once the engines have loaded it."""
        self.shared = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def save(self, folder: str) -> tuple[str, dict[str, list]] | None:
        """Write a Hugging Face folder (weights, config, tokenizer) plus ``optimizer.pt`` (a collective;
        rank 0 writes); rank 0 returns its node and the files' sizes and hashes (:func:`checkpoint.seal`).
        With LoRA the folder holds the merged weights (what engines and a resumed run load) and
        ``adapter/`` the adapters alone (peft's format)."""
        weights = get_model_state_dict(self.model, options=FULL_STATE)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=FULL_STATE)
        if self.rank != 0:
            return None
        path = Path(folder)
        if self.lora_scale is not None:
            self.model.save_pretrained(path / "adapter", state_dict=weights, safe_serialization=True)
            base = self.model.get_base_model()
            base.save_pretrained(
                path, state_dict=dict(merged(weights.items(), self.lora_scale)), safe_serialization=True
            )
        else:
            self.model.save_pretrained(path, state_dict=weights, safe_serialization=True)
        load_tokenizer(self.model_path, trust_remote_code=self.cfg.model.trust_remote_code).save_pretrained(path)
        torch.save({"optimizer": optim, "scheduler": self.scheduler.state_dict()}, path / "optimizer.pt")
        return socket.gethostname(), checkpoint.seal(path, path)

    def probe_output_dir(self, path: str) -> str:
        """Write ``path`` on this rank's node (the driver then looks for it); returns the node's name."""
        return checkpoint.probe(path)

    def close(self) -> None:
        """Leave the process group (several ranks)."""
        leave_group(self.world_size)
