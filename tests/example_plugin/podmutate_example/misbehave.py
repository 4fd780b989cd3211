"""Misbehaves, as the annotation example.com/misbehave says, while mutating a pod: to test that no
plugin can end or freeze a worker."""

import sys

from webhook import hookimpl

_kept = []  # what the "leak" misbehaviour never lets go of


class Escape(BaseException):
    """Neither an Exception nor one of Python's own: what a careless plugin might define."""


RAISED = {
    "exit": lambda: sys.exit(3),
    "interrupt": lambda: (_ for _ in ()).throw(KeyboardInterrupt()),
    "generator-exit": lambda: (_ for _ in ()).throw(GeneratorExit()),
    "escape": lambda: (_ for _ in ()).throw(Escape("out of here")),
}


@hookimpl
def mutate_pod(pod):
    how = (pod["metadata"].get("annotations") or {}).get("example.com/misbehave")
    if how in RAISED:
        RAISED[how]()
    elif how == "freeze":
        sum(range(10**15))  # holds the GIL in C: the worker's event loop stops with it
    elif how == "leak":
        _kept.append(b"x" * (4 * 1024 * 1024))  # 4 MiB each review, for good
