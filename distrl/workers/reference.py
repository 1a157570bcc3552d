"""Reference role: the frozen initial policy, for the KL term's reference log-probs."""

from __future__ import annotations

import ray
import torch

from distrl.config import Config
from distrl.data.batch import TrajectoryBatch
from distrl.models.forward import response_logprobs, stack_rows
from distrl.models.loading import load_policy
from distrl.workers.group import actor_device


@ray.remote
class Reference:
    """One reference actor; a group of N splits each batch into N shards by rank."""

    def __init__(self, model_path: str, cfg: Config, *, rank: int = 0, world_size: int = 1) -> None:
        self.device = actor_device(cfg.cluster.reference)
        self.model = load_policy(model_path, cfg.model.dtype).to(self.device).eval()
        self.cfg, self.rank, self.world_size = cfg, rank, world_size

    @torch.no_grad()
    def logprobs(self, batch: TrajectoryBatch) -> torch.Tensor:
        """Reference log-probs ``[shard, T]`` of this rank's shard."""
        shard = batch.shard(self.rank, self.world_size)
        temperature = self.cfg.rollout.temperature
        return stack_rows(
            shard.micro_batches(self.cfg.learner.micro_batch_tokens),
            lambda micro: response_logprobs(self.model, micro, temperature=temperature)[0],
            shard.response_ids.shape[1],
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The reference weights (PVPO samples from the reference policy with them)."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
