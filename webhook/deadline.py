"""Every review answered within its budget, whatever a plugin does.

Reviews run in daemon threads of their own; the request waits for one at most the budget, from
the thread that serves it (`call`) or from the server's event loop (`run`: one hand-off from the
loop to the review's thread and back, no thread in between). A review still running then is an
overrun: the answer follows `failure_mode`, and the thread,
stuck in some plugin, is counted until it comes back. Threads stuck for good would exhaust the
process, so past `max_stuck` the runner calls `on_exhausted` (the server then replaces the
worker: webhook.server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Overrun(TimeoutError):
    """A call did not finish within its budget; `plugin` is the plugin it was in ("" when in none)."""

    def __init__(self, seconds: float, plugin: str) -> None:
        self.seconds = seconds
        self.plugin = plugin
        super().__init__(f"{self.where} did not finish within {seconds:g}s")

    @property
    def where(self) -> str:
        """The plugin, or the review, in words."""
        return where(self.plugin)


def where(plugin: str) -> str:
    return f"plugin {plugin!r}" if plugin else "the review"


class _Call:
    def __init__(self, function: Callable[[], Any], finished: Callable[[], None] | None = None) -> None:
        self.function = function
        self.done = threading.Event()
        self.finished = finished or self.done.set  # called by the thread that ran it
        self.value: Any = None
        self.error: BaseException | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class DeadlineRunner:
    """Runs calls in daemon threads, waiting at most a budget for each (see the module's docstring).

    `locate(frame)` names the plugin a stuck thread is in ("" for none), from its innermost frame.
    `on_exhausted()` is called once when `max_stuck` threads are stuck at the same time.
    """

    def __init__(
        self,
        *,
        max_stuck: int = 4,
        locate: Callable[[Any], str] | None = None,
        on_exhausted: Callable[[], None] | None = None,
    ) -> None:
        self.max_stuck = max_stuck
        self.locate = locate or (lambda frame: "")
        self.on_exhausted = on_exhausted or report_exhausted
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self.stuck = 0
        self._exhausted = False

    def call(self, function: Callable[[], T], budget: float) -> T:
        """`function()`'s result or exception, or Overrun after `budget` seconds."""
        worker = self._worker()
        job = _Call(function)
        worker.give(job)
        if not job.done.wait(budget):
            raise self._overran(worker, budget)
        return job.result()

    async def run(self, function: Callable[[], T], budget: float) -> T:
        """The same, awaited on an event loop: `function()` runs in a review thread, and the loop
        is woken once, when it returns."""
        loop = asyncio.get_running_loop()
        returned = loop.create_future()

        def settle() -> None:
            if not returned.done():
                returned.set_result(None)

        def finished() -> None:
            if not loop.is_closed():  # a call that outlived its loop (a worker's end) settles nothing
                loop.call_soon_threadsafe(settle)

        worker = self._worker()
        job = _Call(function, finished)
        worker.give(job)
        try:
            await asyncio.wait_for(asyncio.shield(returned), budget)
        except TimeoutError:
            raise self._overran(worker, budget) from None
        return job.result()

    def _worker(self) -> _Worker:
        with self._lock:
            return self._idle.pop() if self._idle else _Worker(self)

    def _overran(self, worker: _Worker, budget: float) -> Overrun:
        """Count `worker` stuck (replacing the process past `max_stuck`); the Overrun to raise."""
        plugin = self.locate(sys._current_frames().get(worker.ident or 0))
        with self._lock:
            worker.stuck = True
            self.stuck += 1
            exhausted = self.stuck >= self.max_stuck and not self._exhausted
            self._exhausted = self._exhausted or exhausted
        log.error("%s overran its budget of %gs; %d thread(s) stuck", where(plugin), budget, self.stuck)
        if exhausted:
            self.on_exhausted()
        return Overrun(budget, plugin)

    def _returned(self, worker: _Worker) -> None:
        with self._lock:
            if worker.stuck:
                worker.stuck = False
                self.stuck -= 1
            self._idle.append(worker)


class _Worker(threading.Thread):
    def __init__(self, runner: DeadlineRunner) -> None:
        super().__init__(name="podmutate-review", daemon=True)
        self.runner = runner
        self.stuck = False
        self._job: _Call | None = None
        self._ready = threading.Event()
        self.start()

    def give(self, job: _Call) -> None:
        self._job = job
        self._ready.set()

    def run(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            job, self._job = self._job, None
            assert job is not None  # given before the event is set
            try:
                job.value = job.function()
            except BaseException as error:  # handed to the caller, who decides
                job.error = error
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                job.finished()
            job = None  # the caller holds the result; an idle thread must not keep the last review alive
            self.runner._returned(self)


def report_exhausted() -> None:
    """What a process that cannot replace itself does: say so (the server replaces its workers)."""
    log.error("threads stuck in plugins: restart podmutate (`podmutate serve` replaces such a worker itself)")
