"""Reference role: the frozen initial policy, for the KL term's reference log-probs."""

from __future__ import annotations

import torch

from distrl.config import Config
from distrl.data.batch import TrajectoryBatch
from distrl.models.flat import FlatWeights
from distrl.models.forward import response_logprobs, stack_rows
from distrl.models.loading import load_policy
from distrl.roles.resources import actor_device, sharing_cores
from distrl.roles.timing import BusyClock, busy


class Reference(BusyClock):
    """One reference member; a group of N splits each batch into N shards by rank."""

    def __init__(self, model_path: str, cfg: Config, *, rank: int = 0, world_size: int = 1) -> None:
        self.device = actor_device(cfg.cluster.reference, "reference")
        self.model = (
            load_policy(model_path, cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
            .to(self.device)
            .eval()
        )
        self.cfg, self.rank, self.world_size = cfg, rank, world_size

    @torch.no_grad()
    @busy("reference")
    def logprobs(self, batch: TrajectoryBatch, share: int = 1) -> torch.Tensor:
        """Reference log-probs ``[shard, T]`` of this rank's shard; ``share``: roles computing at the
        same time (see :func:`sharing_cores`)."""
        shard = batch.shard(self.rank, self.world_size)
        temperature = self.cfg.rollout.temperature
        with sharing_cores(self.cfg.cluster.reference, share):
            return stack_rows(
                shard.micro_batches(self.cfg.learner.micro_batch_tokens),
                lambda micro: response_logprobs(self.model, micro, temperature=temperature)[0],
                shard.response_ids.shape[1],
            )

    def state_dict(self, dtype: str) -> FlatWeights:
        """The reference weights in ``dtype`` (PVPO samples from the reference policy with them)."""
        return FlatWeights.from_tensors(self.model.state_dict(), getattr(torch, dtype))
