"""Through a real `podmutate serve`: its workers, TLS on 127.0.0.1, certificate verification on."""

import json
import socket
import ssl
import time

import pytest
import requests

from tests.helpers import apply_answer, decode_patch, job_pod
from tools.harness.pods import review
from tools.harness.processes import serve, wait_for, worker_pids

CAP = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory, example_plugins):
    tmp_path = tmp_path_factory.mktemp("serve")
    with serve(tmp_path, config={"max_body_bytes": CAP}, env={"PYTHONPATH": example_plugins}, workers=2) as served:
        yield served


def assert_still_serving(server):
    assert server.get("/healthz").json() == {"status": "ok"}


def test_a_job_pod_is_mutated_over_verified_https(server):
    pod = job_pod("sync")
    response = server.post("/mutate?timeout=10s", review(pod, uid="abc"))
    assert response.status_code == 200
    answer = response.json()
    assert answer["response"]["uid"] == "abc"
    mutated = apply_answer(pod, answer)
    assert [container["name"] for container in mutated["spec"]["initContainers"]] == ["init"]
    assert mutated["metadata"]["labels"]["example.com/team"] == "data-platform"


@pytest.mark.served
def test_an_unverified_client_is_refused_by_tls(server):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url + "/healthz", timeout=5)


@pytest.mark.served
def test_tls_below_1_2_is_refused(server):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1  # the point is to offer an old version
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass


BAD_BODIES = [
    pytest.param(b"{not json", "body is not JSON", id="not-json"),
    pytest.param(b"", "body is not JSON", id="empty"),
    pytest.param(b'"just a string"', "expected an AdmissionReview object, got a string", id="json-string"),
    pytest.param(
        json.dumps({"kind": "Pod", "apiVersion": "v1"}).encode(), "apiVersion: 'v1' is not supported", id="not-a-review"
    ),
    pytest.param(
        json.dumps(
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}
        ).encode(),
        "apiVersion: 'admission.k8s.io/v1beta1'",
        id="wrong-api-version",
    ),
]


@pytest.mark.parametrize("body, message", BAD_BODIES)
def test_bad_bodies_get_400_naming_the_problem(server, body, message):
    response = server.post("/mutate", body)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert message in response.json()["message"]
    assert_still_serving(server)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("uid", None, "request.uid is missing"),
        ("uid", 7, "request.uid: expected a string, got a number"),
        ("operation", ["CREATE"], "request.operation: expected a string, got an array"),
        ("dryRun", "true", "request.dryRun: expected a boolean, got a string"),
        ("object", "pod", "request.object: expected an object or null, got a string"),
    ],
)
def test_missing_uid_and_fields_of_the_wrong_type_get_400(server, field, value, message):
    body = review(job_pod("sync"))
    if value is None:
        del body["request"][field]
    else:
        body["request"][field] = value
    response = server.post("/mutate", body)
    assert response.status_code == 400
    assert response.json()["message"] == message
    assert_still_serving(server)


@pytest.mark.parametrize(
    "part, value, message",
    [
        ("metadata", ["name", "x"], "request.object.metadata: expected an object, got an array"),
        ("metadata", "x", "request.object.metadata: expected an object, got a string"),
        ("spec", 7, "request.object.spec: expected an object, got a number"),
        ("labels", ["job_type=sync"], "request.object.metadata.labels: expected an object, got an array"),
    ],
)
def test_object_parts_of_the_wrong_type_get_400_not_500(server, part, value, message):
    body = review(job_pod("sync"))
    pod = body["request"]["object"]
    (pod["metadata"] if part == "labels" else pod)[part] = value
    response = server.post("/mutate", body)
    assert response.status_code == 400
    assert response.json()["message"] == message
    assert_still_serving(server)


def tls_socket(server):
    context = ssl.create_default_context(cafile=server.ca_file)
    return context.wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=10), server_hostname="127.0.0.1"
    )


