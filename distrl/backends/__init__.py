"""Backends (``cluster.backend``): where the roles run and how values move between them.

``ray`` (default): role groups of Ray actors in placement groups, values through the object
store. ``inline``: every role an object in the driver's process, for debugging and for machines
without Ray. Both implement :class:`~distrl.backends.base.Backend`; Ray is imported only by
:mod:`distrl.backends.ray_backend`.
"""

from __future__ import annotations

from distrl.backends.base import Backend, Handle, RoleDiedError, RoleGroup, RoleTimeoutError

BACKENDS = ("ray", "inline")


def make_backend(name: str, *, num_cpus: int, timeout_s: float | None = None) -> Backend:
    """The backend called ``name``; ``num_cpus`` sizes a local Ray instance when one is started;
    ``timeout_s`` bounds every wait for a role (Ray only: inline calls run in this thread)."""
    if name == "inline":
        from distrl.backends.inline import InlineBackend

        return InlineBackend()
    if name == "ray":
        from distrl.backends.ray_backend import RayBackend

        return RayBackend(num_cpus, timeout_s)
    raise ValueError(f"cluster.backend={name!r} is not one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Handle", "RoleDiedError", "RoleGroup", "RoleTimeoutError", "make_backend"]
