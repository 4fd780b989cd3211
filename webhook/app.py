"""The Flask app factory and its thin views over the admission core."""

import logging
import os
import time
from collections.abc import Callable, Mapping

import orjson
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from certs import CERT_FILE, KEY_FILE
from webhook import admission, budget, metrics, wire
from webhook.admission import Answer
from webhook.deadline import DeadlineRunner, Overrun
from webhook.engine import Engine, EngineWatcher, load_engine_or_last_good
from webhook.errors import ReviewError, problem_payload, too_large
from webhook.logs import fields_text
from webhook.ops.record import Recorder
from webhook.plugins import plugin_rows

log = logging.getLogger(__name__)

EXTENSION = "podmutate"
Reply = tuple[int, bytes]  # an answer: its status and its JSON body


def create_app(
    engine: Engine | None = None,
    *,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    cert_dir: str | None = None,
    watch: bool = False,
    last_good_config: str | None = None,
    liveness: Callable[[], str | None] | None = None,
    review_memory: int = budget.DEFAULT_BUDGET,
    timed_by_server: bool = False,
) -> Flask:
    """Create the podmutate WSGI app.

    `engine` is a loaded Engine; without one, the configuration is loaded from `config_path`
    (else $PODMUTATE_CONFIG) over the built-in defaults. With `watch` (as `podmutate serve`
    does), the file is checked once a second from a thread and reloaded when it changes.
    `cert_dir`, when given, must hold the serving pair for /readyz to pass. `last_good_config`
    is where the last configuration taken is kept: an app created while the file is bad starts
    from it (and follows the file from there). `liveness()` says what is wrong with the server
    beyond this app, for /healthz (None when nothing is). `review_memory`: the bytes of memory the
    reviews in flight may hold together (webhook.budget).

    Each review is answered within review_timeout_seconds: the view waits for it in a thread of
    the app's DeadlineRunner (extension "podmutate.deadline"), or, with `timed_by_server`, the
    server runs the whole request in one of that runner's threads and waits for it there, and
    answers an overrun with the extension "podmutate.overran" (as `podmutate serve` does:
    webhook.server), so that a review takes one hand-off between threads, not two; the server
    calls the view's review of a body, extension "podmutate.review", directly.
    """
    refused = False
    if engine is None:
        engine, refused = load_engine_or_last_good(config_path, last_good=last_good_config, environ=environ)
    watcher = EngineWatcher(engine, environ=environ, last_good=last_good_config, refused=refused)
    if watch:
        watcher.watch()
    runner = DeadlineRunner(locate=lambda frame: admission.plugin_at(watcher.current().plugins, frame))
    memory = budget.MemoryBudget(review_memory)
    recorder = Recorder()  # keeps nothing unless record.enabled
    app = Flask(__name__)
    app.extensions[EXTENSION] = watcher
    app.extensions[f"{EXTENSION}.deadline"] = runner
    app.json.sort_keys = False  # type: ignore[attr-defined]  # the default provider has it

    def review_body(body: bytes) -> Reply:
        """The answer to a POST /mutate whose body has been read whole (at most max_body_bytes):
        (status, JSON). The Flask view answers with it; `podmutate serve` calls it directly
        (extension "podmutate.review"), without Flask's request machinery (webhook.server)."""
        metrics.batch.inc(metrics.IN_FLIGHT)
        try:
            started = time.perf_counter()
            current = watcher.current()
            metrics.batch.observe(metrics.REQUEST_BYTES, len(body))
            cost = budget.cost_of(body)
            beyond = budget.beyond_bound(body, cost, memory.total)
            if beyond:
                return unreviewed(body, current, started, beyond, metrics.BEYOND_WORK_BOUND)
            try:  # at most half the review's own budget: the API server's timeoutSeconds is above the sum
                memory.take(cost, timeout=current.config.review_timeout_seconds / 2)
            except budget.Busy as busy:
                return unreviewed(body, current, started, f"no memory for the review in time: {busy}", metrics.BUSY)
            try:
                return reviewed(body, current, started)
            finally:
                memory.give(cost)  # once reviewed() has returned, and the review's trees are gone with it
        finally:
            metrics.batch.inc(metrics.IN_FLIGHT, amount=-1)

    app.extensions[f"{EXTENSION}.review"] = review_body

    @app.post("/mutate")
    def mutate() -> Response:
        status, payload = review_body(read_body(watcher.current().config.max_body_bytes))
        return Response(payload, status=status, mimetype="application/json")

    def reviewed(body: bytes, current: Engine, started: float) -> Reply:
        try:
            admission_review = orjson.loads(body)
            attribute = log.isEnabledFor(logging.DEBUG)  # which plugin changed what: only for the debug line

            def review() -> Answer:
                return admission.answer(admission_review, current, attribute=attribute)

            # a ReviewError raised by answer() in the runner's thread comes back here
            answer = review() if timed_by_server else runner.call(review, current.config.review_timeout_seconds)
        except (orjson.JSONDecodeError, ReviewError) as error:
            detail = f"body is not JSON: {error}" if isinstance(error, orjson.JSONDecodeError) else str(error)
            observe(None, time.perf_counter() - started, detail)
            return problem_reply(400, "Bad Request", detail)
        except Overrun as overrun:
            return overran(admission_review, current, started, overrun)
        encoded = wire.encode(answer.response)
        observe(answer, time.perf_counter() - started)
        if answer.mutation is not None and answer.mutation.job_type:
            recorder.keep(current, admission_review, answer.mutation.job_type)
        return 200, encoded

    def overran(admission_review: dict, current: Engine, started: float, overrun: Overrun) -> Reply:
        answer = admission.overrun_answer(admission_review, current.config, overrun)
        observe(answer, time.perf_counter() - started)
        return 200, wire.encode(answer.response)

    def overran_in_server(body: bytes, overrun: Overrun, started: float) -> Reply:
        """The answer to a request the server stopped waiting for: a review's, by failure_mode;
        for any other request, 503."""
        try:
            admission_review = orjson.loads(body)
        except orjson.JSONDecodeError:
            admission_review = None
        if not isinstance(admission_review, dict):
            return problem_reply(503, "Service Unavailable", f"{overrun}")
        return overran(admission_review, watcher.current(), started, overrun)

    app.extensions[f"{EXTENSION}.overran"] = overran_in_server

    def unreviewed(body: bytes, current: Engine, started: float, reason: str, case: str) -> Reply:
        uid = budget.uid_of(body)
        if uid is None:
            observe(None, time.perf_counter() - started, "no request.uid")
            return problem_reply(400, "Bad Request", "request.uid is missing, or the body is not JSON up to it")
        metrics.batch.inc(metrics.UNREVIEWED, (case,))
        answer = admission.unreviewed_answer(uid, current.config, reason, case)
        observe(answer, time.perf_counter() - started)
        return 200, wire.encode(answer.response)

    probes = Probes(watcher, liveness, cert_dir)
    app.extensions[f"{EXTENSION}.probes"] = probes

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        status, payload = probes.live()
        return jsonify(payload), status

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        status, payload = probes.ready()
        return jsonify(payload), status

    @app.get("/plugins")
    def plugins() -> Response:
        current = watcher.current()
        return jsonify(plugin_rows(current.plugins, current.config.disabled_plugins))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return problem(error.code or 500, error.name, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> tuple[Response, int]:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", f"{type(error).__name__}: the error is logged")

    return app


class Probes:
    """What GET /healthz and GET /readyz answer: (status, JSON payload). Cheap and never blocking:
    `podmutate serve` answers them on its event loop, without the app's thread (webhook.server)."""

    def __init__(self, watcher: EngineWatcher, liveness: Callable[[], str | None] | None, cert_dir: str | None) -> None:
        self.watcher = watcher
        self.liveness = liveness
        self.cert_dir = cert_dir

    def live(self) -> tuple[int, dict]:
        """Alive: the server beyond this app says nothing is wrong, and the configuration is watched."""
        wrong = self.liveness() if self.liveness else None
        if not self.watcher.alive():
            wrong = "the configuration watcher has stopped checking the file"
        return (503, problem_payload(503, "Service Unavailable", wrong)) if wrong else (200, {"status": "ok"})

    def ready(self) -> tuple[int, dict]:
        """Ready: the serving pair is there (when a directory was given), and the plugins loaded."""
        directory = self.cert_dir
        missing = [
            name for name in (CERT_FILE, KEY_FILE) if directory and not os.path.exists(os.path.join(directory, name))
        ]
        if missing:
            detail = f"certificate files missing in {directory}: {missing}"
            return 503, problem_payload(503, "Service Unavailable", detail)
        return 200, {"status": "ok", "plugins": [row["name"] for row in plugin_rows(self.watcher.current().plugins)]}


def observe(answer: Answer | None, seconds: float, bad_request: str = "") -> None:
    """Count a review in the metrics and log it: one line at debug, or at warning when it failed,
    overran or was denied. No pod content: ids, names, the job type, the plugins, sizes and time."""
    outcome = answer.outcome if answer else wire.BAD_REQUEST
    metrics.batch.inc(metrics.REVIEWS, (outcome, answer.job_type if answer else wire.NO_JOB_TYPE))
    metrics.batch.observe(metrics.REVIEW_DURATION, seconds, (outcome,))
    mutation = answer.mutation if answer else None
    if answer and answer.overrun:
        metrics.batch.inc(metrics.OVERRUNS, (answer.plugin,))
    elif outcome == wire.FAILED and answer and answer.plugin:
        metrics.batch.inc(metrics.PLUGIN_FAILURES, (answer.plugin,))
    for plugin, plugin_seconds in mutation.timings if mutation else ():
        metrics.batch.observe(metrics.PLUGIN_DURATION, plugin_seconds, (plugin,))
    if answer and outcome != wire.BAD_REQUEST:
        metrics.batch.observe(metrics.PATCH_OPERATIONS, len(mutation.patch) if mutation else 0)
    level = logging.WARNING if outcome in (wire.FAILED, wire.DENIED) else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    request = answer.request if answer else None
    patch = answer.response["response"].get("patch", "") if answer else ""
    fields = {
        "uid": request.uid if request else None,
        "pod": f"{request.namespace}/{request.name}" if request else None,
        "dry_run": request.dry_run if request else None,
        "job_type": answer.job_type if answer else None,
        "outcome": outcome,
        "changed_by": ",".join(mutation.changed_by) if mutation and mutation.touched is not None else None,
        "plugin": answer.plugin if answer else None,
        "duration_ms": round(seconds * 1000, 3),
        "patch_operations": len(mutation.patch) if mutation else 0,
        "patch_bytes": len(patch),  # base64, as sent
        "error": (answer.message if answer else bad_request) or None,
    }
    log.log(level, "review %s", fields_text(fields), extra={"review": fields})


def read_body(cap: int) -> bytes:
    """The request body, refused with 413 past `cap` bytes without reading more than cap + 1.

    A Content-Length over the cap is refused before any of the body is read. A chunked body
    (no Content-Length) is read from the server's input stream, which ends with the chunks.
    """
    length = request.content_length
    if length is not None:
        if length > cap:
            raise RequestEntityTooLarge(too_large(cap, length))
        return request.get_data(cache=False)
    body = request.environ["wsgi.input"].read(cap + 1)
    if len(body) > cap:
        raise RequestEntityTooLarge(too_large(cap))
    return body


def problem(code: int, title: str, detail: str) -> tuple[Response, int]:
    """A JSON error body naming what was wrong."""
    return jsonify(problem_payload(code, title, detail)), code


def problem_reply(code: int, title: str, detail: str) -> Reply:
    """The same, as (status, JSON)."""
    return code, orjson.dumps(problem_payload(code, title, detail))
