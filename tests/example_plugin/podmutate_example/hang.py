"""Never returns while mutating a pod annotated example.com/hang: "true", as a plugin stuck on I/O would."""

import threading

from webhook import hookimpl

_never = threading.Event()


@hookimpl
def mutate_pod(pod):
    if (pod["metadata"].get("annotations") or {}).get("example.com/hang") == "true":
        _never.wait()
