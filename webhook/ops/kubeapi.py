"""The one way podmutate talks to the API server: credentials, timeouts, retries, one-line errors.

Every call has a connect and a read timeout. Reads (GET, LIST, DELETE) answered 429 or 5xx, or
cut off by the network, are tried again with exponential backoff and jitter, honouring
Retry-After; a create is tried again only on 429, which the API server sends before doing
anything. urllib3's own retries are off: they printed a warning per attempt and hid the error.
"""

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIED_STATUSES = (429, 500, 502, 503, 504)
IDEMPOTENT = ("GET", "HEAD", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class Timeouts:
    """Seconds to connect and to wait for an answer, for every call; and how often to retry."""

    connect: float = 5.0
    read: float = 30.0
    attempts: int = 4
    backoff: float = 0.5  # the first retry waits about this long, each next one twice as long

    @classmethod
    def within(cls, seconds: float) -> "Timeouts":
        """Timeouts for calls that all must end within `seconds`: each call may take a part of the
        whole, so an API server that never answers cannot hold the caller longer."""
        return cls(connect=min(5.0, max(seconds / 4, 1.0)), read=max(seconds / 2, 1.0), attempts=2)


DEFAULT_TIMEOUTS = Timeouts()


class ApiError(RuntimeError):
    """An API call failed; the message is one line, as kubectl would print it."""


class ResilientApiClient(kubernetes.client.ApiClient):
    """An ApiClient whose every request has the timeouts, and is retried where that is safe."""

    def __init__(
        self, configuration: kubernetes.client.Configuration | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        super().__init__(configuration)
        self.timeouts = timeouts

    def call_api(
        self,
        method: str,
        url: str,
        header_params: dict | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        timeout = _request_timeout or (self.timeouts.connect, self.timeouts.read)
        for attempt in range(1, self.timeouts.attempts + 1):
            last = attempt == self.timeouts.attempts
            try:
                response = super().call_api(method, url, header_params, body, post_params, _request_timeout=timeout)
            except HTTPError:
                if method not in IDEMPOTENT or last:
                    raise
                pause = self._backoff(attempt)
            else:
                retry = response.status == 429 or (response.status in RETRIED_STATUSES and method in IDEMPOTENT)
                if not retry or last:
                    return response
                pause = retry_after(response.getheader("Retry-After")) or self._backoff(attempt)
            log.debug(
                "%s %s: retrying in %.1fs (attempt %d of %d)", method, url, pause, attempt + 1, self.timeouts.attempts
            )
            time.sleep(pause)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return self.timeouts.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (at most 30), or None."""
    if not value:
        return None
    try:
        return min(float(value), 30.0)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, min(30.0, parsed.timestamp() - time.time()))


def api_client(kubeconfig: str | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> ResilientApiClient:
    """A client with in-cluster credentials when running in a pod, else the kubeconfig's (as kubectl)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.retries = False
    return ResilientApiClient(configuration, timeouts)


def one_line(error: BaseException, subject: str | None = None) -> str:
    """An API or connection error as one line, naming `subject` (the object the call was about)."""
    if isinstance(error, ApiException) and not error.status:  # the client's wrapping of a TLS or network error
        return f"cannot reach the API server: {str(error.reason or '').splitlines()[-1].strip()}"
    if isinstance(error, ApiException):
        if subject:
            return f"{subject}: {error.status} {error.reason}"
        message = ""
        try:
            message = json.loads(error.body).get("message", "")
        except (TypeError, ValueError, AttributeError):
            pass
        return f"{error.status} {error.reason}: {message}".rstrip(": ")
    return f"cannot reach the API server: {getattr(error, 'reason', None) or error}"


def call(action: Callable[[], T], subject: str | None = None) -> T:
    """Run `action()`; an API, connection or credentials error becomes an ApiError of one line.

    With a `subject` (the object the call was about), the line names it instead of quoting
    the API server's message.
    """
    try:
        return action()
    except (ApiException, HTTPError) as error:
        raise ApiError(one_line(error, subject)) from None
    except kubernetes.config.ConfigException as error:
        raise ApiError(f"no credentials for the API server: {error}") from None
