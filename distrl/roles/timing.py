"""Seconds a role spends computing, by phase, measured inside the role.

The controller's own clock sees a phase from the call to the result, which includes scheduling,
object transfers and (de)serialization. Comparing it with the time the actors were busy tells
compute from orchestration: ``timing/overhead_s`` = step wall time − Σ over the step's stages of
the busiest actor's compute (docs/architecture.md, "Timing").
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def busy(phase: str) -> Callable[[F], F]:
    """Decorate a role method of a :class:`BusyClock` subclass: its run time adds to ``phase``."""

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
    """Mixin for role classes: accumulates seconds per phase until the controller takes them."""

    _busy: dict[str, float]

    def add_busy(self, phase: str, seconds: float) -> None:
        if not hasattr(self, "_busy"):
            self._busy = {}
        self._busy[phase] = self._busy.get(phase, 0.0) + seconds

    def take_busy(self) -> dict[str, float]:
        """The seconds per phase since the last call (and reset them)."""
        taken, self._busy = getattr(self, "_busy", {}), {}
        return taken


@contextmanager
def timed(timings: dict[str, float], name: str, accumulate: bool = False) -> Iterator[None]:
    """Wall-clock seconds of the block into ``timings[name]`` (added to it when ``accumulate``)."""
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    timings[name] = timings.get(name, 0.0) + elapsed if accumulate else elapsed
