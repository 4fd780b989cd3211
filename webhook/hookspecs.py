"""The hooks a podmutate plugin can implement, and the markers to implement them.

Each spec has only a docstring: pluggy calls the implementations, never the spec.
"""
# mypy: disable-error-code="empty-body"

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from webhook.config import Config
    from webhook.wire import AdmissionRequest

PROJECT_NAME = "podmutate"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def config_defaults() -> dict[str, Any]:
    """Return a dict of the configuration sections this plugin owns, with their default values.

    The defaults of every plugin are merged first; the YAML file and the environment go on top.
    """


@hookspec
def config_from_environ(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Return a partial configuration dict read from the environment mapping `environ`, or None.

    Plugins never read ``os.environ`` themselves: the host passes it in, so tests and the
    offline CLI can pass any mapping. Raise ``ConfigError`` naming the variable when a
    value is malformed.
    """


@hookspec
def parse_config(config: Config) -> Any:
    """Check this plugin's sections and return its parsed settings (any value), or None.

    Called once each time the configuration is loaded, never per review: read your sections
    with ``config.section(name)`` (a private copy), check them, and pre-compute what
    ``mutate_pod`` needs. What you return is ``config.settings[<your plugin's name>]`` in
    every later hook; no other plugin can overwrite it. Raise ``ConfigError(key, value,
    expected)`` for a bad value; start-up stops (or a reload is refused) with that one line.
    """


@hookspec(firstresult=True)
def classify_pod(pod: dict, namespace: str, config: Config) -> str | None:
    """Return the job type of `pod` (a str such as ``"sync"``), or None when it is not a job pod.

    Stops at the first non-None result. The built-in classifier is ``trylast``, so a plugin
    can classify pods its own way and leave the rest to it.
    """


@hookspec
def mutate_pod(pod: dict, job_type: str, config: Config, request: AdmissionRequest) -> None:
    """Edit `pod`, a deep copy of the pod being admitted, in place; return nothing.

    Must be idempotent: running every plugin again on the result changes nothing, because the
    API server re-invokes the webhook (``reinvocationPolicy: IfNeeded``) and dry-runs call it
    too. Must have no side effects. ``request.warn(message)`` adds a warning to the review;
    ``raise Denied(message)`` refuses the pod.
    """
