"""The inline backend: every role is an object in the driver's process, every call runs at once.

A handle is the value itself, so a step runs top to bottom in one process: ``breakpoint()`` in any
role method stops in the user's terminal, and a traceback points into the role's code. Roles run
one after another (no concurrency between roles, hence no async mode), one member per role.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from distrl.backends.base import Backend, Handle, RoleGroup
from distrl.backends.placement import GpuLayout
from distrl.config import RoleResources


class InlineGroup(RoleGroup):
    """The members of one role, as plain objects."""

    def __init__(self, role: str, build: Callable[[int], Any], count: int) -> None:
        self.role = role
        self.build = build
        self.members = [build(i) for i in range(count)]

    def __len__(self) -> int:
        return len(self.members)

    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> list[Handle]:
        return [self.call_rank(rank, method, *args, num_returns=num_returns, **kwargs) for rank in range(len(self))]

    def call_rank(self, rank: int, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Handle:
        result = getattr(self.members[rank], method)(*args, **kwargs)
        if num_returns > 1 and len(result) != num_returns:
            raise TypeError(f"{self.role}.{method} returned {len(result)} values, expected {num_returns}")
        return result

    def node_address(self, rank: int) -> str:
        return "127.0.0.1"

    def dead_ranks(self) -> list[int]:
        return []

    def restart(self, rank: int) -> None:
        self.members[rank] = self.build(rank)

    def shutdown(self) -> None:
        for member in self.members:
            close = getattr(member, "close", None)
            if close is not None:
                close()
        self.members = []


class InlineBackend(Backend):
    """Roles constructed in this process; nothing is started, nothing is serialized."""

    name = "inline"

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
    ) -> InlineGroup:
        rank_args = (lambda i: {"rank": i, "world_size": count}) if ranked else (lambda i: {})
        return InlineGroup(role, lambda i: cls(*args, **(kwargs or {}), **rank_args(i)), count)

    def reserve_gpus(self, layout: GpuLayout, bundle_cpus: list[float]) -> None:
        return None

    def get(self, handles: Handle | list[Handle], role: str, timeout_s: float | None = None) -> Any:
        return handles

    def wait(self, handles: list[Handle]) -> None:
        return None

    def shutdown(self) -> None:
        return None
