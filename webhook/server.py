"""Serving the app over TLS: worker processes on uvloop in front (HTTP/1.1 parsed in C by llhttp,
through uvicorn's httptools protocol), the Flask app in threads behind, and the supervisor that
keeps the workers alive.

No client can stall the server: connections, TLS handshakes, headers and bodies are read by
the event loop, with timeouts, so a slow or idle client holds a coroutine, never one of the
threads that answer the API server. A request reaches the app only once its whole body has
arrived (at most `max_body_bytes`; a larger one gets 413 and is drained, bounded, so the
client reads the answer), within the worker's body budget. Certificates are followed on disk:
each TLS handshake takes the pair in force (webhook.tls). A worker ticks a heartbeat the
supervisor watches (a frozen worker is killed and replaced), and is retired gracefully past
its memory ceiling (docs/serving.md: Limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import io
import json
import logging
import multiprocessing
import os
import random
import shutil
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, NoReturn

import orjson
import uvloop
from a2wsgi.wsgi import build_environ
from prometheus_client.registry import Collector
from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from webhook import logs, metrics
from webhook.budget import DEFAULT_BUDGET, give_memory_back
from webhook.deadline import DeadlineRunner, Overrun
from webhook.engine import Engine, keep_last_good
from webhook.errors import problem_payload, too_large
from webhook.tls import ReloadingContext, server_context

log = logging.getLogger(__name__)

# ASGI, as the workers' protocol speaks it.
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
WholeBodyApp = Callable[[Scope, bytes, Send], Awaitable[None]]  # an app given the request's body whole

SETTINGS_ENV = "PODMUTATE_SERVE_SETTINGS"  # how the spawned workers learn what `serve` was told
HANDSHAKE_TIMEOUT = 5.0  # seconds for a TLS handshake
# Seconds any one read may wait, an idle keep-alive connection included. A slow client holds a
# coroutine, not a thread, so this only bounds what it costs; it stays above the API server's
# idle-connection reuse so that a connection is not closed just as it is being reused.
READ_TIMEOUT = 60
KEEPALIVE_TIMEOUT = 60.0
# A connection is never closed for the number of requests it carried (hypercorn, before, closed
# one after 1,000): the API server keeps its connections and posts on them again at once, so
# such a close races a review.
# HTTP/1.1 only, as the API server speaks to a webhook behind a Service (it allows HTTP/2 only for
# a URL on loopback). Over HTTP/2 it multiplexes every review on one connection, which one worker
# process owns: the other workers idle while that one queues, and the tail grows (BENCHMARKS.md).
ALPN_PROTOCOLS = ["http/1.1"]
# The workers run uvloop's event loop: about a quarter less CPU per review than asyncio's, and
# about 60 KiB per TLS connection where asyncio's SSL transport zero-fills 256 KiB (BENCHMARKS.md).
MAX_HEADER_BYTES = 16 * 1024  # a request's head: its request line and headers
# Requests that may wait on one connection behind the one being answered (HTTP/1.1 pipelining;
# the API server does not pipeline). The parser reads every request in what arrived at once, each
# becoming a request object of a few KiB: past this, the connection is answered 400 and closed, so
# that one read of 256 KiB of tiny requests cannot become thousands of them held at once.
MAX_PIPELINED = 8
BACKLOG = 100  # connections the kernel queues for the workers to accept
# The request bodies one worker holds at once, read or in review (at least one body at the cap):
# more connections sending bodies wait, unread, for room (docs/serving.md: the memory budget).
BODY_BUDGET = 8 * 1024 * 1024
# A body the app has not read yet is held by the connection up to 64 KiB (uvicorn's flow
# control): past that the connection stops reading, and the client is held back by TCP.
# A refused body is still read (and dropped) up to this many bytes, so that the client, which
# sends before it reads, sees the 413 instead of a broken pipe.
DRAIN_FACTOR = 4
DRAIN_MINIMUM = 16 * 1024 * 1024
LAST_GOOD_CONFIG = "config.yaml"  # in the last good directory, beside the certificate pair
# The watchdog: each worker's event loop ticks every HEARTBEAT_SECONDS; one silent for
# WATCHDOG_SECONDS (the GIL held in C, SIGSTOP) is killed and replaced. A starting worker has
# STARTUP_SECONDS for its first tick (imports, plugins, the configuration).
HEARTBEAT_SECONDS = 0.5
WATCHDOG_SECONDS = 5.0
STARTUP_SECONDS = 30.0
# A worker that dies within RESPAWN_STEADY_SECONDS of its start, again and again, is replaced
# after a backoff doubling from the first to the most, with jitter; at once otherwise.
RESPAWN_FIRST_SECONDS = 0.5
RESPAWN_MAX_SECONDS = 30.0
RESPAWN_STEADY_SECONDS = 30.0
PR_SET_PDEATHSIG = 1  # prctl(2)
SSL_SHUTDOWN_SECONDS = 2.0  # for a closing TLS connection's close_notify
FLUSH_SECONDS = 0.2  # a stopping worker's last answers leave its socket buffers
# A stopping worker answers what comes on its open keep-alive connections this long, each answer
# with Connection: close, before it drops those still idle (see stop_between_requests).
DRAIN_SECONDS = 2.0
# A worker may grow this much past its memory at start before it is retired (MemoryCeiling); with
# two workers, the supervisor and their reviews in flight, within the manifests' 256 MiB.
WORKER_GROWTH_BYTES = 32 * 1024 * 1024
TRIM_INTERVAL_SECONDS = 5.0


def default_workers() -> int:
    return max(2, min(4, multiprocessing.cpu_count()))


@dataclass
class ServeConfig:
    """What the supervisor hands each worker: where to listen, the pair to serve, how many
    workers and how long a stopping one may take. Picklable (the workers are spawned)."""

    host: str
    port: int
    certfile: str
    keyfile: str
    workers: int
    graceful_timeout: float
    last_good_dir: str | None = None

    def create_socket(self) -> socket.socket:
        """The listening socket, made once by the supervisor and shared by every worker. Without
        SO_REUSEPORT: a second `serve` on the port fails to bind instead of taking a share of the
        connections."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
            sock.set_inheritable(True)
        except OSError:
            sock.close()
            raise
        return sock

    def create_ssl_context(self) -> ssl.SSLContext:
        reloading = ReloadingContext(
            self.certfile, self.keyfile, last_good_dir=self.last_good_dir, alpn_protocols=ALPN_PROTOCOLS
        )
        return following_context(reloading, ALPN_PROTOCOLS)


