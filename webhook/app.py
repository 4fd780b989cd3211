"""The Flask app factory and its thin views over the admission core."""

import logging
import os

import orjson
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webhook import admission
from webhook.config import Config, ConfigWatcher, load_config
from webhook.deadline import DeadlineRunner, Overrun
from webhook.errors import ReviewError
from webhook.plugins import plugin_rows

log = logging.getLogger(__name__)

EXTENSION = "podmutate"


def create_app(config=None, *, config_path=None, environ=None, cert_dir=None, watch=False):
    """Create the podmutate WSGI app.

    `config` is a loaded Config, or a dict of settings laid over the file at `config_path`
    (else $PODMUTATE_CONFIG) and the built-in defaults. The file is watched and reloaded when
    it changes: checked before requests, and once a second from a thread when `watch` is true
    (as `podmutate serve` does). `cert_dir`, when given, must hold tls.crt and tls.key for /readyz to pass.
    """
    overrides = None if isinstance(config, Config) else config
    if overrides is not None or config is None:
        config = load_config(config_path, overrides=overrides, environ=environ)
    watcher = ConfigWatcher(config, environ=environ, overrides=overrides)
    if watch:
        watcher.watch()
    runner = DeadlineRunner(locate=lambda frame: admission.plugin_at(watcher.current().plugin_manager, frame))
    app = Flask(__name__)
    app.extensions[EXTENSION] = watcher
    app.extensions[f"{EXTENSION}.deadline"] = runner
    app.json.sort_keys = False

    @app.post("/mutate")
    def mutate():
        body = read_body(watcher.current().max_body_bytes)
        try:
            admission_review = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return problem(400, "Bad Request", f"body is not JSON: {error}")
        current = watcher.current()
        try:  # a ReviewError raised by review() in the runner's thread comes back here
            answer = runner.call(lambda: admission.review(admission_review, current), current.review_timeout_seconds)
        except ReviewError as error:
            return problem(400, "Bad Request", str(error))
        except Overrun as overrun:
            answer = admission.overrun_response(admission_review, current, overrun)
        return Response(orjson.dumps(answer), mimetype="application/json")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        current = watcher.current()
        missing = [name for name in ("tls.crt", "tls.key")
                   if cert_dir and not os.path.exists(os.path.join(cert_dir, name))]
        if missing:
            return problem(503, "Service Unavailable", f"certificate files missing in {cert_dir}: {missing}")
        return {"status": "ok", "plugins": [row["name"] for row in plugin_rows(current.plugin_manager)]}

    @app.get("/plugins")
    def plugins():
        current = watcher.current()
        return jsonify(plugin_rows(current.plugin_manager, current.disabled_plugins))

    @app.errorhandler(HTTPException)
    def http_error(error):
        return problem(error.code, error.name, error.description)

    @app.errorhandler(Exception)
    def unexpected_error(error):
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", f"{type(error).__name__}: the error is logged")

    return app


def read_body(cap):
    """The request body, refused with 413 past `cap` bytes without reading more than cap + 1.

    A Content-Length over the cap is refused before any of the body is read. A chunked body
    (no Content-Length) is read from the server's input stream, which ends with the chunks.
    """
    length = request.content_length
    if length is not None:
        if length > cap:
            raise RequestEntityTooLarge(f"the body has {length} bytes; the limit is {cap}")
        return request.get_data(cache=False)
    body = request.environ["wsgi.input"].read(cap + 1)
    if len(body) > cap:
        raise RequestEntityTooLarge(f"the chunked body is longer than the limit of {cap} bytes")
    return body


def problem(code, title, detail):
    """A JSON error body naming what was wrong."""
    return jsonify({"code": code, "error": title, "message": detail}), code
