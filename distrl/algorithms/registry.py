"""A name -> function registry, so that the algorithm is configuration.

Every component that a config key selects (advantage estimator, policy loss, KL estimator, loss
aggregation, rollout correction) lives in one :class:`Registry`. Looking up a name that is not
registered raises :class:`UnknownNameError`, whose message lists the valid names.

An entry also says what it needs, so that the runtime asks instead of testing names:
``needs`` names the inputs it uses beyond the common ones (see :data:`INPUTS`), ``reads`` the
``algorithm.*`` config fields passed to it as keyword arguments of the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)

#: Inputs an entry can declare in ``needs``, and who provides them.
INPUTS = {
    "group_ids": "which samples share a prompt (rollout)",
    "values": "V(x, y_<t) per response token (critic)",
    "prompt_values": "each prompt's mean reward under the reference policy, estimated before training (PVPO)",
    "rollout_logprobs": "the engine's log-probs of the sampled tokens (rollout)",
    "generator": "a seeded torch.Generator for random token selection (learner)",
}


@dataclass(frozen=True)
class Entry(Generic[F]):
    """A registered function with the inputs it needs and the config fields it reads."""

    fn: F
    needs: frozenset[str]
    reads: tuple[str, ...]


class UnknownNameError(KeyError):
    """A config name that no registry entry answers to; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[F]):
    """Maps config names to functions of one kind (``kind`` names that kind in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[F]] = {}

    def register(self, *names: str, needs: tuple[str, ...] = (), reads: tuple[str, ...] = ()) -> Callable[[F], F]:
        """Decorator: register the function under each of ``names``, needing the inputs ``needs``
        (keys of :data:`INPUTS`) and reading the config fields ``reads``."""
        unknown = set(needs) - INPUTS.keys()
        if unknown:
            raise ValueError(f"{self.kind} {names}: unknown inputs {sorted(unknown)}; known: {sorted(INPUTS)}")

        def add(fn: F) -> F:
            for name in names:
                if name in self._entries:
                    raise ValueError(f"{self.kind} '{name}' is registered twice")
                self._entries[name] = Entry(fn, frozenset(needs), tuple(reads))
            return fn

        return add

    def entry(self, name: str) -> Entry[F]:
        """The entry registered as ``name``; :class:`UnknownNameError` if there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} '{name}'; valid names: {', '.join(self.names())}") from None

    def get(self, name: str) -> F:
        """The function registered as ``name``; :class:`UnknownNameError` if there is none."""
        return self.entry(name).fn

    def needs(self, name: str) -> frozenset[str]:
        """The inputs the entry ``name`` declares (see :data:`INPUTS`)."""
        return self.entry(name).needs

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
