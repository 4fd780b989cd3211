"""Who may read /metrics when it is served over HTTPS: the API server decides.

As the kubelet and controller-runtime's secure metrics serving do, the bearer token of a request
is authenticated with a TokenReview and the user it names is authorized with a
SubjectAccessReview for `get` on the non-resource URL `/metrics` (RBAC: a ClusterRole with
`nonResourceURLs: ["/metrics"]`). podmutate's own account needs `system:auth-delegator`.

Verdicts are kept as controller-runtime's delegating authorizer keeps them: an allowed token for
ALLOWED_SECONDS, a refused one for REFUSED_SECONDS, at most CACHED_TOKENS of each (the oldest
go first), keyed by the token's SHA-256, never the token itself. An API server that cannot be
asked gives 503 and nothing is kept. Every call is bounded by CHECK_SECONDS, within the metrics
endpoint's own time per connection.
"""

from __future__ import annotations

import hashlib
import threading
from typing import NamedTuple

import kubernetes
from cachetools import TTLCache

from webhook.errors import clipped
from webhook.ops.kubeapi import ApiError, ResilientApiClient, Timeouts, api_client, call

ALLOWED_SECONDS = 300.0
REFUSED_SECONDS = 30.0
CACHED_TOKENS = 1024
CHECK_SECONDS = 4.0  # each of the two reviews; the endpoint gives a connection 10 s in all
PATH, VERB = "/metrics", "get"


class Verdict(NamedTuple):
    """The HTTP status a request gets (200 when allowed) and, when refused, why, in one line."""

    status: int
    reason: str = ""


ALLOWED = Verdict(200)


class DelegatedAccess:
    """Decides, from a request's Authorization header, whether it may read PATH."""

    def __init__(self, client: ResilientApiClient) -> None:
        self.authentication = kubernetes.client.AuthenticationV1Api(client)
        self.authorization = kubernetes.client.AuthorizationV1Api(client)
        self._allowed: TTLCache[bytes, Verdict] = TTLCache(CACHED_TOKENS, ALLOWED_SECONDS)
        self._refused: TTLCache[bytes, Verdict] = TTLCache(CACHED_TOKENS, REFUSED_SECONDS)
        self._lock = threading.Lock()  # verdicts are asked for from several threads

    def verdict(self, authorization: str | None) -> Verdict:
        """The verdict on a request with this Authorization header (None: it had none). Blocks
        while the API server is asked; call it off the event loop."""
        token = bearer_token(authorization)
        if not token:
            return Verdict(401, "a bearer token is needed: Authorization: Bearer <token>")
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            kept = self._allowed.get(key) or self._refused.get(key)
        if kept is not None:
            return kept
        try:
            verdict = self._ask(token)
        except ApiError as error:
            return Verdict(503, f"cannot check the token: {error}")
        with self._lock:
            (self._allowed if verdict == ALLOWED else self._refused)[key] = verdict
        return verdict

    def _ask(self, token: str) -> Verdict:
        models = kubernetes.client
        review = call(
            lambda: self.authentication.create_token_review(
                models.V1TokenReview(spec=models.V1TokenReviewSpec(token=token))
            )
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            error = f": {clipped(status.error)}" if status is not None and status.error else ""
            return Verdict(401, f"the token is not valid{error}")
        user = status.user
        access = call(
            lambda: self.authorization.create_subject_access_review(
                models.V1SubjectAccessReview(
                    spec=models.V1SubjectAccessReviewSpec(
                        user=user.username,
                        groups=user.groups,
                        uid=user.uid,
                        extra=user.extra,
                        non_resource_attributes=models.V1NonResourceAttributes(path=PATH, verb=VERB),
                    )
                )
            )
        )
        if access.status is not None and access.status.allowed:
            return ALLOWED
        return Verdict(403, f"{clipped(user.username or '')} may not {VERB} {PATH}")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def delegated_access(kubeconfig: str | None = None) -> DelegatedAccess:
    """Access decided by the API server podmutate's own credentials reach (in-cluster, or the
    kubeconfig's); raises ApiError when there are none."""
    return DelegatedAccess(call(lambda: api_client(kubeconfig, Timeouts.within(CHECK_SECONDS))))
