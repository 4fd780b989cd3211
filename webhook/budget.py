"""What a review may cost: the work bound, and the memory budget of the reviews in flight.

A parsed pod costs far more than its JSON: each object, array, string and number is a Python
object, the plugins work on a copy, the patch and the answer are built beside it. What one
review holds at its peak is bounded by VALUE_COST bytes per JSON value and BYTE_COST per byte
of its body (measured over hostile shapes: bench/memory.py, BENCHMARKS.md). Both are read off
the body before it is parsed — the values are counted from its separators, an upper bound —
so a review's cost is known before anything is built:

- a review over the work bound (a pod the API server could never store, or one that would cost
  more than a worker's whole budget) is answered by `failure_mode` at once, never parsed;
- the reviews a worker runs at the same time cost at most its budget together: a review that
  would take it past waits for others to finish, and is answered by `failure_mode` if its
  deadline comes first.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from dataclasses import dataclass

import ijson

# etcd refuses an object over 1.5 MiB (its default --max-request-bytes): a pod larger than that
# can never be stored, whatever a webhook does. The review around it adds its request fields.
MAX_POD_BYTES = 1536 * 1024
REVIEW_ENVELOPE_BYTES = 16 * 1024
VALUE_COST = 640  # bytes at the peak of a review, per JSON value (at most 563 measured: containers of a name alone)
BYTE_COST = 8  # bytes at the peak of a review, per byte of the body (its copies in the server, strings)
DEFAULT_BUDGET = 24 * 1024 * 1024  # per worker: see docs/serving.md, the memory budget
GIVE_BACK_ABOVE = 4 * 1024 * 1024  # after a review that cost more, the allocator returns what it freed
_SEPARATORS = (b",", b":", b"[", b"{")


def values_in(body: bytes) -> int:
    """An upper bound on the JSON values and member names in `body`: every one but the first
    follows a separator (a `,`, `:`, `[` or `{`; those inside strings only raise the count)."""
    return 1 + sum(body.count(separator) for separator in _SEPARATORS)


def cost_of(body: bytes) -> int:
    """What reviewing `body` may cost at its peak, in bytes."""
    return VALUE_COST * values_in(body) + BYTE_COST * len(body)


def beyond_bound(body: bytes, cost: int, budget: int) -> str | None:
    """Why `body`, of `cost` (`cost_of`), is beyond the work bound, in words for a warning; None
    when it is within it."""
    if len(body) > MAX_POD_BYTES + REVIEW_ENVELOPE_BYTES:
        return f"the review has {len(body)} bytes: a pod over {MAX_POD_BYTES} bytes cannot be stored (etcd's limit)"
    if cost > budget:
        return (
            f"the review has up to {values_in(body)} values in {len(body)} bytes: "
            f"over the work bound of {budget} bytes of memory"
        )
    return None


def uid_of(body: bytes) -> str | None:
    """`request.uid` of an AdmissionReview body, read as a stream (constant memory, and the API
    server sends it first); None when there is none, or the body is not JSON up to it."""
    try:
        uid = next(ijson.items(body, "request.uid"), None)
    except (ijson.JSONError, ijson.IncompleteJSONError, ValueError):
        return None
    return uid if isinstance(uid, str) and uid else None


class Busy(Exception):
    """The budget could not be had before the deadline."""


@dataclass
class MemoryBudget:
    """Bytes of memory the reviews of one process may hold together (see the module's docstring)."""

    total: int = DEFAULT_BUDGET

    def __post_init__(self) -> None:
        self._free = self.total
        self._condition = threading.Condition()

    def take(self, cost: int, timeout: float) -> None:
        """Take `cost` bytes, waiting at most `timeout` seconds for them; raises Busy."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._free < cost:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._condition.wait(remaining):
                    if self._free >= cost:
                        break
                    raise Busy(f"{self.total - self._free} bytes of reviews in flight; this one needs {cost}")
            self._free -= cost

    def give(self, cost: int) -> None:
        with self._condition:
            self._free += cost
            self._condition.notify_all()
        if cost > GIVE_BACK_ABOVE:
            give_memory_back()


def give_memory_back() -> None:
    """Collect cycles and have glibc's allocator return freed memory to the system (malloc_trim)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
