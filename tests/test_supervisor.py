"""The supervisor of `podmutate serve`: workers watched and replaced, signals, shutdown, the port."""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests

from tests.helpers import apply_answer, job_pod
from tools.harness.pods import review
from tools.harness.processes import PODMUTATE, serve, wait_for, worker_pids
from webhook.server import WATCHDOG_SECONDS

pytestmark = pytest.mark.served  # real servers, processes or sockets on this machine


def mutated(served, **kwargs):
    answer = served.post("/mutate", review(job_pod("sync")), headers={"Connection": "close"}, **kwargs).json()
    return apply_answer(job_pod("sync"), answer)


def replaced(served, before, count=1):
    """True once `count` of the workers `before` are gone and as many new ones serve."""
    now = worker_pids(served.process.pid)
    return len(now) == len(before) and len(set(before) - set(now)) >= count


def test_a_worker_frozen_by_a_plugin_holding_the_gil_is_killed_and_replaced(tmp_path, example_plugins):
    """Before, such a worker stayed frozen for good, and two such reviews took the server down."""
    with serve(tmp_path, env={"PYTHONPATH": example_plugins}, workers=2) as served:
        before = worker_pids(served.process.pid)
        frozen = review(job_pod("sync", annotations={"example.com/misbehave": "freeze"}))
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError):  # the review in flight on it is the one lost
            served.post("/mutate", frozen, timeout=60)
        assert time.monotonic() - started < WATCHDOG_SECONDS + 10
        assert wait_for(lambda: replaced(served, before), timeout=30)
        assert "froze (its event loop has not ticked for" in served.log()
        assert served.get("/healthz").status_code == 200
        assert "initContainers" in mutated(served)["spec"]


def test_a_lone_worker_that_retires_has_its_successor_serving_while_it_drains(tmp_path, example_plugins):
    """Before, a retiring worker's successor started only once it had ended: with one worker and a
    client holding a request unfinished, nobody accepted for up to the graceful timeout (30 s),
    and fresh reviews timed out in their TLS handshake."""
    with serve(tmp_path, env={"PYTHONPATH": example_plugins}, workers=1) as served:
        (first,) = worker_pids(served.process.pid)
        context = ssl.create_default_context(cafile=served.ca_file)
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", served.port)), server_hostname="127.0.0.1"
        ) as held:
            held.sendall(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n{")  # stops short
            leaking = review(job_pod("sync", annotations={"example.com/misbehave": "leak"}))  # keeps 4 MiB a review
            for _ in range(40):
                if "over the ceiling of" in served.log():
                    break
                served.post("/mutate", leaking, headers={"Connection": "close"}, timeout=10)
            assert wait_for(lambda: "retires; starting its successor now" in served.log(), timeout=30)
            assert "initContainers" in mutated(served, timeout=10)["spec"]  # answered by the successor
            assert first in worker_pids(served.process.pid)  # the first one still drains, held by the short body
        assert wait_for(lambda: first not in worker_pids(served.process.pid), timeout=60)


def test_a_stopped_worker_is_replaced_and_a_stopped_supervisor_fails_liveness(tmp_path):
    with serve(tmp_path, workers=2) as served:
        before = worker_pids(served.process.pid)
        os.kill(before[0], signal.SIGSTOP)
        assert wait_for(lambda: replaced(served, before), timeout=30)
        os.kill(served.process.pid, signal.SIGSTOP)  # nothing watches the workers now
        try:
            assert wait_for(lambda: served.get("/healthz").status_code == 503, timeout=30)
            assert "the supervisor has not ticked for" in served.get("/healthz").json()["message"]
        finally:
            os.kill(served.process.pid, signal.SIGCONT)
        assert wait_for(lambda: served.get("/healthz").status_code == 200, timeout=10)


def test_a_bad_configuration_and_lost_workers_is_no_outage(tmp_path):
    """Before, a worker started while the file was bad exited, was respawned 91 times a minute,
    and once both were gone nothing served."""
    with serve(tmp_path, config="job_types:\n  sync:\n    labels: {tier: gold}\n", workers=2) as served:
        config_path = tmp_path / "podmutate.yaml"
        config_path.write_text("job_types:\n  sync:\n    resources: {limits: {cpu: lots}}\n")
        assert wait_for(lambda: served.log().count("refused, keeping the last good one") >= 2, timeout=30)
        before = worker_pids(served.process.pid)
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: replaced(served, before, count=2), timeout=30)
        assert wait_for(lambda: served.get("/readyz").status_code == 200)
        assert wait_for(lambda: served.log().count("refused, starting from the last good one") == 2, timeout=30)
        assert mutated(served)["metadata"]["labels"]["tier"] == "gold"
        time.sleep(3)  # the new workers stay up: no crash loop
        assert served.log().count("exited with") == 2
        config_path.write_text("job_types:\n  sync:\n    labels: {tier: platinum}\n")  # and follow the file
        assert wait_for(lambda: mutated(served)["metadata"]["labels"]["tier"] == "platinum")


def test_sighup_is_ignored_and_orphans_nothing(tmp_path):
    """Before, SIGHUP killed the supervisor and left its workers serving, unsupervised."""
    with serve(tmp_path, workers=2) as served:
        before = worker_pids(served.process.pid)
        os.kill(served.process.pid, signal.SIGHUP)
        time.sleep(1)
        assert served.process.poll() is None and worker_pids(served.process.pid) == before
        assert served.get("/healthz").status_code == 200


def test_workers_end_with_their_supervisor(tmp_path):
    with serve(tmp_path, workers=2) as served:
        before = worker_pids(served.process.pid)
        os.kill(served.process.pid, signal.SIGKILL)
        served.process.wait()
        assert wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in before), timeout=40)


