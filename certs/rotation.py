"""Keep a directory's certificates valid: issue what is missing, renew what is due, roll the CA over."""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509

from certs import (
    CA,
    CA_DAYS,
    CA_FILE,
    CA_KEY_FILE,
    CA_RENEW_DAYS,
    CERT_FILE,
    CLOCK_SKEW,
    KEY_FILE,
    SERVING_DAYS,
    SERVING_RENEW_DAYS,
    ServingCert,
    cert_pem,
    issued_by,
    load_bundle,
    load_key,
    now,
    read_bytes,
    read_serving,
)
from webhook.files import write_atomically

if TYPE_CHECKING:
    from certs.secret import SecretStore

log = logging.getLogger(__name__)


@dataclass
class Rotation:
    """What `ensure` found and did."""

    bundle: bytes
    serving_names: list
    not_after: datetime.datetime
    actions: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def ensure(
    directory: str,
    names: list[str],
    *,
    key_type: str = "ecdsa",
    serving_days: float = SERVING_DAYS,
    renew_before: datetime.timedelta = datetime.timedelta(days=SERVING_RENEW_DAYS),
    ca_days: int = CA_DAYS,
    ca_renew_before: datetime.timedelta = datetime.timedelta(days=CA_RENEW_DAYS),
    at: datetime.datetime | None = None,
) -> Rotation:
    """Make `directory` hold a CA bundle, a CA key and a serving pair valid for `names`; idempotent.

    Keeps what is valid. Issues a new serving certificate when it is missing, does not cover
    `names`, was not issued by a CA of the bundle, or expires within `renew_before`. A CA that
    expires within `ca_renew_before` is replaced, and the bundle (ca.crt) then holds the new
    and the old CA together until the old one expires, so clients that still trust only the
    old CA keep verifying the serving certificate it signed. `at` is the time to judge by.
    """
    at = at or now()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    actions = []
    bundle_path, ca_key_path = os.path.join(directory, CA_FILE), os.path.join(directory, CA_KEY_FILE)
    bundle = [cert for cert in read_bundle(bundle_path) if cert.not_valid_after_utc > at]
    ca = None
    ca_key = read_bytes(ca_key_path)
    if bundle and ca_key:
        try:
            key = load_key(ca_key)
        except (ValueError, TypeError):
            log.warning("%s is not a readable private key; a new CA replaces it", ca_key_path)
            key = None
        if key is not None and key.public_key() == bundle[0].public_key():
            ca = CA(bundle[0], key)
    if ca is None or ca.cert.not_valid_after_utc - at <= ca_renew_before:
        ca = CA.create(key_type=key_type, days=ca_days)
        actions.append("created a new CA" + (" (the old one stays in the bundle until it expires)" if bundle else ""))
        bundle = [ca.cert] + bundle
        write_atomically(ca_key_path, ca.key_pem(), mode=0o600)
    bundle_data = b"".join(cert_pem(cert) for cert in bundle)
    if read_bytes(bundle_path) != bundle_data:
        write_atomically(bundle_path, bundle_data)
        if not actions:
            actions.append("dropped expired CAs from the bundle")

    try:
        serving = read_serving(directory)
    except (ValueError, TypeError):
        serving = None
        log.warning("the serving pair in %s is unreadable; it is issued anew", directory)
    reason = renewal_reason(
        serving, names, bundle, at, renew_before, datetime.timedelta(days=serving_days) + CLOCK_SKEW
    )
    if reason:
        serving = ca.issue(*names, key_type=key_type, days=serving_days)
        write_atomically(os.path.join(directory, KEY_FILE), serving.key_pem(), mode=0o600)
        write_atomically(os.path.join(directory, CERT_FILE), serving.cert_pem())
        actions.append(f"issued a serving certificate ({reason})")
    for action in actions:
        log.info("certificates in %s: %s", directory, action)
    assert serving is not None  # issued above when there was none
    return Rotation(bundle=bundle_data, serving_names=serving.names, not_after=serving.not_after, actions=actions)


def renewal_reason(
    serving: ServingCert | None,
    names: list[str],
    bundle: list[x509.Certificate],
    at: datetime.datetime,
    renew_before: datetime.timedelta,
    longest: datetime.timedelta | None = None,
) -> str | None:
    """Why the serving pair must be issued anew, or None when it is good.

    A pair valid for longer than `longest` from `at` was issued under a longer validity than
    the one now configured: it is replaced, so that shortening the validity takes effect.
    """
    if serving is None:
        return "none found"
    if serving.cert.public_key() != serving.key.public_key():
        return "the key does not match the certificate"
    if set(names) - set(serving.names):
        return f"it does not cover {sorted(set(names) - set(serving.names))}"
    if not any(issued_by(serving.cert, ca_cert) for ca_cert in bundle):
        return "no CA of the bundle issued it"
    if serving.not_after - at <= renew_before:
        return f"it expires {serving.not_after:%Y-%m-%d %H:%M:%S}"
    if longest is not None and serving.not_after - at > longest:
        return f"it is valid until {serving.not_after:%Y-%m-%d}, longer than the configured validity"
    return None


def read_bundle(path: str) -> list[x509.Certificate]:
    data = read_bytes(path)
    try:
        return load_bundle(data)
    except ValueError:
        log.warning("%s is not a PEM bundle; starting a new CA", path)
        return []


class Keeper:
    """Runs `ensure` now and then from a daemon thread, and pushes a changed bundle to the cluster.

    With a `store` (a SecretStore), replicas share one set of certificates: each round takes the
    stored ones first, and stores what `ensure` changed; when another replica stored first, its
    certificates are taken instead. `publish(bundle)` is called after each change (and once at
    start) — to inject the caBundle of the webhook configuration, say; a failure is logged and
    retried next round.
    """

    def __init__(
        self,
        directory: str,
        names: list[str],
        *,
        publish: Callable[[bytes], None] | None = None,
        store: SecretStore | None = None,
        interval: float = 3600.0,
        **ensure_options: Any,
    ) -> None:
        self.directory = directory
        self.names = list(names)
        self.publish = publish
        self.store = store
        self.interval = interval
        self.ensure_options = ensure_options
        self._published: bytes | None = None

    def run_once(self) -> Rotation:
        outcome = (
            self._ensure_shared()
            if self.store is not None
            else ensure(self.directory, self.names, **self.ensure_options)
        )
        if self.publish is not None and outcome.bundle != self._published:
            try:
                self.publish(outcome.bundle)
                self._published = outcome.bundle
            except Exception as error:  # the API server may be briefly away; try again next round
                log.error("publishing the CA bundle failed, retrying in %.0fs: %s", self.interval, error)
        return outcome

    def _ensure_shared(self) -> Rotation:
        assert self.store is not None
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for _ in range(5):
            seen = self.store.pull(self.directory)  # what the replicas agreed on, if anything
            outcome = ensure(self.directory, self.names, **self.ensure_options)
            if self.store.push(self.directory, seen):  # a no-op when nothing changed
                return outcome
        raise RuntimeError(f"could not agree on certificates with the other replicas through {self.store.name}")

    def start(self) -> None:
        def loop() -> None:
            while True:
                time.sleep(self.interval)
                try:
                    self.run_once()
                except Exception:
                    log.exception("certificate rotation in %s failed; retrying in %.0fs", self.directory, self.interval)

        threading.Thread(target=loop, name="podmutate-certificates", daemon=True).start()
