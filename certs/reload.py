"""A TLS server context that follows its certificate files: new handshakes get the new pair."""

import logging
import os
import ssl
import threading
import time

log = logging.getLogger(__name__)


def server_context(cert_file, key_file):
    """A TLS 1.2+ server context for the pair; raises ssl.SSLError or OSError when it is broken."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class ReloadingContext:
    """Hands out the SSLContext of the certificate pair on disk, rebuilt when the files change.

    The files are looked at no more than once per `interval` seconds. A new pair that does not
    load (the key does not match, a half-copied file) is refused with a logged error, and the
    last good context keeps serving; it is tried again when the files change once more.
    """

    def __init__(self, cert_file, key_file, interval=1.0):
        self.cert_file = cert_file
        self.key_file = key_file
        self.interval = interval
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._context = server_context(cert_file, key_file)
        self._checked_at = time.monotonic()
        self.reloads = 0

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
                context = server_context(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError, ValueError) as error:
                log.error("new certificate pair %s, %s refused, the last good one keeps serving: %s",
                          self.cert_file, self.key_file, error)
                return False
            self._context = context
            self.reloads += 1
            log.info("serving certificate %s reloaded", self.cert_file)
            return True
