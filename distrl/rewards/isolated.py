"""User reward functions in worker processes, with a deadline per call.

A user function is code distrl does not control: it can hang, call ``sys.exit`` or ``os._exit``,
raise ``KeyboardInterrupt``, print megabytes, or eat memory. :class:`IsolatedScorer` runs it in
``reward.workers`` processes of its own (spawned, so nothing of the reward role's state is
shared), one call at a time per process: each sample for a per-sample function, the whole list for
a batched one. A call that runs past ``reward.timeout_s``, or whose process dies, fails that sample
(scored 0, counted in ``reward/errors``; an overrun also in ``reward/timeouts``), and the process
is killed and replaced. What the functions print is kept up to :data:`OUTPUT_CAP` bytes a batch and
logged once. ``reward.memory_mb`` caps each process's address space.

This protects the run from the function; it is not a sandbox for model-written code (the process
can still read and write whatever the user running distrl can).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from distrl.rewards.base import ResultBuilder, Sample, ScoreResult
from distrl.rewards.user import call_kwargs, load_user_function, record_batch, run_coroutine, sample_kwargs

#: Bytes of the functions' printed output kept per batch (the rest is counted and dropped).
OUTPUT_CAP = 8192
#: Characters of a failure's traceback kept for the log.
TRACEBACK_CAP = 4000


def _cap(text: str, limit: int = TRACEBACK_CAP) -> str:
    return (
        text
        if len(text) <= limit
        else f"{text[: limit // 2]}\n… ({len(text) - limit} characters cut) …\n{text[-limit // 2 :]}"
    )


def _worker_main(conn: Connection, output: Connection, spec: str, memory_mb: int | None) -> None:
    """A worker process: its stdout and stderr into ``output``; load the function, then answer
    calls until the pipe closes."""
    os.dup2(output.fileno(), 1)
    os.dup2(output.fileno(), 2)
    if memory_mb:
        import resource

        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fn = load_user_function(spec)
    while True:
        try:
            kwargs = conn.recv()
        except EOFError:
            return
        try:
            value = fn(**kwargs)
            if hasattr(value, "__await__"):
                value = run_coroutine(value)
            conn.send(("ok", value))
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: they fail the sample, not the worker
            conn.send(("error", _cap("".join(traceback.format_exception(exc)).rstrip())))
        sys.stdout.flush()
        sys.stderr.flush()


@dataclass(frozen=True)
class Isolation:
    """How user reward functions run: ``workers`` processes (0: in the reward role's own process),
    ``timeout_s`` per call, ``memory_mb`` address space per process (None: no cap)."""

    workers: int
    timeout_s: float
    memory_mb: int | None = None


@dataclass
class _Worker:
    process: Any
    conn: Connection
    started: float = 0.0
    index: int | None = None
    """The call it is running: a sample index, or -1 for a batched call; None when idle."""


@dataclass
class _Output:
    """Printed output of the workers, kept up to :data:`OUTPUT_CAP` bytes per batch."""

    kept: bytearray = field(default_factory=bytearray)
    total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, chunk: bytes) -> None:
        with self.lock:
            self.total += len(chunk)
            room = OUTPUT_CAP - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def take(self) -> str | None:
        with self.lock:
            if not self.total:
                return None
            text = self.kept.decode(errors="replace")
            note = f" (first {len(self.kept)} of {self.total} bytes)" if self.total > len(self.kept) else ""
            self.kept, self.total = bytearray(), 0
            return f"reward function output{note}:\n{text}"


class IsolatedScorer:
    """Scores with the user function ``spec`` in ``workers`` processes (see the module docstring)."""

    def __init__(
        self, spec: str, *, batched: bool, workers: int, timeout_s: float, memory_mb: int | None, style: str = "verl"
    ) -> None:
        self.spec, self.batched, self.timeout_s, self.memory_mb = spec, batched or style == "trl", timeout_s, memory_mb
        self.style = style
        self.context = multiprocessing.get_context("spawn")
        self.output = _Output()
        self.workers = [self._start() for _ in range(workers)]
        self.restarts = 0

    def _drain(self, output: Connection) -> None:
        """Collect a worker's printed output until it exits."""
        try:
            while chunk := os.read(output.fileno(), 65536):
                self.output.add(chunk)
        finally:
            output.close()

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        out_read, out_write = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main, args=(child, out_write, self.spec, self.memory_mb), daemon=True
        )
        process.start()
        child.close()
        out_write.close()
        threading.Thread(target=self._drain, args=(out_read,), daemon=True).start()
        return _Worker(process, parent)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()
        self.restarts += 1
        return self._start()

    def score(self, samples: list[Sample]) -> ScoreResult:
        """Scores in order; every sample gets an answer within about ``timeout_s`` of its call starting."""
        builder = ResultBuilder(samples)
        if self.batched:
            calls = [(-1, call_kwargs(samples, self.style))] if samples else []
        else:
            calls = [(i, sample_kwargs(s)) for i, s in enumerate(samples)]
        timeouts = self._run(calls, builder, len(samples))
        result = builder.result()
        result.timeouts = timeouts
        result.output = self.output.take()
        return result

    def _run(self, calls: list[tuple[int, dict]], builder: ResultBuilder, count: int) -> int:
        pending, timeouts = list(reversed(calls)), 0
        while pending or any(w.index is not None for w in self.workers):
            for w in self.workers:
                if w.index is None and pending:
                    w.index, kwargs = pending.pop()
                    w.started = time.monotonic()
                    w.conn.send(kwargs)
            busy = [w for w in self.workers if w.index is not None]
            deadline = min(w.started for w in busy) + self.timeout_s
            ready = wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
            for slot, w in enumerate(self.workers):
                if w.index is None:
                    continue
                if w.conn in ready:
                    self._answer(w, builder, count)
                elif time.monotonic() - w.started >= self.timeout_s:
                    self._fail(w.index, builder, f"timed out after {self.timeout_s:g} s (reward.timeout_s)")
                    timeouts += 1
                    self.workers[slot] = self._replace(w)
        return timeouts

    def _answer(self, w: _Worker, builder: ResultBuilder, count: int) -> None:
        index, w.index = w.index, None
        try:
            status, value = w.conn.recv()
        except (EOFError, OSError):
            code = w.process.exitcode if not w.process.is_alive() else None
            self._fail(index, builder, f"the reward worker process died (exit code {code}) during the call")
            self.workers[self.workers.index(w)] = self._replace(w)
            return
        if status == "error":
            self._fail(index, builder, value)
        elif index == -1:
            record_batch(value, builder, count, self.style)
        else:
            builder.record(index, value)

    @staticmethod
    def _fail(index: int, builder: ResultBuilder, message: str) -> None:
        if index == -1:
            builder.fail_all(f"the batched reward function failed: {message}")
        else:
            builder.fail(index, message)

    def close(self) -> None:
        """Stop the worker processes."""
        for w in self.workers:
            w.process.kill()
            w.conn.close()
        self.workers = []
