"""Actor groups: N actors of one role placed through a Ray placement group.

The same role code runs with N = 1 on a laptop and N = 64 on a cluster; only the bundles change.
Results are fetched with :meth:`ActorGroup.get`, which turns a dead actor into a
:class:`RoleDiedError` naming the role instead of a hang or a bare Ray traceback.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from distrl.config import RoleResources

#: How long to wait for a placement group's resources before failing with a message.
PLACEMENT_TIMEOUT_S = 120


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
    torch.set_num_threads(threads)
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
    torch.set_num_threads(max(1, threads // share))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def actor_device(resources: RoleResources, role: str, share: int = 1) -> torch.device:
    """Inside an actor: its torch device (CUDA when the role has GPUs and one is visible); on CPU,
    the cores and threads of :func:`use_cores`."""
    if resources.gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    use_cores(resources, role, share)
    return torch.device("cpu")


class RoleDiedError(RuntimeError):
    """An actor of a role died; the message names the role."""


class ActorGroup:
    """``count`` actors of ``actor_cls``; actor i is constructed with ``rank=i, world_size=count``
    when ``ranked`` (the role shards batches by rank)."""

    def __init__(
        self,
        role: str,
        actor_cls: Any,
        count: int,
        resources: RoleResources,
        *,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        ranked: bool = True,
        strategy: str = "PACK",
    ) -> None:
        self.role = role
        cpus, gpus = resources.cpus, resources.gpus
        self.placement = None
        if cpus or gpus:  # a role that reserves nothing (the batch role) needs no placement group
            bundle = {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}
            self.placement = placement_group([bundle] * count, strategy)
            ready, _ = ray.wait([self.placement.ready()], timeout=PLACEMENT_TIMEOUT_S)
            if not ready:
                remove_placement_group(self.placement)
                raise RuntimeError(
                    f"the cluster cannot place {count} {role} actor(s) with {cpus} CPU and {gpus} GPU each within "
                    f"{PLACEMENT_TIMEOUT_S}s; lower cluster.* or add nodes (ray status shows what is free)"
                )
        self.actors = [
            actor_cls.options(
                num_cpus=cpus,
                num_gpus=gpus,
                scheduling_strategy=self._strategy(i),
            ).remote(*args, **(kwargs or {}), **({"rank": i, "world_size": count} if ranked else {}))
            for i in range(count)
        ]

    def _strategy(self, index: int) -> PlacementGroupSchedulingStrategy | str:
        if self.placement is None:
            return "DEFAULT"
        return PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=index)

    def __len__(self) -> int:
        return len(self.actors)

    def call_all(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        """Call ``method`` on every actor with the same arguments; returns the refs."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def scatter(self, method: str, per_actor: Sequence[Sequence[Any]], **kwargs: Any) -> list[ray.ObjectRef]:
        """Call ``method`` on actor i with the positional arguments ``per_actor[i]``."""
        return [getattr(a, method).remote(*args, **kwargs) for a, args in zip(self.actors, per_actor, strict=True)]

    def get(self, refs: ray.ObjectRef | list[ray.ObjectRef]) -> Any:
        """``ray.get`` that raises :class:`RoleDiedError` when an actor (of any role) has died."""
        try:
            return ray.get(refs)
        except (RayActorError, ActorDiedError, ActorUnavailableError) as err:
            raise RoleDiedError(f"an actor died while waiting for the {self.role} role") from err
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, RayActorError | ActorDiedError | ActorUnavailableError):
                raise RoleDiedError(f"an actor died while waiting for the {self.role} role") from err
            raise

    def dead_ranks(self, timeout_s: float = 10.0) -> list[int]:
        """Ranks of this group's actors that no longer answer."""
        dead = []
        for rank, actor in enumerate(self.actors):
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=timeout_s)
            except (RayActorError, ActorDiedError, ActorUnavailableError, ray.exceptions.GetTimeoutError):
                dead.append(rank)
        return dead

    def shutdown(self) -> None:
        """Kill the actors and release their placement group."""
        for actor in self.actors:
            ray.kill(actor)
        if self.placement is not None:
            remove_placement_group(self.placement)
