"""The Ray backend: each role member is a Ray actor placed through a placement group, and values
move between roles through the object store; the controller holds only references.

:class:`RoleActor` is the one actor class: a thin shell that builds a plain role object and calls
its methods, resolving object references nested in the arguments (Ray resolves only top-level
ones). The same role code runs with one member on a laptop and 64 on a cluster; only the bundles
change. A dead actor becomes a :class:`~distrl.backends.base.RoleDiedError` naming the role
instead of a hang or a bare Ray traceback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from distrl.backends.base import Backend, Handle, RoleDiedError, RoleGroup, RoleTimeoutError
from distrl.backends.placement import GpuLayout, check_capacity, node_chunks
from distrl.config import RoleResources

#: How long to wait for a placement group's resources before failing with a message.
PLACEMENT_TIMEOUT_S = 120
#: How long a member may take to start (build its role) and tell its node's address.
STARTUP_TIMEOUT_S = 1800.0

_DIED = (RayActorError, ActorDiedError, ActorUnavailableError)


def _resolve(value: Any) -> Any:
    """``value`` with every object reference nested in lists, tuples and dicts replaced by its value."""
    if isinstance(value, ray.ObjectRef):
        return ray.get(value)
    if isinstance(value, list | tuple):
        return type(value)(_resolve(item) for item in value)
    if isinstance(value, dict):
        return {key: _resolve(item) for key, item in value.items()}
    return value


@ray.remote
class RoleActor:
    """One member of a role: ``cls(*args, **kwargs)`` inside a Ray actor. Once built, its logs are
    prefixed with ``name`` (Ray prints an actor's ``repr``), e.g. ``(learner-1 pid=…)``; while the
    role is being built they say ``RoleActor``."""

    def __init__(self, name: str, cls: type, args: tuple, kwargs: dict[str, Any]) -> None:
        self.name = name
        self.role = cls(*args, **kwargs)

    def __repr__(self) -> str:
        return self.name

    def call(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        return getattr(self.role, method)(*_resolve(args), **_resolve(kwargs))

    def node_address(self) -> str:
        return ray.util.get_node_ip_address()


def _actor_state(actor: Any) -> str:
    """ALIVE, DEAD, RESTARTING, PENDING_CREATION… as the cluster's control store (GCS) holds it; an
    actor whose creation the store has not registered yet has no entry and counts as pending."""
    return ray._private.state.state.actor_table(actor._actor_id.hex()).get("State", "PENDING_CREATION")


def _timeout_error(role: str, seconds: float) -> RoleTimeoutError:
    return RoleTimeoutError(
        f"the {role} role did not answer within {seconds:g} s (trainer.role_timeout_s): a call is stuck "
        "(a hung reward function with reward.workers=0, a stuck collective, a stuck engine); raise "
        "trainer.role_timeout_s if the phase is just that slow"
    )


def _wait_placed(group: Any, what: str) -> None:
    ready, _ = ray.wait([group.ready()], timeout=PLACEMENT_TIMEOUT_S)
    if not ready:
        remove_placement_group(group)
        raise RuntimeError(
            f"the cluster cannot place {what} within {PLACEMENT_TIMEOUT_S}s; lower cluster.* or add nodes "
            "(ray status shows what is free)"
        )


class GpuPool:
    """The learners' whole-GPU bundles: one STRICT_PACK placement group per node, bundle ``i`` of
    the pool being bundle ``i - offset`` of its node's group (docs: :mod:`distrl.backends.placement`)."""

    def __init__(self, bundle_cpus: list[float]) -> None:
        per_node = [int(node["Resources"].get("GPU", 0)) for node in ray.nodes() if node["Alive"]]
        self.groups: list[tuple[Any, int]] = []
        start = 0
        for size in node_chunks(len(bundle_cpus), per_node):
            bundles = [{"GPU": 1.0, "CPU": cpus} for cpus in bundle_cpus[start : start + size]]
            group = placement_group(bundles, "STRICT_PACK")
            _wait_placed(group, f"{size} whole-GPU bundle(s) of the learners' pool on one node")
            self.groups.append((group, start))
            start += size

    def strategy(self, bundle: int) -> PlacementGroupSchedulingStrategy:
        group, start = next((g, s) for g, s in reversed(self.groups) if bundle >= s)
        return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=bundle - start)

    def shutdown(self) -> None:
        for group, _ in self.groups:
            remove_placement_group(group)
        self.groups = []


