"""Serving the app over TLS with gunicorn: several threaded workers, certificates followed on disk."""

import logging
import multiprocessing
import tempfile

from gunicorn.app.base import BaseApplication

from certs.reload import ReloadingContext

log = logging.getLogger(__name__)

_contexts = {}
# Where every process keeps a copy of the last pair that took effect: made by the master before
# it forks, so a worker respawned while the files on disk are bad still starts serving.
_last_good = {"dir": None}


def reloading_ssl_context(conf, default_ssl_context_factory):
    """gunicorn's ssl_context hook: called per connection, answers from the per-process cache."""
    key = (conf.certfile, conf.keyfile)
    if key not in _contexts:
        _contexts[key] = ReloadingContext(conf.certfile, conf.keyfile, last_good_dir=_last_good["dir"])
    return _contexts[key].context()


def default_workers():
    return max(2, min(4, multiprocessing.cpu_count()))


class WebhookServer(BaseApplication):
    """gunicorn, configured in code: one `app_factory()` call per worker, after the fork."""

    def __init__(self, app_factory, *, host, port, cert_file, key_file, workers=None, threads=4,
                 graceful_timeout=30, log_level="info", on_ready=None):
        self.app_factory = app_factory
        self.settings = {
            "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
            "workers": workers or default_workers(),
            "worker_class": "gthread",
            "threads": threads,
            "certfile": cert_file,
            "keyfile": key_file,
            "ssl_context": reloading_ssl_context,
            "graceful_timeout": graceful_timeout,
            "timeout": 60,
            "keepalive": 30,
            "loglevel": log_level,
            "errorlog": "-",
            "proc_name": "podmutate",
        }
        _last_good["dir"] = tempfile.mkdtemp(prefix="podmutate-last-good-")
        ReloadingContext(cert_file, key_file, last_good_dir=_last_good["dir"])  # fail fast, and keep the pair
        if on_ready is not None:
            # Runs in the master once it listens: what it starts is not copied into the workers.
            self.settings["when_ready"] = lambda arbiter: on_ready()
        super().__init__()

    def load_config(self):
        for name, value in self.settings.items():
            self.cfg.set(name, value)
        # gunicorn 24+ opens a control socket under $HOME: podmutate needs none, and under a
        # read-only root filesystem it only logs an error at every start.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self):
        return self.app_factory()
