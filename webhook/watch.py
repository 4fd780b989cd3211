"""One way to follow files on disk: a value loaded from them, loaded again when they change.

Used for the configuration file and for the serving certificate pair. A new version that
fails to load is refused with one logged line and the last good value stays in force; it is
tried again when the files change once more.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge

from webhook.errors import clipped
from webhook.metrics import FAILURE, SUCCESS

log = logging.getLogger(__name__)

T = TypeVar("T")
Stamp = tuple[tuple[int, int, int], ...] | None


def file_stamp(paths: Sequence[str]) -> Stamp:
    """What tells a change of the files: modification time, size and inode of each; None if one is missing."""
    stamps = []
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:
            return None
        stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
    return tuple(stamps)


class FileWatcher(Generic[T]):
    """Holds `value`, loaded from `paths`; `check()` loads it again when the files changed.

    `load()` raises one of `refused` for a version that must not take effect (whatever else it
    raises refuses it too, logged with its type). `started_ok` is false when `value` is not what
    the files hold now (they were refused), and `last_ok` starts at 0 then. `on_change`
    callbacks run with each new value, under the watcher's lock. Each change taken or refused
    counts in `reloads` (a counter labelled by result), and `last_ok` says whether the last one
    was taken. With `check_on_read`,
    `current()` checks at most once per `interval` itself; else only `check()` and the
    thread of `watch()` do, and reading the value never touches the disk.
    """

    def __init__(
        self,
        paths: Sequence[str],
        load: Callable[[], T],
        value: T,
        *,
        what: str,
        refused: tuple[type[BaseException], ...],
        interval: float = 1.0,
        check_on_read: bool = False,
        on_change: Sequence[Callable[[T], None]] = (),
        reloads: Counter | None = None,
        last_ok: Gauge | None = None,
        started_ok: bool = True,
    ) -> None:
        self.paths = tuple(paths)
        self.what = what
        self.interval = interval
        self._load = load
        self._refused = refused
        self._check_on_read = check_on_read
        self._on_change = list(on_change)
        self._reloads = reloads
        self._last_ok = last_ok
        if last_ok is not None:
            last_ok.set(1 if started_ok else 0)
        self._value = value
        self._lock = threading.Lock()
        self._stamp = file_stamp(self.paths)
        self._checked_at = time.monotonic()
        self._thread: threading.Thread | None = None

    def current(self) -> T:
        """The value in force."""
        if self._check_on_read and time.monotonic() - self._checked_at >= self.interval:
            self.check()
        return self._value

    def check(self) -> bool:
        """Load again now if the files changed; True when a new value took effect."""
        with self._lock:
            self._checked_at = time.monotonic()
            stamp = file_stamp(self.paths)
            if stamp is None or stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                value = self._load()
            except BaseException as error:  # whatever loading raises refuses that version, never the watcher
                problem = str(error) if isinstance(error, self._refused) else f"{type(error).__name__}: {error}"
                log.error("%s refused, keeping the last good one: %s", self.what, clipped(problem))
                self._count(taken=False)
                return False
            self._value = value
            for callback in self._on_change:
                callback(value)
            log.info("%s reloaded", self.what)
            self._count(taken=True)
            return True

    def _count(self, *, taken: bool) -> None:
        if self._reloads is not None:
            self._reloads.labels(SUCCESS if taken else FAILURE).inc()
        if self._last_ok is not None:
            self._last_ok.set(1 if taken else 0)

    def watch(self, name: str = "podmutate-watch") -> None:
        """Check once per interval from a daemon thread, so a change is seen without traffic.

        The thread cannot stop: whatever a check raises is logged and the next check follows.
        `alive()` tells whether it still checks (for liveness)."""

        def loop() -> None:
            while True:
                time.sleep(self.interval)
                try:
                    self.check()
                except BaseException as error:  # check() refuses what loading raises; this is the rest
                    log.error("%s: checking failed: %s", self.what, clipped(f"{type(error).__name__}: {error}"))

        self._thread = threading.Thread(target=loop, name=name, daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """False when `watch()` was called and its thread has ended (or has not checked for ten intervals)."""
        if self._thread is None:
            return True
        return self._thread.is_alive() and time.monotonic() - self._checked_at < max(10 * self.interval, 10.0)