@pytest.mark.served
def test_a_body_over_the_cap_gets_413_before_it_is_sent(server):
    # Announce a body far larger than the cap (past what is drained) and send almost none of it:
    # the answer must come at once, from the Content-Length alone, without waiting for the body.
    with tls_socket(server) as connection:
        connection.sendall(
            f"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1000 * CAP}\r\n\r\n{{".encode()
        )
        answer = b""
        while b"}" not in answer.partition(b"\r\n\r\n")[2]:
            answer += connection.recv(65536)
    head, _, body = answer.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert json.loads(body)["error"] == "Request Entity Too Large"
    assert_still_serving(server)


@pytest.mark.served
def test_a_chunked_body_over_the_cap_gets_413(server):
    def chunks():
        for _ in range(CAP // 1024 + 8):
            yield b" " * 1024

    response = server.session.post(
        server.url + "/mutate",
        data=chunks(),
        timeout=10,
        verify=server.ca_file,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert_still_serving(server)


@pytest.mark.served
def test_wrong_method_gets_a_json_405(server):
    response = server.get("/mutate")
    assert response.status_code == 405
    assert response.json()["code"] == 405


@pytest.mark.served
def test_a_raising_plugin_in_ignore_mode_admits_unpatched_with_a_warning(server):
    pod = job_pod("sync", annotations={"example.com/explode": "true"})
    answer = server.post("/mutate", review(pod)).json()["response"]
    assert answer["allowed"] is True
    assert "patch" not in answer
    assert answer["warnings"] == [
        "podmutate: plugin 'explode' failed: RuntimeError: boom on purpose; the pod was admitted unmutated"
    ]
    assert "plugin 'explode' failed" in server.log()
    assert "jobs/source-pg-sync-1-0-abcde" in server.log()


@pytest.mark.served
@pytest.mark.parametrize(
    "how, raised",
    [
        ("exit", "SystemExit: 3"),
        ("interrupt", "KeyboardInterrupt: "),
        ("generator-exit", "GeneratorExit: "),
        ("escape", "Escape: out of here"),
    ],
)
def test_a_plugin_raising_any_base_exception_fails_only_its_review(server, how, raised):
    """Before, SystemExit and the like gave a 500 with an empty body, and ended the worker."""
    workers = worker_pids(server.process.pid)
    pod = job_pod("sync", annotations={"example.com/misbehave": how})
    for _ in range(4):  # on every worker, as like as not
        response = server.post("/mutate", review(pod), headers={"Connection": "close"})
        assert response.status_code == 200
        answer = response.json()["response"]
        assert answer["allowed"] is True and "patch" not in answer
        assert answer["warnings"] == [f"podmutate: plugin 'misbehave' failed: {raised}; the pod was admitted unmutated"]
    assert worker_pids(server.process.pid) == workers
    assert_still_serving(server)


@pytest.mark.served
def test_a_raising_plugin_in_fail_mode_denies(tmp_path, example_plugins):
    with serve(tmp_path, config="failure_mode: fail\n", env={"PYTHONPATH": example_plugins}) as failing:
        pod = job_pod("sync", annotations={"example.com/explode": "true"})
        answer = failing.post("/mutate", review(pod)).json()["response"]
        assert answer["allowed"] is False
        assert "plugin 'explode' failed" in answer["status"]["message"]
        assert "patch" not in answer
        assert failing.post("/mutate", review(job_pod("sync"))).json()["response"]["allowed"] is True


@pytest.mark.served
def test_readyz_lists_the_plugins(server):
    body = server.get("/readyz").json()
    assert body["status"] == "ok"
    assert {"profiles", "init_container", "team_labels"} <= set(body["plugins"])


@pytest.mark.served
def test_the_config_file_is_reloaded_and_a_bad_version_is_refused(tmp_path):
    with serve(tmp_path, config="job_types:\n  sync:\n    labels: {tier: bronze}\n") as served:
        config_path = tmp_path / "podmutate.yaml"

        def tier():
            answer = served.post("/mutate", review(job_pod("sync"))).json()
            return apply_answer(job_pod("sync"), answer)["metadata"]["labels"].get("tier")

        assert tier() == "bronze"
        config_path.write_text("job_types:\n  sync:\n    labels: {tier: gold}\n")
        assert wait_for(lambda: tier() == "gold")
        config_path.write_text("job_types:\n  sync:\n    resources: {limits: {cpu: lots}}\n")
        assert wait_for(lambda: "configuration" in served.log() and "refused" in served.log())
        assert "job_types.sync.resources.limits.cpu: 'lots'" in served.log()
        assert tier() == "gold"
        assert decode_patch(served.post("/mutate", review(job_pod("sync"))).json())


@pytest.mark.served
def test_a_hung_plugin_cannot_hold_a_review_and_stuck_workers_are_replaced(tmp_path, example_plugins):
    config = {"review_timeout_seconds": 0.5}
    with serve(tmp_path, config=config, env={"PYTHONPATH": example_plugins}, workers=2) as served:
        hanging = review(job_pod("sync", annotations={"example.com/hang": "true"}))
        fresh = {"Connection": "close"}  # a worker being replaced closes its connections, as servers do
        for _ in range(12):  # more than both workers' threads together: each answered on time
            started = time.monotonic()
            answer = served.post("/mutate", hanging, headers=fresh).json()["response"]
            assert time.monotonic() - started < 5
            assert answer["allowed"] is True and "patch" not in answer
            assert answer["warnings"] == [
                "podmutate: plugin 'hang' did not finish within 0.5s; the pod was admitted unmutated"
            ]
        assert "plugin 'hang' overran its budget of 0.5s" in served.log()
        assert wait_for(lambda: "stops and a fresh one takes its place" in served.log())
        normal = served.post("/mutate", review(job_pod("sync")), headers=fresh).json()["response"]
        assert "patch" in normal  # ordinary job pods are still mutated
        overruns = ("podmutate_review_deadline_overruns_total", (("plugin", "hang"),))
        # the retired worker's counts included (a worker writes them at its heartbeat, and as it ends)
        samples = wait_for(lambda: (found := served.metrics()).get(overruns) == 12 and found)
        assert samples and samples[overruns] == 12
        assert ("podmutate_plugin_failures_total", (("plugin", "hang"),)) not in samples


@pytest.mark.served
def test_slow_and_idle_clients_cannot_stall_the_server(server):
    from tools.harness.slow_clients import slow_connections

    with slow_connections(server.port, server.ca_file, count=64) as held:
        assert held == 64
        for _ in range(20):  # fresh reviews keep being answered while all 64 hang on
            fresh = requests.post(
                server.url + "/mutate",
                data=json.dumps(review(job_pod("sync"))),
                verify=server.ca_file,
                timeout=5,
                headers={"Content-Type": "application/json"},
            )
            assert fresh.status_code == 200 and "patch" in fresh.json()["response"]
    assert_still_serving(server)


@pytest.mark.served
def test_a_4_mib_body_gets_a_413_that_curl_and_http_client_can_read(server):
    """Before, such clients often got a broken pipe or SSLEOFError instead of the answer."""
    import http.client
    import shutil
    import subprocess

    body = b" " * (4 * 1024 * 1024)
    context = ssl.create_default_context(cafile=server.ca_file)
    for _ in range(3):
        connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=30)
        connection.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        assert answer.status == 413
        assert "the limit is" in json.loads(answer.read())["message"]
        connection.close()
    if shutil.which("curl"):
        result = subprocess.run(
            [
                "curl",
                "-sS",
                "--cacert",
                server.ca_file,
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"{server.url}/mutate",
            ],
            input=body,
            capture_output=True,
            timeout=60,
        )
        assert result.stdout == b"413", result.stderr
    assert_still_serving(server)