def following_context(reloading: ReloadingContext, alpn_protocols: list[str]) -> ssl.SSLContext:
    """A server SSLContext whose every handshake switches to the context of the pair in force."""
    front = server_context(*reloading.serving_files(), alpn_protocols=alpn_protocols)

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

    def __init__(
        self,
        app: WholeBodyApp,
        cap: Callable[[], int],
        body_budget: int = BODY_BUDGET,
        probes: dict[str, Callable[[], tuple[int, dict]]] | None = None,
    ) -> None:
        self.app = app
        self.probes = probes or {}  # path -> what a GET of it answers, on the loop (no thread)
        self.cap = cap  # a callable: what the configuration in force says
        self.loop: asyncio.AbstractEventLoop | None = None
        self.in_flight = 0
        self.draining = False  # this worker is stopping: every answer closes its connection
        self.bodies = BodyBudget(body_budget)
        self.ceiling: MemoryCeiling | None = None  # set once the worker listens (tick)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # nothing else is offered (no websockets, no lifespan)
        self.loop = asyncio.get_running_loop()
        _fresh_connections.discard(tuple((scope.get("client") or ())[:2]))
        probe = self.probes.get(scope["path"]) if scope["method"] == "GET" else None
        if probe is not None:  # the kubelet's probes: a few microseconds of work, not worth a thread
            status, payload = probe()
            return await respond(self._closing(send) if self.draining else send, status, payload, close=False)
        self.in_flight += 1
        try:
            await self._answer(scope, receive, self._closing(send) if self.draining else send)
        finally:
            self.in_flight -= 1
            self.keep_within_ceiling()  # after every request too: a leak of a review's size is seen at once

    @staticmethod
    def _closing(send: Send) -> Send:
        """`send`, with Connection: close on the answer: the client takes the connection out of
        its pool, and the connection is closed once the answer is sent."""

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [item for item in message.get("headers", []) if item[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return closing

    def keep_within_ceiling(self) -> None:
        """Give memory back, or retire this worker, when it has grown past its ceiling."""
        if self.ceiling is not None and self.ceiling.passed():
            limit = self.ceiling.limit
            self.ceiling = None  # once
            retire(self, f"{resident_bytes() >> 20} MiB held, over the ceiling of {limit >> 20} MiB")

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self.cap()
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            refusal = too_large(cap, int(declared))
            if int(declared) <= drain_limit(cap):
                await drain(receive, int(declared))  # read it all first: the client reads only once it has sent
            return await refuse(send, refusal)  # a body larger still is refused at once, and the connection closed
        # The bodies this worker holds, read or being read, stay within its body budget: a body
        # takes its declared length (or each chunk as it comes) before it is read on, and waits
        # for room — unread, so the client is held back by TCP — at most READ_TIMEOUT.
        declared_size = min(int(declared), cap) if declared is not None and declared.isdigit() else 0
        room = self.bodies.room(cap)
        if not await self.bodies.take(declared_size, room):
            return await busy(send, self.bodies, declared_size)
        reserved = declared_size  # what this request holds of the budget: given back, all of it, at its end
        try:
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if len(body) + len(chunk) > reserved:
                    more = min(len(body) + len(chunk), cap + 1) - reserved
                    if not await self.bodies.take(more, room):
                        return await busy(send, self.bodies, more)
                    reserved += more
                body.extend(chunk)
                if len(body) > cap:
                    await refuse(send, too_large(cap))
                    return await drain(receive, drain_limit(cap) - len(body)) if message.get("more_body") else None
                if not message.get("more_body"):
                    break
            payload = bytes(body)
            body.clear()  # one copy of the body, not two, while the app reviews it
            await self.app(scope, payload, send)
        finally:
            self.bodies.give(reserved)


class BodyBudget:
    """Bytes of request bodies one worker's event loop may hold at once."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self._freed = asyncio.Event()

    def room(self, cap: int) -> int:
        """The budget, never below one body at the cap: a body the cap allows must be able to pass."""
        return max(self.total, cap + 1)

    async def take(self, size: int, room: int) -> bool:
        """Hold `size` more bytes, waiting at most READ_TIMEOUT for them to fit in `room`; False if they did not."""
        deadline = time.monotonic() + READ_TIMEOUT
        while self.held + size > room and self.held:
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), deadline - time.monotonic())
            if time.monotonic() >= deadline and self.held + size > room:
                return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size
        self._freed.set()


async def busy(send: Send, bodies: BodyBudget, size: int) -> None:
    message = f"{bodies.held} bytes of request bodies are being read or reviewed; no room for {size} more in time"
    await respond(send, 429, {"code": 429, "error": "Too Many Requests", "message": message})


async def tick(front: BufferedBody) -> None:
    """Beat this worker's heartbeat every HEARTBEAT_SECONDS, for as long as its event loop runs;
    write what its reviews counted to the metrics (metrics.batch); keep its memory within its
    ceiling; at the supervisor's shutdown, end the worker once its reviews are answered."""
    front.ceiling = MemoryCeiling(resident_bytes())
    while _worker is not None:
        if not front.draining:  # a retiring worker's slot is its successor's to beat
            _worker.pulse.beat(_worker.slot)
        metrics.batch.flush()
        if _worker.shutdown.is_set():
            return await stop_between_requests(front, _worker.graceful_timeout, "the supervisor stops")
        front.keep_within_ceiling()
        await asyncio.sleep(HEARTBEAT_SECONDS)


class MemoryCeiling:
    """A worker's memory, held to what it started with plus WORKER_GROWTH_BYTES.

    Freed memory is given back to the system when the worker has grown by half that (glibc keeps
    what connections and reviews freed: a TLS connection's buffers alone, some 40 KiB, stay in
    the worker's heap after it closes). A worker still past the ceiling after that is retired
    gracefully — it stops accepting, answers what it has, and a fresh one takes its place — so
    no leak, in podmutate, a plugin or a library, can grow a worker to the container's limit.
    """

    def __init__(self, start: int) -> None:
        self.limit = start + WORKER_GROWTH_BYTES
        self.trim_above = start + WORKER_GROWTH_BYTES // 2
        self._trimmed_at = 0.0

    def passed(self) -> bool:
        """True when the worker is over its ceiling even after giving freed memory back (which it
        does at most every TRIM_INTERVAL_SECONDS below the ceiling, at once above it)."""
        held = resident_bytes()
        if held <= self.trim_above or (
            held <= self.limit and time.monotonic() - self._trimmed_at < TRIM_INTERVAL_SECONDS
        ):
            return False
        self._trimmed_at = time.monotonic()
        give_memory_back()
        return resident_bytes() > self.limit


_statm: int | None = None  # /proc/self/statm, kept open: read after every request
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident memory, from /proc (one pread on a descriptor kept open)."""
    global _statm
    if _statm is None:
        _statm = os.open("/proc/self/statm", os.O_RDONLY)
    return int(os.pread(_statm, 128, 0).split()[1]) * PAGE_BYTES


async def stop_between_requests(front: BufferedBody, graceful_timeout: float, reason: str) -> None:
    """End this worker without failing a request: no new connection (its listeners closed at once;
    the other workers go on accepting on the shared socket); what is in flight is answered, and
    for DRAIN_SECONDS so is what comes on the connections already open, every answer with
    Connection: close, so that a pooled client (the API server) takes each out of its pool as it
    uses it; a connection still in its handshake or before its first request gets up to
    HANDSHAKE_TIMEOUT. A connection is closed under its client only when it stayed idle all that
    while: closing an idle connection races the client's next request on it, and the API server
    does not retry a webhook's POST. `graceful_timeout` bounds it all. (A server's usual shutdown
    — hypercorn's, uvicorn's — closes idle connections at once, racing that next request, and
    then waits for every other to close, which a pooled client may not do for long.)"""
    stop_accepting()
    front.draining = True
    started = time.monotonic()

    def waiting() -> bool:
        elapsed = time.monotonic() - started
        return bool(
            front.in_flight
            or (_fresh_connections and elapsed < HANDSHAKE_TIMEOUT)
            or (_open_connections and elapsed < DRAIN_SECONDS)
        )

    while waiting() and time.monotonic() - started < graceful_timeout:
        await asyncio.sleep(0.01)
    await asyncio.sleep(FLUSH_SECONDS)  # the last answers leave the socket buffers
    metrics.batch.flush()
    answered = "answered all in flight" if not front.in_flight else "timed out"
    log.info("worker %d stopped (%s): %s", os.getpid(), reason, answered)
    logging.shutdown()
    os._exit(0)


def drain_limit(cap: int) -> int:
    return max(DRAIN_FACTOR * cap, DRAIN_MINIMUM)


async def refuse(send: Send, message: str) -> None:
    await respond(send, 413, problem_payload(413, "Request Entity Too Large", message))


async def drain(receive: Receive, limit: int) -> None:
    """Read and drop the rest of a refused body, up to `limit` bytes (read timeouts still apply)."""
    while limit > 0:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return
        limit -= len(message.get("body", b""))


async def respond(send: Send, status: int, payload: dict, close: bool = True) -> None:
    """Answer `payload` as JSON; with `close`, the connection is closed after it (a refused body)."""
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def stop_accepting() -> None:
    """Close this worker's listeners; the other workers go on accepting on the shared socket."""
    for server in _listeners:
        server.close()


def retire(front: BufferedBody, reason: str = "threads stuck in plugins") -> None:
    """Replace this worker gracefully: it stops between requests (stop_between_requests), and
    `WebhookServer.run` starts a fresh worker."""
    if front.loop is None or _worker is None:
        log.error("%s, and this worker cannot be retired: restart podmutate", reason)
        return
    log.error("%s: worker %d stops and a fresh one takes its place", reason, os.getpid())
    # The supervisor starts the fresh one now, not once this one has ended: with one worker, its
    # draining (up to graceful_timeout) would otherwise leave nobody accepting.
    _worker.pulse.retire(_worker.slot)
    asyncio.run_coroutine_threadsafe(stop_between_requests(front, _worker.graceful_timeout, reason), front.loop)


Reply = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
REVIEW_PATH = "/mutate"
JSON_TYPE = (b"content-type", b"application/json")


class TimedApp:
    """The app behind the event loop, for requests whose body has been read whole: each runs
    once in a review thread of `runner`, and the loop awaits its whole answer at most
    `budget()` seconds — one hand-off there and back; past the budget, `overran(body, overrun,
    started)` answers (by failure_mode) and the thread is counted stuck. At most `threads`
    requests are in the app at once; more wait on the loop.

    A POST to /mutate is `review(body)`, the function the Flask view answers with, called
    without Flask's request machinery (its context, routing, Response: about a tenth of a
    served review's CPU); any other request is the WSGI app's (Flask, created `timed_by_server`),
    reading the body from memory. (a2wsgi's streaming bridge, before, took a round trip between
    the loop and a thread for each body read, the response's start and each chunk, and the
    review a second thread of its own.)"""

    def __init__(
        self,
        app: Callable[[Any, Callable], Any],
        review: Callable[[bytes], tuple[int, bytes]],
        threads: int,
        runner: DeadlineRunner,
        budget: Callable[[], float],
        overran: Callable[[bytes, Overrun, float], tuple[int, bytes]],
    ) -> None:
        self.app = app
        self.review = review
        self.slots = asyncio.Semaphore(threads)
        self.runner = runner
        self.budget = budget
        self.overran = overran

    async def __call__(self, scope: Scope, body: bytes, send: Send) -> None:
        started = time.perf_counter()
        if scope["method"] == "POST" and scope["path"] == REVIEW_PATH:
            call = functools.partial(self._review, body)
        else:  # any file serves as wsgi.input
            call = functools.partial(self._call, build_environ(scope, io.BytesIO(body)))  # type: ignore[arg-type]
        async with self.slots:
            try:
                status, headers, content = await self.runner.run(call, self.budget())
            except Overrun as overrun:
                status, content = self.overran(body, overrun, started)
                headers = [JSON_TYPE]
        headers.append((b"content-length", b"%d" % len(content)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _review(self, body: bytes) -> Reply:
        try:
            status, content = self.review(body)
        except Exception as error:  # what Flask's handler of the unexpected answers, the same way
            log.exception("unexpected error answering POST %s", REVIEW_PATH)
            status = 500
            content = orjson.dumps(
                problem_payload(500, "Internal Server Error", f"{type(error).__name__}: the error is logged")
            )
        return status, [JSON_TYPE], content

    def _call(self, environ: Any) -> Reply:
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            started[:] = [(status, headers)]
            return lambda chunk: chunks.append(chunk)

        chunks: list[bytes] = []
        iterable = self.app(environ, start_response)
        try:
            chunks.extend(iterable)
        finally:
            getattr(iterable, "close", lambda: None)()
        status, headers = started[0]
        encoded = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers
            if name.lower() != "content-length"  # set from the body, as for a review
        ]
        return int(status.split(" ", 1)[0]), encoded, b"".join(chunks)


def served_app() -> BufferedBody:
    """The ASGI app each worker runs, built from the settings `WebhookServer` left in the environment."""
    from webhook.app import create_app

    settings = json.loads(os.environ[SETTINGS_ENV])
    logs.configure(settings["log_level"], settings["log_format"])
    flask_app = create_app(
        config_path=settings["config_path"],
        cert_dir=settings["cert_dir"],
        watch=True,
        last_good_config=settings["last_good_config"],
        liveness=_worker.pulse.problem if _worker else None,
        review_memory=settings["review_memory"],
        timed_by_server=True,
    )
    watcher = flask_app.extensions["podmutate"]
    runner = flask_app.extensions["podmutate.deadline"]
    wsgi = TimedApp(
        flask_app,
        flask_app.extensions["podmutate.review"],
        settings["threads"],
        runner,
        lambda: watcher.current().config.review_timeout_seconds,
        flask_app.extensions["podmutate.overran"],
    )
    probes = flask_app.extensions["podmutate.probes"]
    front = BufferedBody(
        wsgi,
        lambda: watcher.current().config.max_body_bytes,
        probes={"/healthz": probes.live, "/readyz": probes.ready},
    )
    runner.on_exhausted = lambda: retire(front)
    return front


class WebhookServer:
    """The server: `workers` processes, each running `served_app()` on the shared socket (run_worker).

    `engine` is the one loaded from `config_path` before: its file is the first last good
    configuration, which a worker started while the file is bad serves."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        cert_file: str,
        key_file: str,
        config_path: str | None = None,
        engine: Engine | None = None,
        cert_dir: str | None = None,
        workers: int | None = None,
        threads: int = 8,
        review_memory: int = DEFAULT_BUDGET,
        graceful_timeout: float = 30.0,
        log_level: str = "INFO",
        log_format: str = "text",
        metrics_port: int | None = None,
        metrics_host: str | None = None,
        metrics_access: metrics.Access | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.on_ready = on_ready
        self.host = host
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host or host
        self.metrics_access = metrics_access
        self.config = ServeConfig(
            host=host,
            port=port,
            certfile=cert_file,
            keyfile=key_file,
            workers=workers or default_workers(),
            graceful_timeout=graceful_timeout,
        )
        # Made by the master before the workers start: a worker started while the files on disk
        # are bad still serves the last good pair (see webhook.tls).
        self.config.last_good_dir = tempfile.mkdtemp(prefix="podmutate-last-good-")
        ReloadingContext(cert_file, key_file, last_good_dir=self.config.last_good_dir)  # fail fast on a bad pair
        # The same for the configuration: the file `serve` started from, and each version a worker takes.
        last_good_config = os.path.join(self.config.last_good_dir, LAST_GOOD_CONFIG)
        if engine is not None:
            keep_last_good(engine, last_good_config)
        os.environ[SETTINGS_ENV] = json.dumps(
            {
                "config_path": config_path,
                "cert_dir": cert_dir,
                "last_good_config": last_good_config,
                "threads": threads,
                "review_memory": review_memory,
                "log_level": log_level,
                "log_format": log_format,
            }
        )
        # Before any worker starts: each writes its metrics there.
        self.metrics_dir = metrics.prepare_multiprocess() if metrics_port is not None else None
        self.socket: socket.socket | None = None

    def listen(self) -> None:
        """Bind the webhook's port; raises OSError when it is taken (by a second `serve`, say)."""
        self.socket = self.config.create_socket()

    def serve_metrics(self, collectors: Iterable[Collector] = ()) -> None:
        """Start serving /metrics, when asked to, with what `collectors` add to the workers'
        figures; raises OSError when the port is taken. With an `metrics_access`, over HTTPS with
        the webhook's own certificate pair, followed as it is."""
        if self.metrics_port is None:
            return
        tls = None
        if self.metrics_access is not None:
            alpn = ["http/1.1"]
            reloading = ReloadingContext(
                self.config.certfile, self.config.keyfile, last_good_dir=self.config.last_good_dir, alpn_protocols=alpn
            )
            tls = following_context(reloading, alpn)
        metrics.serve_metrics(
            self.metrics_host, self.metrics_port, self.config.certfile, tls, self.metrics_access, collectors
        )
        scheme = "https" if tls else "http"
        log.info("metrics on %s://%s:%d/metrics", scheme, self.metrics_host, self.metrics_port)

    def run(self) -> int:
        """Supervise the workers until SIGTERM or SIGINT (SIGHUP is ignored: the configuration and
        the certificates are followed on disk). A worker that exits, whatever its status (a
        crash, a SIGKILL, a retirement), is replaced — at once, or after a backoff when it keeps
        dying young; one whose event loop stops ticking (WATCHDOG_SECONDS) is killed first."""
        # Ignored for good, before any helper process starts (multiprocessing's resource tracker
        # inherits it): a hang-up must neither end the supervisor nor orphan its workers.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        context = multiprocessing.get_context("spawn")
        if self.socket is None:
            self.listen()
        listening = self.socket
        assert listening is not None
        shutdown = context.Event()
        stopping: list[bool] = []
        pulse = Pulse(
            context.Array("d", self.config.workers + 1, lock=False),
            self.config.workers,
            context.Array("b", self.config.workers, lock=False),
        )
        retiring: list[tuple[multiprocessing.process.BaseProcess, float]] = []  # (worker, when it must be gone)
        slots = [Slot(index) for index in range(self.config.workers)]
        if self.on_ready is not None:
            self.on_ready()  # in the master: the workers are spawned, not forked, and do not inherit it

        def start(slot: Slot) -> None:
            pulse.expect(slot.index, STARTUP_SECONDS)
            slot.process = context.Process(
                target=run_worker,
                kwargs={
                    "config": self.config,
                    "listening": listening,
                    "shutdown_event": shutdown,
                    "beats": pulse.beats,
                    "retiring": pulse.retiring,
                    "slot": slot.index,
                },
            )
            slot.process.start()
            slot.started = time.monotonic()

        def stop(*_: object) -> None:
            stopping.append(True)
            shutdown.set()

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers inherit "ignore"
        for slot in slots:
            start(slot)
        signal.signal(signal.SIGINT, previous)
        for name in ("SIGTERM", "SIGINT"):
            signal.signal(getattr(signal, name), stop)
        while not stopping:
            pulse.beat(self.config.workers)  # the supervisor's own: /healthz tells when it stops
            sentinels = [slot.process.sentinel for slot in slots if slot.process]
            wait([*sentinels, *(process.sentinel for process, _ in retiring)], timeout=HEARTBEAT_SECONDS)
            for slot in slots:
                if not stopping:
                    self._succeed(slot, slots, pulse, start, retiring)
                    self._look_after(slot, pulse, start)
            retiring[:] = [(process, deadline) for process, deadline in retiring if not gone(process, deadline)]
        # No new connection from here: the workers close their copies of the socket too as they
        # see the shutdown, and a client connecting meanwhile is refused rather than left waiting.
        listening.close()
        for process in [*(slot.process for slot in slots if slot.process is not None), *(p for p, _ in retiring)]:
            process.join(self.config.graceful_timeout + 5)
            if process.is_alive():
                process.kill()
        for directory in (self.config.last_good_dir, self.metrics_dir):
            if directory:
                shutil.rmtree(directory, ignore_errors=True)
        return 0

    def _succeed(
        self,
        slot: Slot,
        slots: list[Slot],
        pulse: Pulse,
        start: Callable[[Slot], None],
        retiring: list[tuple[multiprocessing.process.BaseProcess, float]],
    ) -> None:
        """Start the successor of a worker that began to retire while it drains, when no other
        worker would accept meanwhile (one worker); it is given graceful_timeout (and 5 s) to
        end, then killed. With others accepting, the successor starts once it has ended, as any
        worker's: a third worker beside two at their ceilings would not fit the memory limit."""
        if slot.process is None or not pulse.successor_due(slot.index):
            return
        if any(other is not slot and other.process is not None for other in slots):
            return
        retiring.append((slot.process, time.monotonic() + self.config.graceful_timeout + 5))
        log.info("worker %d retires; starting its successor now", slot.process.pid)
        slot.process = None
        start(slot)

    def _look_after(self, slot: Slot, pulse: Pulse, start: Callable[[Slot], None]) -> None:
        """Kill the slot's worker when it froze, note it when it exited, start one when it is due."""
        process, now = slot.process, time.monotonic()
        if process is not None and process.exitcode is None and pulse.silent_for(slot.index) > WATCHDOG_SECONDS:
            log.error(
                "worker %d froze (its event loop has not ticked for %.1fs): killing it; a fresh one takes its place",
                process.pid,
                pulse.silent_for(slot.index),
            )
            process.kill()
            process.join(5)
        if process is not None and process.exitcode is not None:
            metrics.worker_exited(process.pid or 0)
            delay = slot.exited(now, process.exitcode)
            log.warning(
                "worker %d exited with %s; starting a fresh one%s",
                process.pid,
                process.exitcode,
                f" in {delay:.1f}s (it keeps dying young)" if delay else "",
            )
            slot.process, slot.due = None, now + delay
        if slot.process is None and now >= slot.due:
            start(slot)


def gone(process: multiprocessing.process.BaseProcess, deadline: float) -> bool:
    """Whether a retiring worker has ended (killed when past its deadline), its metrics folded in."""
    if process.exitcode is None and time.monotonic() < deadline:
        return False
    if process.exitcode is None:
        log.error("worker %d did not end within its graceful timeout: killing it", process.pid)
        process.kill()
        process.join(5)
    metrics.worker_exited(process.pid or 0)
    return True


@dataclass
class Slot:
    """One worker's place in the supervisor: its process, and how fast it has been dying."""

    index: int
    process: multiprocessing.process.BaseProcess | None = None
    started: float = 0.0
    failures: int = 0
    due: float = 0.0

    def exited(self, now: float, exitcode: int) -> float:
        """Seconds to wait before the next worker: none for a retirement or for a worker that lived,
        else doubling from RESPAWN_FIRST_SECONDS to RESPAWN_MAX_SECONDS, with jitter."""
        if exitcode == 0 or now - self.started >= RESPAWN_STEADY_SECONDS:
            self.failures = 0 if exitcode == 0 else 1
        else:
            self.failures += 1
        if self.failures <= 1:
            return 0.0
        backoff = min(RESPAWN_MAX_SECONDS, RESPAWN_FIRST_SECONDS * 2 ** (self.failures - 2))
        return backoff * random.uniform(0.5, 1.0)


class Pulse:
    """Heartbeats in shared memory: one slot per worker, ticked by its event loop, and one for the
    supervisor. A value ahead of the clock is a grace period (a starting worker)."""

    def __init__(self, beats: Any, supervisor: int, retiring: Any) -> None:
        self.beats = beats
        self.supervisor = supervisor
        self.retiring = retiring  # one flag a slot: its worker is retiring, start its successor

    def retire(self, slot: int) -> None:
        self.retiring[slot] = 1

    def successor_due(self, slot: int) -> bool:
        """Whether the slot's worker has begun to retire (once: the flag is cleared)."""
        if not self.retiring[slot]:
            return False
        self.retiring[slot] = 0
        return True

    def beat(self, slot: int) -> None:
        self.beats[slot] = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the host

    def expect(self, slot: int, within: float) -> None:
        self.beats[slot] = time.monotonic() + within

    def silent_for(self, slot: int) -> float:
        return max(0.0, time.monotonic() - self.beats[slot])

    def problem(self) -> str | None:
        """What /healthz reports: a worker frozen and never replaced, or a supervisor that stopped."""
        if self.silent_for(self.supervisor) > 2 * WATCHDOG_SECONDS:
            return f"the supervisor has not ticked for {self.silent_for(self.supervisor):.0f}s"
        frozen = [slot for slot in range(self.supervisor) if self.silent_for(slot) > 2 * WATCHDOG_SECONDS]
        if frozen:
            return f"worker {frozen[0]} has been frozen for {self.silent_for(frozen[0]):.0f}s and was not replaced"
        return None


_fresh_connections: set[tuple] = set()  # in a worker: the peers of connections with no request yet
_open_connections = 0  # in a worker: connections from their handshake to their close
_listeners: list[asyncio.Server] = []  # in a worker: its servers on the shared socket


@dataclass
class WorkerState:
    """What a worker process knows of its supervisor: the heartbeats, its slot, the shutdown."""

    pulse: Pulse
    slot: int
    shutdown: Any  # a multiprocessing Event
    graceful_timeout: float


_worker: WorkerState | None = None  # set in each worker process


def run_worker(
    config: ServeConfig, listening: socket.socket, shutdown_event: Any, beats: Any, retiring: Any, slot: int
) -> None:
    """A worker process: `served_app()` on uvloop, over TLS on the shared socket, with its
    heartbeat; ended with the supervisor."""
    global _worker
    _worker = WorkerState(Pulse(beats, len(beats) - 1, retiring), slot, shutdown_event, config.graceful_timeout)
    end_with_parent()
    uvloop.run(serve_worker(config, listening))


async def serve_worker(config: ServeConfig, listening: socket.socket) -> None:
    """Serve until the worker ends (stop_between_requests ends the process)."""
    front = served_app()
    front.loop = asyncio.get_running_loop()
    metrics.batch.hold()  # flushed at every heartbeat (tick)
    protocol_config = UvicornConfig(
        front,
        http=Connection,
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=int(KEEPALIVE_TIMEOUT),
    )
    protocol_config.load()
    state = ServerState()
    server = await front.loop.create_server(
        lambda: Connection(protocol_config, state, {}),
        sock=listening,
        ssl=config.create_ssl_context(),
        ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=SSL_SHUTDOWN_SECONDS,
        backlog=BACKLOG,
    )
    _listeners.append(server)
    host, port = listening.getsockname()[:2]
    log.info("worker %d: Running on https://%s:%d", os.getpid(), f"[{host}]" if ":" in host else host, port)
    await tick(front)


class Refusal(Exception):
    """A request a connection refuses: answered `status` with a problem naming why, and closed."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def head_too_large() -> Refusal:
    return Refusal(431, "Request Header Fields Too Large", f"a request head is limited to {MAX_HEADER_BYTES} bytes")


class Corked:
    """A connection's transport whose writes within one turn of the event loop leave as one: an
    answer's head and body (two ASGI messages) go out in one TLS record and one send(2)."""

    __slots__ = ("transport", "loop", "pending")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class Connection(HttpToolsProtocol):
    """One client connection: uvicorn's HTTP/1.1 protocol (llhttp in C, through httptools), held
    to podmutate's bounds. A request's head may take MAX_HEADER_BYTES (more is answered 431 and
    the connection closed, however the head arrives: in pieces, or in one read after another
    request); a connection waiting on its client — for a first request, the rest of a head or a
    body, the next request, or the client to read an answer — is closed after READ_TIMEOUT
    without progress, so a slow or idle client holds a few KiB and a coroutine, and never for
    long; a request whose body has arrived is the app's, bounded by the review's deadline; at
    most MAX_PIPELINED requests may wait behind it (one more is answered 400 and the connection
    closed). Tracked from its handshake to its first request (a retiring worker waits for it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        global _open_connections
        super().connection_made(Corked(transport, self.loop))  # type: ignore[arg-type]
        # A head is counted twice over, and refused when either count passes MAX_HEADER_BYTES:
        # its URL and whole headers as the parser hands them over, and every read that is head
        # from its first byte to its last (the parser holds a header it has not finished).
        self.head_bytes = 0
        self.head_reads = 0
        self.in_head = True
        self.messages_ended = 0
        self.refusal: Refusal | None = None  # why podmutate stopped the parser
        self.progress = self.loop.time()  # when the client last sent or took something
        self.stalled: asyncio.TimerHandle | None = self.loop.call_later(READ_TIMEOUT, self._check_stall)
        _fresh_connections.add(self.client or ())
        _open_connections += 1  # a stopping worker drains them
        metrics.CONNECTIONS.inc()  # written at once, not batched: once a connection, beside its handshake

    def connection_lost(self, exc: Exception | None) -> None:
        global _open_connections
        _open_connections -= 1
        _fresh_connections.discard(self.client or ())
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # refused: nothing more is read
            return
        self.progress = self.loop.time()
        ended = self.messages_ended
        super().data_received(data)
        # No request ended in this read and a head is still open: the read is all head (a head
        # that began after a request in the same read is counted by its parts until the next).
        if self.parser is not None and self.in_head and self.messages_ended == ended:
            self.head_reads += len(data)
            if self.head_reads > MAX_HEADER_BYTES:
                self._close_with(head_too_large())

    def on_message_begin(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:
            self._stop_parser(
                Refusal(400, "Bad Request", f"at most {MAX_PIPELINED} requests may wait on one connection (pipelining)")
            )
        super().on_message_begin()
        self.in_head, self.head_bytes, self.head_reads = True, 0, 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # with ": " and CRLF
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self.messages_ended += 1
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def resume_writing(self) -> None:
        self.progress = self.loop.time()
        super().resume_writing()

    def _waiting_on_client(self) -> bool:
        """False only while the app has a whole request and its answer is not held up by the client."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.more_body:
            return True
        return self.flow.write_paused

    def _check_stall(self) -> None:
        self.stalled = None
        if self.transport.is_closing():
            return
        idle = self.loop.time() - self.progress
        if idle >= READ_TIMEOUT and self._waiting_on_client():
            self.transport.close()
            return
        self.stalled = self.loop.call_later(max(READ_TIMEOUT - idle, 1.0), self._check_stall)

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEADER_BYTES:
            self._stop_parser(head_too_large())

    def _stop_parser(self, refusal: Refusal) -> NoReturn:
        """Raised from a parser callback, a refusal stops the parser; uvicorn's protocol then
        answers 400 through send_400_response, which answers the refusal instead."""
        self.refusal = refusal
        raise refusal

    def send_400_response(self, msg: str) -> None:
        self._close_with(self.refusal or Refusal(400, "Bad Request", "not a valid HTTP/1.1 request"))

    def _close_with(self, refusal: Refusal) -> None:
        body = orjson.dumps(problem_payload(refusal.status, refusal.title, refusal.detail))
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (refusal.status, refusal.title.encode(), len(body), body)
        )
        self.parser = None  # type: ignore[assignment]  # nothing more of this connection is read
        self.transport.close()


def end_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies: never an orphaned worker."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)
