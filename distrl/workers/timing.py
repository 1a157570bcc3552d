"""Seconds an actor spends computing, by phase, measured inside the actor.

The controller's own clock sees a phase from the call to the result, which includes scheduling,
object transfers and (de)serialization. Comparing it with the time the actors were busy tells
compute from orchestration: ``timing/overhead_s`` = step wall time − Σ over the step's stages of
the busiest actor's compute (design.md, "Metrics").
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def busy(phase: str) -> Callable[[F], F]:
    """Decorate an actor method of a :class:`BusyClock` subclass: its run time adds to ``phase``."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def timed(self: BusyClock, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                self.add_busy(phase, time.perf_counter() - start)

        return timed  # type: ignore[return-value]

    return wrap


class BusyClock:
    """Mixin for actor classes: accumulates seconds per phase until the controller takes them."""

    _busy: dict[str, float]

    def add_busy(self, phase: str, seconds: float) -> None:
        if not hasattr(self, "_busy"):
            self._busy = {}
        self._busy[phase] = self._busy.get(phase, 0.0) + seconds

    def take_busy(self) -> dict[str, float]:
        """The seconds per phase since the last call (and reset them)."""
        taken, self._busy = getattr(self, "_busy", {}), {}
        return taken