def connect_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_under_keep_alive_load_refuses_new_connections_at_once_and_ends_promptly(tmp_path):
    """Before, it took the full 30 s graceful timeout in 4 of 6 runs, and the listening socket
    stayed open: reconnects hung in the TLS handshake."""
    with serve(tmp_path, workers=2) as served:
        stop = threading.Event()

        def load():
            session = requests.Session()  # keep-alive
            while not stop.is_set():
                try:
                    session.post(
                        served.url + "/mutate",
                        data=json.dumps(review(job_pod("sync"))),
                        verify=served.ca_file,
                        timeout=5,
                    )
                except requests.RequestException:
                    session = requests.Session()

        clients = [threading.Thread(target=load, daemon=True) for _ in range(8)]
        for client in clients:
            client.start()
        time.sleep(2)
        started = time.monotonic()
        served.process.terminate()
        try:
            assert wait_for(lambda: connect_refused(served.port), timeout=3)
            served.process.wait(timeout=15)
            assert time.monotonic() - started < 15
        finally:
            stop.set()


def test_sigterm_answers_every_request_sent_on_an_open_keep_alive_connection(tmp_path):
    """A stopping worker does not close a keep-alive connection under a client that is using it:
    each request sent on one is answered, the answer after SIGTERM saying Connection: close. Before,
    the worker dropped its connections once nothing was in flight, and a request the API server
    had just sent on one failed its pod's create with EOF (under failurePolicy Fail, in a rollout)."""
    body = json.dumps(review(job_pod("sync")))
    with serve(tmp_path, workers=2) as served:
        context = ssl.create_default_context(cafile=served.ca_file)
        answered, told_to_close, failures = [], [], []
        terminated = threading.Event()

        def client():
            connection = http.client.HTTPSConnection("127.0.0.1", served.port, context=context, timeout=10)
            while True:
                try:
                    connection.request("POST", "/mutate", body, {"Content-Type": "application/json"})
                    answer = connection.getresponse()
                    answer.read()
                except (OSError, http.client.HTTPException) as error:
                    failures.append(f"{'after' if terminated.is_set() else 'before'} SIGTERM: {error!r}")
                    return
                answered.append(answer.status)
                if answer.getheader("connection", "").lower() == "close":
                    told_to_close.append(terminated.is_set())
                    return

        clients = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for thread in clients:
            thread.start()
        assert wait_for(lambda: len(answered) >= 50, timeout=30)
        terminated.set()
        served.process.terminate()
        for thread in clients:
            thread.join(timeout=30)
        served.process.wait(timeout=30)
    assert failures == []
    assert set(answered) == {200}
    assert told_to_close == [True] * len(clients)  # every connection was told, after SIGTERM, and only then


