"""The interface between the controller and wherever the roles run (docs/architecture.md, "Backends").

A backend places ``count`` instances of a role class (a plain Python class from
:mod:`distrl.roles`) and calls their methods. A call returns *handles*: a Ray object reference
with the ``ray`` backend, the value itself with ``inline``. Handles can be passed as arguments to
other calls, also nested in lists and tuples; the role method always receives the values. The
controller only ever uses :class:`RoleGroup` and :class:`Backend`, never Ray.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from distrl.backends.placement import GpuLayout
from distrl.config import RoleResources

#: A backend's reference to a value: ``ray.ObjectRef`` (ray) or the value itself (inline).
Handle = Any


class RoleDiedError(RuntimeError):
    """A member of a role died; the message names the role."""


class RoleTimeoutError(RuntimeError):
    """A role did not answer within the backend's deadline (``trainer.role_timeout_s``); the
    message names the role and the deadline."""


class RoleGroup(ABC):
    """The ``count`` members of one role. Member i of a ranked role was built with ``rank=i,
    world_size=count``."""

    role: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def call(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> list[Handle]:
        """Call ``method`` on every member with the same arguments; one handle per member (a tuple of
        ``num_returns`` handles when the method returns that many values)."""

    @abstractmethod
    def call_rank(self, rank: int, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Handle:
        """Call ``method`` on member ``rank`` only."""

    @abstractmethod
    def node_address(self, rank: int) -> str:
        """The IP address of the node member ``rank`` runs on (for a process-group rendezvous)."""

    @abstractmethod
    def dead_ranks(self) -> list[int]:
        """Ranks of the members that no longer answer."""

    @abstractmethod
    def restart(self, rank: int) -> None:
        """Replace member ``rank`` (a dead one) by a new member built from the same arguments in the
        same place; its calls then go to the new member."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every member and release what it reserved."""


class Backend(ABC):
    """Places role groups and moves values between them (``cluster.backend``)."""

    name: str

    @abstractmethod
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
    ) -> RoleGroup:
        """Start ``count`` members of ``cls(*args, **kwargs)`` (plus ``rank``/``world_size`` when
        ``ranked``); with ``bundles``, member i in bundle ``bundles[i]`` of the GPU pool."""

    @abstractmethod
    def reserve_gpus(self, layout: GpuLayout, bundle_cpus: list[float]) -> None:
        """Check the cluster holds ``layout`` and reserve its GPU pool (nothing to do in one process)."""

    @abstractmethod
    def get(self, handles: Handle | list[Handle], role: str, timeout_s: float | None = None) -> Any:
        """The values of ``handles``; :class:`RoleDiedError` naming ``role`` if a member died meanwhile,
        :class:`RoleTimeoutError` past ``timeout_s`` (default: the backend's deadline)."""

    @abstractmethod
    def wait(self, handles: list[Handle]) -> None:
        """Block until every handle's value is computed, without fetching it to the controller."""

    @abstractmethod
    def shutdown(self) -> None:
        """Release what the backend itself started (not the role groups: shut those down first)."""
