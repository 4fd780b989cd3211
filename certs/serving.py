"""Where the serving certificates come from: podmutate manages them, or follows files it is given.

The policy, behind one call (`prepare`): when the certificate directory is empty or holds
podmutate's own CA key, podmutate manages the certificates — creates them, renews them before
they expire, rolls the CA over, shares them with the other replicas through a Secret, and keeps
the webhook configuration's caBundle in step. Otherwise (a mounted cert-manager Secret, say) it
follows the files as they change and only publishes the CA beside them.
"""

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from certs import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE, SERVING_DAYS, SERVING_RENEW_DAYS, serving_names
from certs.inject import publisher
from certs.rotation import Keeper
from certs.secret import SecretStore

log = logging.getLogger(__name__)

STATE_ENV = "PODMUTATE_STATE_DIR"


def default_cert_dir() -> str:
    """Where `serve` keeps its certificates when not told: under $PODMUTATE_STATE_DIR, else the XDG state dir."""
    state = os.environ.get(STATE_ENV)
    if not state:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        state = os.path.join(base, "podmutate")
    return os.path.join(state, "certs")


@dataclass(frozen=True)
class Serving:
    """The pair to serve, and what to start once serving (the rotation thread), if anything."""

    cert_dir: str
    managed: bool
    on_ready: Callable[[], None] | None = None

    @property
    def cert_file(self) -> str:
        return os.path.join(self.cert_dir, CERT_FILE)

    @property
    def key_file(self) -> str:
        return os.path.join(self.cert_dir, KEY_FILE)

    @property
    def ca_file(self) -> str:
        return os.path.join(self.cert_dir, CA_FILE)


def is_managed(cert_dir: str) -> bool:
    """podmutate manages a directory without a pair, or one holding its own CA key."""
    pair = all(os.path.exists(os.path.join(cert_dir, name)) for name in (CERT_FILE, KEY_FILE))
    return not pair or os.path.exists(os.path.join(cert_dir, CA_KEY_FILE))


def prepare(
    cert_dir: str | None = None,
    *,
    service: str | None = None,
    namespace: str | None = None,
    webhook_config: str | None = None,
    cert_secret: str | None = None,
    client: Any = None,
    rotate_every: float = 3600.0,
    validity: float = SERVING_DAYS * 86400.0,
    renew_before: float = SERVING_RENEW_DAYS * 86400.0,
) -> Serving:
    """Make `cert_dir` ready to serve, by the policy above; the Kubernetes client's errors pass through.

    `service` and `namespace` name what the certificate must cover; `webhook_config` the
    MutatingWebhookConfiguration whose caBundle to keep in step; `cert_secret` the Secret
    where replicas share the certificates podmutate manages; `client`, a kubernetes ApiClient,
    is needed for either (the caller builds it: certs/ knows no credentials). Seconds:
    `rotate_every` between checks, `validity` of an issued certificate, `renew_before` its expiry.
    """
    cert_dir = cert_dir or default_cert_dir()
    namespace = namespace or "default"
    if (webhook_config or cert_secret) and client is None:
        raise ValueError("a Kubernetes client is needed to keep a caBundle or share a Secret")
    publish = publisher(client, webhook_config) if webhook_config else None
    if not is_managed(cert_dir):
        serving = Serving(cert_dir, managed=False)
        if publish is not None and os.path.exists(serving.ca_file):
            with open(serving.ca_file, "rb") as stream:
                bundle = stream.read()
            publish(bundle)
        return serving
    store = SecretStore(client, namespace, cert_secret) if cert_secret else None
    keeper = Keeper(
        cert_dir,
        serving_names(service, namespace),
        publish=publish,
        store=store,
        interval=rotate_every,
        serving_days=validity / 86400,
        renew_before=datetime.timedelta(seconds=min(renew_before, validity / 2)),
    )
    keeper.run_once()
    serving = Serving(cert_dir, managed=True, on_ready=keeper.start)
    log.info(
        "certificates in %s are managed by podmutate; clients verify the server with %s", cert_dir, serving.ca_file
    )
    return serving
