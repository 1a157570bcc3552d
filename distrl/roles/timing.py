"""Seconds a role spends computing, and its peak GPU memory, by phase, measured inside the role.

The controller's own clock sees a phase from the call to the result, which includes scheduling,
object transfers and (de)serialization. Comparing it with the time the actors were busy tells
compute from orchestration: ``timing/overhead_s`` = step wall time − Σ over the step's stages of
the busiest actor's compute (docs/architecture.md, "Timing").

On a GPU each phase also records the peak memory torch allocated on the device while it ran
(``torch.cuda.max_memory_allocated``, reset at the phase's start): what the role needs at most, with
everything else resident in the process at the time (with the inline backend, every role's weights).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def _gpu_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def busy(phase: str) -> Callable[[F], F]:
    """Decorate a role method of a :class:`BusyClock` subclass: its run time adds to ``phase`` (and
    on a GPU its peak memory counts toward the phase's)."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def timed(self: BusyClock, *args: Any, **kwargs: Any) -> Any:
            if _gpu_in_use():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                self.add_busy(phase, time.perf_counter() - start)
                if _gpu_in_use():  # also when this call was the first to use the GPU
                    self.add_peak_memory(phase, torch.cuda.max_memory_allocated() / 2**30)

        return timed  # type: ignore[return-value]

    return wrap


class BusyClock:
    """Mixin for role classes: accumulates seconds (and GPU memory peaks) per phase until the
    controller takes them."""

    _busy: dict[str, float]
    _peak_gib: dict[str, float]

    def add_busy(self, phase: str, seconds: float) -> None:
        if not hasattr(self, "_busy"):
            self._busy = {}
        self._busy[phase] = self._busy.get(phase, 0.0) + seconds

    def add_peak_memory(self, phase: str, gib: float) -> None:
        if not hasattr(self, "_peak_gib"):
            self._peak_gib = {}
        self._peak_gib[phase] = max(self._peak_gib.get(phase, 0.0), gib)

    def take_busy(self) -> dict[str, dict[str, float]]:
        """Since the last call (and reset): ``{"seconds": {phase: s}, "peak_gib": {phase: GiB}}``,
        the second empty off the GPU."""
        taken = {"seconds": getattr(self, "_busy", {}), "peak_gib": getattr(self, "_peak_gib", {})}
        self._busy, self._peak_gib = {}, {}
        return taken


@contextmanager
def timed(timings: dict[str, float], name: str, accumulate: bool = False) -> Iterator[None]:
    """Wall-clock seconds of the block into ``timings[name]`` (added to it when ``accumulate``)."""
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    timings[name] = timings.get(name, 0.0) + elapsed if accumulate else elapsed