def test_a_second_serve_on_the_same_port_fails_with_one_line(tmp_path):
    """Before, it bound beside the first through SO_REUSEPORT and took a share of its connections."""
    with serve(tmp_path / "first", workers=2) as served:
        second = subprocess.run(
            [
                *PODMUTATE,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(served.port),
                "--metrics-port",
                "0",
                "--cert-dir",
                str(tmp_path / "second"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert (
            second.stderr.strip().splitlines()[-1]
            == f"Error: cannot listen on 127.0.0.1:{served.port}: Address already in use"
        )


def test_a_fifo_as_the_key_is_refused_and_the_last_good_pair_serves(tmp_path):
    """Before, a FIFO as tls.key hung every handshake."""
    with serve(tmp_path, workers=1) as served:
        key = os.path.join(served.cert_dir, "tls.key")
        os.rename(key, key + ".kept")
        os.mkfifo(key)

        # Each new handshake looks at the files (at most once a second) and is served the last good pair.
        def handshake():
            return requests.get(served.url + "/healthz", verify=served.ca_file, timeout=5).status_code == 200

        assert wait_for(lambda: handshake() and "not a regular file" in served.log())
        assert handshake()


def test_dead_workers_leave_a_bounded_number_of_metrics_files_and_their_counts(tmp_path):
    """Before, each dead worker left its files: 5,000 of them made a scrape take 1.5 s."""
    with serve(tmp_path, workers=2) as served:
        with open(f"/proc/{worker_pids(served.process.pid)[0]}/environ", "rb") as stream:  # set before they started
            environ = dict(item.split(b"=", 1) for item in stream.read().split(b"\0") if b"=" in item)
        directory = environ[b"PROMETHEUS_MULTIPROC_DIR"].decode()
        reviews = ("podmutate_admission_reviews_total", (("job_type", "sync"), ("outcome", "mutated")))
        for round_ in range(4):
            for _ in range(3):
                mutated(served)
            # written at the workers' heartbeat: killed after it, what they counted stays counted
            assert wait_for(lambda total=3 * (round_ + 1): served.metrics().get(reviews) == total)
            before = worker_pids(served.process.pid)
            for pid in before:
                os.kill(pid, signal.SIGKILL)
            assert wait_for(lambda before=before: replaced(served, before, count=2), timeout=30)
            assert wait_for(lambda total=3 * (round_ + 1): served.metrics().get(reviews) == total)
        files = os.listdir(directory)
        pids = {name.rsplit("_", 1)[1].removesuffix(".db") for name in files}
        assert pids <= {"dead", *map(str, worker_pids(served.process.pid)), str(served.process.pid)}, files


def test_half_open_metrics_connections_cost_the_supervisor_little_and_scrapes_go_on(tmp_path):
    """Before, one thread per connection with no timeout: about 2,000 half-sent GET /metrics
    OOM-killed the supervisor."""
    import resource

    from webhook.metrics import METRICS_REQUEST_SECONDS

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(2000, soft - 200)
    with serve(tmp_path, workers=1) as served:

        def rss():
            with open(f"/proc/{served.process.pid}/status") as stream:
                return next(int(line.split()[1]) * 1024 for line in stream if line.startswith("VmRSS"))

        before = rss()
        held = []
        try:
            for _ in range(count):
                connection = socket.create_connection(("127.0.0.1", served.metrics_port), timeout=5)
                connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
                held.append(connection)
            assert served.process.poll() is None
            assert rss() - before < 32 * 1024 * 1024

            # Those beyond the cap were closed at once, those within it are at their timeout: scrapes go on.
            def scraped():
                try:
                    return served.metrics()
                except requests.ConnectionError:  # closed at once while the cap is full
                    return None

            assert wait_for(scraped, timeout=METRICS_REQUEST_SECONDS + 10)
        finally:
            for connection in held:
                connection.close()
