"""A TLS server context that follows its certificate files: new handshakes get the new pair."""

import logging
import os
import shutil
import ssl

from cryptography import x509

from certs import CA_FILE, CERT_FILE, KEY_FILE, MAX_PEM_BYTES, issued_by, load_bundle, now, read_bytes
from webhook.files import read_bounded, write_atomically
from webhook.metrics import CERTIFICATE_RELOADS
from webhook.watch import FileWatcher

log = logging.getLogger(__name__)


class PairRefused(ValueError):
    """A certificate pair that must not be served: says why."""


# What loading a pair raises for one that must not be served.
REFUSED = (PairRefused, ssl.SSLError, OSError, ValueError)


def server_context(cert_file: str, key_file: str, alpn_protocols: list[str] | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context for a pair fit to serve; raises PairRefused, ssl.SSLError or OSError.

    Fit to serve: the key matches, the certificate is valid now (neither expired nor not yet
    valid), and, when a ca.crt lies beside it, a CA of that bundle issued it.
    """
    check_pair(cert_file)
    read_bounded(key_file, MAX_PEM_BYTES)  # a regular file, of bounded size: OpenSSL would block on a FIFO
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if alpn_protocols:
        context.set_alpn_protocols(alpn_protocols)
    return context


def check_pair(cert_file: str) -> None:
    """Raise PairRefused when the certificate in `cert_file` must not be served now."""
    data = read_bytes(cert_file)
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PairRefused(f"{cert_file} is not a PEM certificate") from None
    at = now()
    if cert.not_valid_after_utc <= at:
        raise PairRefused(f"{cert_file} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    if cert.not_valid_before_utc > at:
        raise PairRefused(f"{cert_file} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    bundle_path = os.path.join(os.path.dirname(cert_file), CA_FILE)
    if os.path.exists(bundle_path):
        try:
            bundle = load_bundle(read_bytes(bundle_path))
        except ValueError:
            raise PairRefused(f"{bundle_path} is not a PEM bundle") from None
        if not any(issued_by(cert, ca_cert) for ca_cert in bundle):
            raise PairRefused(f"no CA of {bundle_path} issued {cert_file}")


class ReloadingContext:
    """Hands out the SSLContext of the certificate pair on disk, rebuilt when the files change.

    The files are looked at no more than once per `interval` seconds, by the handshake that
    asks for the context (webhook.watch). A new pair that is not fit to serve (see
    server_context: a key that does not match, a half-copied file, expired, not yet valid, not
    from the CA) is refused with a logged error, and the last good context keeps serving.

    With `last_good_dir`, every pair that took effect is copied there, and a new process (a
    worker respawned while the files on disk are bad) starts from that copy instead of failing
    every handshake.
    """

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        interval: float = 1.0,
        last_good_dir: str | None = None,
        alpn_protocols: list[str] | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.last_good_dir = last_good_dir
        self.alpn_protocols = alpn_protocols
        self._serving = (cert_file, key_file)
        self._watcher = FileWatcher(
            (cert_file, key_file),
            self._load_followed,
            self._first_context(),
            what=f"certificate pair {cert_file}",
            refused=REFUSED,
            interval=interval,
            check_on_read=True,
            on_change=[self._took_effect],
            reloads=CERTIFICATE_RELOADS,
        )

    def _load_followed(self) -> ssl.SSLContext:
        return server_context(self.cert_file, self.key_file, self.alpn_protocols)

    def _took_effect(self, _context: ssl.SSLContext) -> None:
        self._serving = (self.cert_file, self.key_file)
        self._keep(self.cert_file, self.key_file)

    def _first_context(self) -> ssl.SSLContext:
        try:
            context = self._load_followed()
        except REFUSED as error:
            if not self._has_last_good():
                raise
            log.error("certificate pair %s refused, serving the last good one: %s", self.cert_file, error)
            self._serving = self._last_good_files()
            return server_context(*self._serving, self.alpn_protocols)
        self._keep(self.cert_file, self.key_file)
        return context

    def serving_files(self) -> tuple[str, str]:
        """(certificate file, key file) of the pair in force: the followed files, or the last good copy."""
        return self._serving

    def _last_good_files(self) -> tuple[str, str]:
        assert self.last_good_dir is not None
        return (os.path.join(self.last_good_dir, CERT_FILE), os.path.join(self.last_good_dir, KEY_FILE))

    def _has_last_good(self) -> bool:
        return self.last_good_dir is not None and all(os.path.exists(path) for path in self._last_good_files())

    def _keep(self, cert_file: str, key_file: str) -> None:
        if self.last_good_dir is None:
            return
        os.makedirs(self.last_good_dir, mode=0o700, exist_ok=True)
        kept_cert, kept_key = self._last_good_files()
        write_atomically(kept_key, read_bytes(key_file), mode=0o600)
        write_atomically(kept_cert, read_bytes(cert_file))
        bundle = os.path.join(os.path.dirname(cert_file), CA_FILE)
        if os.path.exists(bundle):  # so the copy is checked against the CA that issued it
            shutil.copyfile(bundle, os.path.join(self.last_good_dir, CA_FILE))

    def context(self) -> ssl.SSLContext:
        """The context of the pair in force (checking the files when they are due)."""
        return self._watcher.current()

    def check(self) -> bool:
        """Reload now if the files changed; True when a new pair took effect."""
        return self._watcher.check()
