"""Sharding a role's model over its ranks (FSDP2), shared by the learner and the critic.

Weights, gradients and optimizer state stay float32 (master weights). Several ranks compute in
``learner.precision`` through FSDP2's ``MixedPrecisionPolicy`` and reduce gradients in float32.
One rank holds the whole model (FSDP's hooks would only add work) and computes under
``torch.autocast``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from distrl.config import PRECISIONS
from distrl.models.loading import decoder_layers
from distrl.roles.resources import compute_precision

#: Whole (unsharded) state dicts, gathered to rank 0's host memory: what checkpoints hold.
FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(
    model: torch.nn.Module,
    *,
    precision: str,
    device: torch.device,
    rank: int,
    world_size: int,
    address: str | None,
    port: int | None,
) -> tuple[torch.nn.Module, Callable[[], AbstractContextManager]]:
    """Join the role's process group at ``address:port`` (several ranks only) and shard ``model``
    layer by layer; returns the model to train and the context its forward passes run in."""
    if world_size == 1:
        return model, compute_precision(precision, device)
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://{address}:{port}",
        rank=rank,
        world_size=world_size,
    )
    mesh = init_device_mesh(device.type, (world_size,))
    mp = MixedPrecisionPolicy(param_dtype=getattr(torch, PRECISIONS[precision]), reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    return fully_shard(model, mesh=mesh, mp_policy=mp), compute_precision("fp32", device)  # FSDP casts itself


def leave_group(world_size: int) -> None:
    """Leave the role's process group (several ranks)."""
    if world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
