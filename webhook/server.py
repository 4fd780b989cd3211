"""Serving the app over TLS: hypercorn's workers (on uvloop) in front, the Flask app in threads behind.

No client can stall the server: connections, TLS handshakes, headers and bodies are read by
the event loop, with timeouts, so a slow or idle client holds a coroutine, never one of the
threads that answer the API server. A request reaches the app only once its whole body has
arrived (at most `max_body_bytes`; a larger one gets 413 and is drained, bounded, so the
client reads the answer). Certificates are followed on disk: each TLS handshake takes the
pair in force (certs.reload).
"""

import asyncio
import gc
import json
import logging
import multiprocessing
import os
import shutil
import signal
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable
from multiprocessing.connection import wait
from typing import Any

import orjson
import uvloop
from hypercorn.config import Config as HypercornConfig

from certs.reload import ReloadingContext
from webhook import logs, metrics

log = logging.getLogger(__name__)

# ASGI, as hypercorn speaks it.
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SETTINGS_ENV = "PODMUTATE_SERVE_SETTINGS"  # how the spawned workers learn what `serve` was told
HANDSHAKE_TIMEOUT = 5.0  # seconds for a TLS handshake
# Seconds any one read may wait, an idle keep-alive connection included. A slow client holds a
# coroutine, not a thread, so this only bounds what it costs; it stays above the API server's
# idle-connection reuse so that a connection is not closed just as it is being reused.
READ_TIMEOUT = 60
KEEPALIVE_TIMEOUT = 60.0
# hypercorn closes a connection after this many requests (1,000 by default). The API server keeps
# its connections and posts on them again at once, so a close races a review (over HTTP/2 the
# GOAWAY refused the streams in flight): a connection is never closed for its count.
KEEPALIVE_MAX_REQUESTS = sys.maxsize
# HTTP/1.1 only, as the API server speaks to a webhook behind a Service (it allows HTTP/2 only for
# a URL on loopback). Over HTTP/2 it multiplexes every review on one connection, which one worker
# process owns: the other workers idle while that one queues, and the tail grows (BENCHMARKS.md).
ALPN_PROTOCOLS = ["http/1.1"]
# The workers run uvloop's event loop: about a quarter less CPU per review than asyncio's, and
# about 60 KiB per TLS connection where asyncio's SSL transport zero-fills 256 KiB (BENCHMARKS.md).
LISTENERS = (asyncio.base_events.Server, uvloop.loop.Server)  # type: ignore[attr-defined]  # not in its stubs
MAX_HEADER_BYTES = 16 * 1024
# A refused body is still read (and dropped) up to this many bytes, so that the client, which
# sends before it reads, sees the 413 instead of a broken pipe.
DRAIN_FACTOR = 4
DRAIN_MINIMUM = 16 * 1024 * 1024
RETIRE_GRACE = 1.0  # seconds a retiring worker, no longer accepting, waits for requests on fresh connections


def default_workers() -> int:
    return max(2, min(4, multiprocessing.cpu_count()))


class ServeConfig(HypercornConfig):
    """hypercorn's configuration, with a TLS context that follows the certificate files."""

    last_good_dir: str | None = None
    alpn_protocols = ALPN_PROTOCOLS

    def create_ssl_context(self) -> ssl.SSLContext:
        assert self.certfile and self.keyfile, "serving needs a certificate pair"
        reloading = ReloadingContext(
            self.certfile, self.keyfile, last_good_dir=self.last_good_dir, alpn_protocols=self.alpn_protocols
        )
        return following_context(reloading, self.alpn_protocols)


