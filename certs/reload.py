"""A TLS server context that follows its certificate files: new handshakes get the new pair."""

import logging
import os
import shutil
import ssl
import threading
import time

from cryptography import x509

from certs import CA_FILE, issued_by, load_bundle, now, read_bytes, write_atomically

log = logging.getLogger(__name__)


class PairRefused(ValueError):
    """A certificate pair that must not be served: says why."""


def server_context(cert_file, key_file, alpn_protocols=None):
    """A TLS 1.2+ server context for a pair fit to serve; raises PairRefused, ssl.SSLError or OSError.

    Fit to serve: the key matches, the certificate is valid now (neither expired nor not yet
    valid), and, when a ca.crt lies beside it, a CA of that bundle issued it.
    """
    check_pair(cert_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if alpn_protocols:
        context.set_alpn_protocols(alpn_protocols)
    return context


def check_pair(cert_file):
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

    The files are looked at no more than once per `interval` seconds. A new pair that is not
    fit to serve (see server_context: a key that does not match, a half-copied file, expired,
    not yet valid, not from the CA) is refused with a logged error, and the last good context
    keeps serving; it is tried again when the files change once more.

    With `last_good_dir`, every pair that took effect is copied there, and a new process (a
    worker respawned while the files on disk are bad) starts from that copy instead of failing
    every handshake.
    """

    def __init__(self, cert_file, key_file, interval=1.0, last_good_dir=None, alpn_protocols=None):
        self.cert_file = cert_file
        self.key_file = key_file
        self.interval = interval
        self.last_good_dir = last_good_dir
        self.alpn_protocols = alpn_protocols
        self._serving = (cert_file, key_file)
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._context = self._first_context()
        self._checked_at = time.monotonic()
        self.reloads = 0

    def _first_context(self):
        try:
            context = server_context(self.cert_file, self.key_file, self.alpn_protocols)
        except (PairRefused, ssl.SSLError, OSError, ValueError) as error:
            if not self._has_last_good():
                raise
            log.error("certificate pair %s refused, serving the last good one: %s", self.cert_file, error)
            self._serving = self._last_good_files()
            return server_context(*self._serving, self.alpn_protocols)
        self._keep(self.cert_file, self.key_file)
        return context

    def serving_files(self):
        """(certificate file, key file) of the pair in force: the followed files, or the last good copy."""
        return self._serving

    def _last_good_files(self):
        return (os.path.join(self.last_good_dir, "tls.crt"), os.path.join(self.last_good_dir, "tls.key"))

    def _has_last_good(self):
        return self.last_good_dir is not None and all(os.path.exists(path) for path in self._last_good_files())

    def _keep(self, cert_file, key_file):
        if self.last_good_dir is None:
            return
        os.makedirs(self.last_good_dir, mode=0o700, exist_ok=True)
        kept_cert, kept_key = self._last_good_files()
        write_atomically(kept_key, read_bytes(key_file), mode=0o600)
        write_atomically(kept_cert, read_bytes(cert_file))
        bundle = os.path.join(os.path.dirname(cert_file), CA_FILE)
        if os.path.exists(bundle):  # so the copy is checked against the CA that issued it
            shutil.copyfile(bundle, os.path.join(self.last_good_dir, CA_FILE))

    def _file_stamp(self):
        stamps = []
        for path in (self.cert_file, self.key_file):
            try:
                status = os.stat(path)
            except OSError:
                return None
            stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return tuple(stamps)

    def context(self):
        if time.monotonic() - self._checked_at >= self.interval:
            self.check()
        return self._context

    def check(self):
        """Reload now if the files changed; True when a new pair took effect."""
        with self._lock:
            self._checked_at = time.monotonic()
            stamp = self._file_stamp()
            if stamp is None or stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                context = server_context(self.cert_file, self.key_file, self.alpn_protocols)
            except (PairRefused, ssl.SSLError, OSError, ValueError) as error:
                log.error("new certificate pair %s, %s refused, the last good one keeps serving: %s",
                          self.cert_file, self.key_file, error)
                return False
            self._context = context
            self._serving = (self.cert_file, self.key_file)
            self._keep(self.cert_file, self.key_file)
            self.reloads += 1
            log.info("serving certificate %s reloaded", self.cert_file)
            return True
