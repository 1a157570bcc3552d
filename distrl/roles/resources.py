"""How a role uses its CPU cores, which torch device it computes on (from its :class:`RoleResources`),
and in which precision a role that trains computes.

Called inside the process that hosts a role: a Ray actor, or the driver with the inline backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from distrl.config import PRECISIONS, RoleResources

#: torch's own thread setter, kept before a vLLM CPU engine in this process replaces
#: ``torch.set_num_threads`` with a no-op that warns (vllm/v1/worker/cpu_worker.py): with the inline
#: backend the learner, reference and critic share the driver's process with the engine.
set_num_threads = torch.set_num_threads


def use_cores(resources: RoleResources, role: str, share: int = 1) -> int:
    """Inside an actor: pin this process to ``resources.cores`` (when set) and set torch's thread
    count (see :class:`RoleResources`; with ``threads=0`` the cores are split among ``share``
    actors of the role that run at once); returns the thread count. Call it before an engine
    starts its thread pools."""
    if resources.cores:
        available = sorted(os.sched_getaffinity(0))
        missing = sorted(set(resources.cores) - set(available))
        if missing:
            raise ValueError(
                f"cluster.{role}.cores={resources.cores} names core(s) {missing} this node does not offer "
                f"(cores available: {available}); pick ids from that list or set cluster.{role}.cores=null"
            )
        os.sched_setaffinity(0, resources.cores)
    if resources.threads:
        threads = resources.threads
    elif resources.threads == 0:
        threads = max(1, len(os.sched_getaffinity(0)) // share)
    else:
        threads = len(resources.cores) if resources.cores else max(1, math.ceil(resources.cpus))
    set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


@contextmanager
def sharing_cores(resources: RoleResources, share: int) -> Iterator[None]:
    """Inside an actor whose role uses every core (``threads=0``, not pinned): while the block runs,
    use 1/``share`` of its threads, because ``share`` roles compute at the same time (the log-prob
    stage: old log-probs ∥ reference ∥ values). Splitting the cores beats oversubscribing them."""
    on_gpu = resources.gpus > 0 and torch.cuda.is_available()
    if resources.threads != 0 or resources.cores or share <= 1 or on_gpu:
        yield
        return
    threads = torch.get_num_threads()
    set_num_threads(max(1, threads // share))
    try:
        yield
    finally:
        set_num_threads(threads)


def actor_device(resources: RoleResources, role: str, share: int = 1) -> torch.device:
    """Inside an actor: its torch device (CUDA when the role has GPUs and one is visible); on CPU,
    the cores and threads of :func:`use_cores`."""
    if resources.gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    use_cores(resources, role, share)
    return torch.device("cpu")


def compute_precision(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A context factory for the forward passes of a role that trains: ``torch.autocast`` to bf16
    for ``precision="bf16"`` (float32 weights, bf16 matmuls), nothing for ``fp32``."""
    dtype = getattr(torch, PRECISIONS[precision])
    if dtype == torch.float32:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