class RayGroup(RoleGroup):
    """``count`` actors of one role in one placement group (bundle i holds member i), or in the
    bundles ``bundles`` of a :class:`GpuPool`."""

    def __init__(
        self,
        role: str,
        cls: type,
        count: int,
        resources: RoleResources,
        *,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        ranked: bool,
        pool: GpuPool | None = None,
        bundles: list[int] | None = None,
    ) -> None:
        self.role = role
        cpus, gpus = resources.cpus, resources.gpus
        self.placement = None
        self.pool, self.bundles = (pool, bundles) if bundles is not None else (None, None)
        if self.pool is None and (cpus or gpus):  # a role that reserves nothing (the batch role) needs none
            bundle = {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}
            self.placement = placement_group([bundle] * count, "PACK")
            _wait_placed(self.placement, f"{count} {role} actor(s) with {cpus} CPU and {gpus} GPU each")

        def build(i: int) -> Any:
            return RoleActor.options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy=self._strategy(i)).remote(
                f"{role}-{i}", cls, tuple(args), {**kwargs, **({"rank": i, "world_size": count} if ranked else {})}
            )

        self.build = build
        self.actors = [build(i) for i in range(count)]

    def _strategy(self, index: int) -> PlacementGroupSchedulingStrategy | str:
        if self.pool is not None:
            return self.pool.strategy(self.bundles[index])
        if self.placement is None:
            return "DEFAULT"
        return PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=index)

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> list[Handle]:
        return [self.call_rank(rank, method, *args, num_returns=num_returns, **kwargs) for rank in range(len(self))]

    def call_rank(self, rank: int, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Handle:
        call = self.actors[rank].call
        if num_returns > 1:
            call = call.options(num_returns=num_returns)
        result = call.remote(method, args, kwargs)
        return tuple(result) if num_returns > 1 else result

    def node_address(self, rank: int) -> str:
        try:  # queued behind the member's construction (a model load, an engine start)
            return ray.get(self.actors[rank].node_address.remote(), timeout=STARTUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as err:
            raise _timeout_error(f"{self.role} (rank {rank}, starting)", STARTUP_TIMEOUT_S) from err

    def dead_ranks(self) -> list[int]:
        """The members Ray's control store lists as dead (a busy member is alive, however long it
        takes to answer)."""
        return [rank for rank, actor in enumerate(self.actors) if _actor_state(actor) == "DEAD"]

    def restart(self, rank: int) -> None:
        ray.kill(self.actors[rank])
        self.actors[rank] = self.build(rank)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        if self.placement is not None:
            remove_placement_group(self.placement)


class RayBackend(Backend):
    """Connects to the cluster of ``RAY_ADDRESS`` (a ``ray job submit`` driver or a user's cluster),
    or starts a fresh local instance with ``num_cpus`` logical CPUs, never a stray cluster left
    running on this machine. A Ray instance that is already initialized is used as it is."""

    name = "ray"

    def __init__(self, num_cpus: int, timeout_s: float | None = None) -> None:
        self.started = False
        self.timeout_s = timeout_s
        self.pool: GpuPool | None = None
        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):
                ray.init()
            else:
                ray.init(address="local", num_cpus=num_cpus)
            self.started = True

    def group(
        self,
        role: str,
        cls: type,
        count: int,
        resources: RoleResources,
        *,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        ranked: bool = True,
        bundles: list[int] | None = None,
    ) -> RayGroup:
        return RayGroup(role, cls, count, resources, args=args, kwargs=kwargs or {}, ranked=ranked,
                        pool=self.pool, bundles=bundles)  # fmt: skip

    def reserve_gpus(self, layout: GpuLayout, bundle_cpus: list[float]) -> None:
        check_capacity(layout, ray.cluster_resources().get("GPU", 0.0))
        if layout.pool:
            self.pool = GpuPool(bundle_cpus)

    def get(self, handles: Handle | list[Handle], role: str, timeout_s: float | None = None) -> Any:
        deadline = timeout_s or self.timeout_s
        try:
            return ray.get(handles, timeout=deadline)
        except ray.exceptions.GetTimeoutError as err:
            raise _timeout_error(role, deadline) from err
        except _DIED as err:
            raise RoleDiedError(f"an actor died while waiting for the {role} role") from err
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, _DIED):
                raise RoleDiedError(f"an actor died while waiting for the {role} role") from err
            raise

    def wait(self, handles: list[Handle]) -> None:
        if handles:
            _, pending = ray.wait(handles, num_returns=len(handles), fetch_local=False, timeout=self.timeout_s)
            if pending:
                raise _timeout_error("rollout", self.timeout_s)

    def shutdown(self) -> None:
        """Release the GPU pool; shut down the local instance this backend started (a cluster it
        joined stays up)."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if self.started:
            ray.shutdown()
            self.started = False
