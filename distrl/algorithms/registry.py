"""A name -> function registry, so that the algorithm is configuration.

Every component that a config key selects (advantage estimator, policy loss, KL estimator, loss
aggregation, rollout correction) lives in one :class:`Registry`. Looking up a name that is not
registered raises :class:`UnknownNameError`, whose message lists the valid names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class UnknownNameError(KeyError):
    """A config name that no registry entry answers to; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[F]):
    """Maps config names to functions of one kind (``kind`` names that kind in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, *names: str) -> Callable[[F], F]:
        """Decorator: register the function under each of ``names``."""

        def add(fn: F) -> F:
            for name in names:
                if name in self._entries:
                    raise ValueError(f"{self.kind} '{name}' is registered twice")
                self._entries[name] = fn
            return fn

        return add

    def get(self, name: str) -> F:
        """The function registered as ``name``; :class:`UnknownNameError` if there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} '{name}'; valid names: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
