"""podmutate served under the manifests' own memory limit, attacked by what a pod creator can send.

Every body up to the API server's 3 MiB, in every shape that makes a review big, alone and many
at once: each gets a well-formed answer (or a 4xx), no worker is lost, nothing is OOM-killed.
"""

import concurrent.futures
import json
import os

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings

from tests.helpers import job_pod
from tools.harness import hostile
from tools.harness.pods import review
from tools.harness.processes import MemoryCgroup, abnormal_exits, manifest_memory_limit, serve, wait_for, worker_pids

pytestmark = pytest.mark.served  # real servers, processes or sockets on this machine

MIB = 1024 * 1024
API_SERVER_BODY_LIMIT = 3 * MIB  # the API server refuses larger requests
WORKERS = 2  # as the manifests run it


@pytest.fixture(scope="module")
def limited(tmp_path_factory, example_plugins):
    reason = MemoryCgroup.available()
    if reason:
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    cgroup = MemoryCgroup(manifest_memory_limit())
    try:
        directory = tmp_path_factory.mktemp("limited")
        with serve(directory, workers=WORKERS, cgroup=cgroup, env={"PYTHONPATH": example_plugins}) as served:
            served.cgroup = cgroup
            served.workers = worker_pids(served.process.pid)
            assert len(served.workers) == WORKERS
            yield served
    finally:
        cgroup.remove()


def post(served, body):
    """POST a body on a connection of its own; the status and the parsed answer (None if not JSON)."""
    response = requests.post(
        served.url + "/mutate",
        data=body,
        verify=served.ca_file,
        timeout=60,
        headers={"Content-Type": "application/json", "Connection": "close"},
    )
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def assert_well_formed(status, answer, uid):
    assert status in (200, 400, 413, 429), (status, answer)
    assert answer is not None  # every answer is JSON, a refusal too
    if status == 200:
        assert answer["kind"] == "AdmissionReview" and answer["response"]["uid"] == uid
        assert answer["response"]["allowed"] is True  # failure_mode ignore: never blocks a pod


def assert_nothing_lost(served):
    assert served.cgroup.oom_kills() == 0
    assert not abnormal_exits(served.log())  # a worker retired at its memory ceiling is replaced, not lost
    assert wait_for(lambda: len(worker_pids(served.process.pid)) == WORKERS, timeout=30)
    pod = job_pod("sync")
    status, answer = post(served, json.dumps(review(pod, uid="after")))
    assert status == 200 and "patch" in answer["response"]  # ordinary job pods are still mutated


@pytest.mark.parametrize("shape", sorted(hostile.SHAPES))
@pytest.mark.parametrize("size", [MIB // 4, int(1.4 * MIB), API_SERVER_BODY_LIMIT - 64 * 1024])
def test_one_big_pod_of_any_shape_is_answered_and_kills_nothing(limited, shape, size):
    """Before, one 2.5 MiB pod of 90,000 containers got both workers OOM-killed under 256 MiB."""
    body = hostile.sized(shape, size)
    uid = json.loads(body)["request"]["uid"]
    status, answer = post(limited, body)
    assert_well_formed(status, answer, uid)
    assert_nothing_lost(limited)


def test_many_big_pods_at_once_are_answered_and_kill_nothing(limited):
    """Before, four concurrent 0.85 MiB pods lost 4 of 4 reviews."""
    bodies = [
        hostile.sized(shape, size)
        for shape in ("bare_containers", "containers", "env")
        for size in (MIB // 4, int(0.85 * MIB), int(2.9 * MIB))
    ] * 2
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: post(limited, body), bodies))
    for body, (status, answer) in zip(bodies, answers):
        assert_well_formed(status, answer, json.loads(body)["request"]["uid"])
    assert_nothing_lost(limited)


def test_a_pod_beyond_the_work_bound_is_answered_by_failure_mode_without_being_parsed(limited):
    body = hostile.sized("bare_containers", MIB)
    status, answer = post(limited, body)
    assert status == 200
    (warning,) = answer["response"]["warnings"]
    assert warning.startswith("podmutate: the review has up to ")
    assert "over the work bound" in warning and warning.endswith("the pod was admitted unmutated")
    assert "patch" not in answer["response"]
    assert answer["response"]["auditAnnotations"] == {"unreviewed": "beyond_work_bound"}


def test_a_pod_within_the_work_bound_is_mutated(limited):
    body = hostile.sized("containers", 100 * 1024)
    status, answer = post(limited, body)
    assert status == 200 and "patch" in answer["response"]


def test_memory_is_given_back_after_big_reviews(limited):
    def rss(pid):
        try:
            with open(f"/proc/{pid}/status") as stream:
                return next(int(line.split()[1]) * 1024 for line in stream if line.startswith("VmRSS"))
        except OSError:  # replaced meanwhile
            return 0

    def workers_rss():
        return sum(rss(pid) for pid in worker_pids(limited.process.pid))

    before = workers_rss()
    for _ in range(3):
        for size in (120 * 1024, 200 * 1024):  # among the biggest pods of the shape within the bound: reviewed
            status, _answer = post(limited, hostile.sized("containers", size))
            assert status == 200
    assert wait_for(lambda: workers_rss() < before + 24 * MIB, timeout=10)


def test_a_plugin_that_leaks_gets_its_worker_retired_gracefully_not_killed(limited):
    leaking = json.dumps(review(job_pod("sync", annotations={"example.com/misbehave": "leak"})))
    for _ in range(40):  # 160 MiB kept, beyond what the container has
        status, answer = post(limited, leaking)
        assert status == 200 and "patch" in answer["response"]
    assert wait_for(lambda: "over the ceiling of" in limited.log(), timeout=30)
    assert_nothing_lost(limited)


QUICK_EXAMPLES = 150  # about a minute; bench/adversarial.py runs thousands


def hostile_review(pod):
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "hostile-" + os.urandom(6).hex(),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "jobs",
            "operation": "CREATE",
            "object": pod,
        },
    }


@settings(
    max_examples=QUICK_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pod=hostile.hostile_pods())
def test_generated_hostile_pods_are_answered_well_formed_and_kill_nothing(limited, pod):
    body = json.dumps(hostile_review(pod)).encode()
    assume(len(body) <= API_SERVER_BODY_LIMIT)
    status, answer = post(limited, body)
    assert_well_formed(status, answer, json.loads(body)["request"]["uid"])
    assert limited.cgroup.oom_kills() == 0
    assert not abnormal_exits(limited.log())
    assert limited.get("/healthz", fresh=True).status_code == 200  # the configuration watcher too