def following_context(reloading: ReloadingContext, alpn_protocols: list[str]) -> ssl.SSLContext:
    """A server SSLContext whose every handshake switches to the context of the pair in force."""
    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    front.minimum_version = ssl.TLSVersion.TLSv1_2
    front.set_alpn_protocols(alpn_protocols)
    front.load_cert_chain(*reloading.serving_files())

    def switch(ssl_object: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
        ssl_object.context = reloading.context()

    front.sni_callback = switch  # called for every ClientHello, with or without a server name
    return front


class BufferedBody:
    """ASGI middleware: the whole body is read (by the event loop) before the app sees the request.

    A body over the cap gets 413 with a JSON message naming the limit. Clients send a body before
    they read the answer (http.client; curl too once it has its 100 Continue), so the body is read
    and dropped first, up to DRAIN_FACTOR × the cap (16 MiB at least): they see the 413 instead of
    a broken pipe. A Content-Length beyond even that is refused at once.
    """

    def __init__(self, app: ASGIApp, cap: Callable[[], int]) -> None:
        self.app = app
        self.cap = cap  # a callable: what the configuration in force says
        self.loop: asyncio.AbstractEventLoop | None = None
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.loop = asyncio.get_running_loop()
        self.in_flight += 1
        try:
            await self._answer(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self.cap()
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            refusal = f"the body has {int(declared)} bytes; the limit is {cap}"
            if int(declared) <= drain_limit(cap):
                await drain(receive, int(declared))  # read it all first: the client reads only once it has sent
            return await refuse(send, refusal)  # a body larger still is refused at once, and the connection closed
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > cap:
                await refuse(send, f"the body is longer than the limit of {cap} bytes")
                return await drain(receive, drain_limit(cap) - len(body)) if message.get("more_body") else None
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def drain_limit(cap: int) -> int:
    return max(DRAIN_FACTOR * cap, DRAIN_MINIMUM)


async def refuse(send: Send, message: str) -> None:
    await respond(send, 413, {"code": 413, "error": "Request Entity Too Large", "message": message})


async def drain(receive: Receive, limit: int) -> None:
    """Read and drop the rest of a refused body, up to `limit` bytes (read timeouts still apply)."""
    while limit > 0:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return
        limit -= len(message.get("body", b""))


async def respond(send: Send, status: int, payload: dict) -> None:
    body = orjson.dumps(payload)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def retire(front: BufferedBody) -> None:
    """Replace this worker gracefully, as hypercorn does after `max_requests`: it stops accepting,
    tells its clients (HTTP/2 GOAWAY, HTTP/1.1 Connection: close), answers what is in flight,
    and exits, and `WebhookServer.run` starts a fresh worker."""
    from hypercorn.asyncio.worker_context import WorkerContext

    # hypercorn keeps its worker's context to itself; there is one per worker process.
    contexts = [item for item in gc.get_objects() if isinstance(item, WorkerContext)]
    if front.loop is None or not contexts:
        log.error("threads stuck in plugins, and this worker cannot be retired: restart podmutate")
        return
    log.error("threads stuck in plugins: worker %d stops and a fresh one takes its place", os.getpid())

    async def terminate_between_requests() -> None:
        # First no new connection here (the other workers go on accepting on the shared socket),
        # and a moment for those just accepted to send their request: hypercorn closes a
        # connection that is idle when it terminates, and one closed before its first request
        # fails that request.
        for server in [item for item in gc.get_objects() if isinstance(item, LISTENERS)]:
            server.close()
        await asyncio.sleep(RETIRE_GRACE)
        # Then at a moment with no request in progress: a stream cut short would fail its pod's
        # create, while a request refused at the start (HTTP/2 REFUSED_STREAM) is retried.
        while front.in_flight:
            await asyncio.sleep(0.01)
        await contexts[0].terminate.set()

    asyncio.run_coroutine_threadsafe(terminate_between_requests(), front.loop)


def served_app() -> BufferedBody:
    """The ASGI app each worker runs, built from the settings `WebhookServer` left in the environment."""
    from a2wsgi import WSGIMiddleware

    from webhook.app import create_app

    settings = json.loads(os.environ[SETTINGS_ENV])
    logs.configure(settings["log_level"], settings["log_format"])
    flask_app = create_app(config_path=settings["config_path"], cert_dir=settings["cert_dir"], watch=True)
    watcher = flask_app.extensions["podmutate"]
    wsgi = WSGIMiddleware(flask_app, workers=settings["threads"])  # type: ignore[arg-type]  # Flask is a WSGI app
    front = BufferedBody(wsgi, lambda: watcher.current().config.max_body_bytes)  # type: ignore[arg-type]
    flask_app.extensions["podmutate.deadline"].on_exhausted = lambda: retire(front)
    return front


class WebhookServer:
    """hypercorn, configured in code: `workers` processes, each running `served_app()`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        cert_file: str,
        key_file: str,
        config_path: str | None = None,
        cert_dir: str | None = None,
        workers: int | None = None,
        threads: int = 8,
        graceful_timeout: float = 30.0,
        log_level: str = "INFO",
        log_format: str = "text",
        metrics_port: int | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.on_ready = on_ready
        self.host = host
        self.metrics_port = metrics_port
        self.config = ServeConfig()
        self.config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        self.config.certfile = cert_file
        self.config.keyfile = key_file
        self.config.workers = workers or default_workers()
        self.config.application_path = "webhook.server:served_app()"
        self.config.ssl_handshake_timeout = HANDSHAKE_TIMEOUT
        self.config.read_timeout = READ_TIMEOUT
        self.config.keep_alive_timeout = KEEPALIVE_TIMEOUT
        self.config.keep_alive_max_requests = KEEPALIVE_MAX_REQUESTS
        self.config.h11_max_incomplete_size = MAX_HEADER_BYTES
        self.config.graceful_timeout = graceful_timeout
        self.config.errorlog = logging.getLogger("podmutate.server")  # through the root logger, one format
        self.config.accesslog = None
        self.config.loglevel = log_level
        # Made by the master before the workers start: a worker started while the files on disk
        # are bad still serves the last good pair (see certs.reload).
        self.config.last_good_dir = tempfile.mkdtemp(prefix="podmutate-last-good-")
        ReloadingContext(cert_file, key_file, last_good_dir=self.config.last_good_dir)  # fail fast on a bad pair
        os.environ[SETTINGS_ENV] = json.dumps(
            {
                "config_path": config_path,
                "cert_dir": cert_dir,
                "threads": threads,
                "log_level": log_level,
                "log_format": log_format,
            }
        )
        # Before any worker starts: each writes its metrics there.
        self.metrics_dir = metrics.prepare_multiprocess() if metrics_port is not None else None

    def serve_metrics(self) -> None:
        """Start serving /metrics, when asked to; raises OSError when the port is taken."""
        if self.metrics_port is not None:
            metrics.serve_metrics(self.host, self.metrics_port, self.config.certfile or "")
            log.info("metrics on http://%s:%d/metrics", self.host, self.metrics_port)

    def run(self) -> int:
        """Supervise the workers until SIGTERM or SIGINT: a worker that exits, whatever its status
        (a crash, a SIGKILL, or a retirement), is replaced at once; hypercorn's own `run` would
        stop the whole server when one worker dies."""
        from hypercorn.asyncio.run import uvloop_worker

        context = multiprocessing.get_context("spawn")
        sockets = self.config.create_sockets()
        shutdown = context.Event()
        stopping: list[bool] = []
        if self.on_ready is not None:
            self.on_ready()  # in the master: the workers are spawned, not forked, and do not inherit it

        def start() -> multiprocessing.process.BaseProcess:
            worker = context.Process(
                target=uvloop_worker, kwargs={"config": self.config, "sockets": sockets, "shutdown_event": shutdown}
            )
            worker.start()
            return worker

        def stop(*_: object) -> None:
            stopping.append(True)
            shutdown.set()

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers inherit "ignore"
        workers = [start() for _ in range(self.config.workers)]
        signal.signal(signal.SIGINT, previous)
        for name in ("SIGTERM", "SIGINT"):
            signal.signal(getattr(signal, name), stop)
        while not stopping:
            wait([worker.sentinel for worker in workers], timeout=1.0)
            for index, worker in enumerate(workers):
                if worker.exitcode is not None and not stopping:
                    log.warning("worker %d exited with %s; starting a fresh one", worker.pid, worker.exitcode)
                    metrics.worker_exited(worker.pid or 0)
                    workers[index] = start()
        for worker in workers:
            worker.join(self.config.graceful_timeout + 5)
            if worker.is_alive():
                worker.terminate()
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()
        for directory in (self.config.last_good_dir, self.metrics_dir):
            if directory:
                shutil.rmtree(directory, ignore_errors=True)
        return 0
