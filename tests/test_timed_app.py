"""The app behind a worker's event loop (webhook.server.TimedApp): a POST to /mutate is answered by
the Flask view's own review of the body, called directly, and gets what the view answers; any
other request goes through Flask; an unexpected error is a logged 500 with a JSON problem, as
Flask's handler makes it; an overrun is answered by failure_mode."""

import asyncio
import json
import time

import orjson
import pytest

from tests.helpers import apply_answer, job_pod
from tools.harness.pods import review
from webhook.app import create_app
from webhook.engine import load_engine
from webhook.server import TimedApp


def served(app, method, path, body=b"", budget=5.0, review_body=None):
    """What TimedApp answers for one request: (status, headers as a dict, body)."""
    timed = TimedApp(
        app,
        review_body or app.extensions["podmutate.review"],
        2,
        app.extensions["podmutate.deadline"],
        lambda: budget,
        app.extensions["podmutate.overran"],
    )
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"timeout=10s",
        "root_path": "",
        "headers": [(b"host", b"podmutate"), (b"content-length", str(len(body)).encode())],
        "server": ("127.0.0.1", 8443),
        "client": ("127.0.0.1", 50000),
    }
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(timed(scope, body, send))
    start, answer = sent
    assert start["type"] == "http.response.start" and answer["type"] == "http.response.body"
    headers = dict(start["headers"])
    assert int(headers[b"content-length"]) == len(answer["body"])
    return start["status"], headers, answer["body"]


@pytest.fixture
def app():
    return create_app(load_engine(None), timed_by_server=True)


def test_a_review_is_answered_as_the_flask_view_answers_it(app):
    pod = job_pod("sync")
    body = orjson.dumps(review(pod, uid="same"))
    status, headers, answer = served(app, "POST", "/mutate", body)
    through_flask = create_app(load_engine(None)).test_client().post("/mutate", data=body)
    assert (status, headers[b"content-type"]) == (200, b"application/json")
    assert json.loads(answer) == through_flask.get_json()
    assert apply_answer(pod, json.loads(answer))["spec"]["initContainers"][0]["name"] == "init"


def test_a_body_that_is_not_a_review_gets_400_naming_it(app):
    status, _, answer = served(app, "POST", "/mutate", b"{not json")
    assert status == 400 and "body is not JSON" in json.loads(answer)["message"]


def test_other_requests_go_through_flask(app):
    status, headers, answer = served(app, "GET", "/plugins")
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert "tmp_volume" in [row["name"] for row in json.loads(answer)]
    status, _, answer = served(app, "GET", "/nowhere")
    assert status == 404 and json.loads(answer)["code"] == 404


def test_an_unexpected_error_is_a_logged_500_with_a_json_problem(app, caplog):
    def broken(body):
        raise LookupError("a bug")

    status, headers, answer = served(app, "POST", "/mutate", b"{}", review_body=broken)
    assert (status, headers[b"content-type"]) == (500, b"application/json")
    assert json.loads(answer)["message"] == "LookupError: the error is logged"
    assert "unexpected error answering POST /mutate" in caplog.text and "a bug" in caplog.text


def test_a_review_past_its_budget_is_answered_by_failure_mode(app):
    def slow(body):
        time.sleep(0.5)
        return 200, b"{}"

    status, _, answer = served(app, "POST", "/mutate", orjson.dumps(review(job_pod("sync"), uid="late")), 0.05, slow)
    response = json.loads(answer)["response"]
    assert status == 200 and response["uid"] == "late" and response["allowed"] is True
    assert "patch" not in response and any("did not finish within" in warning for warning in response["warnings"])
