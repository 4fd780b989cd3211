"""failurePolicy Fail while podmutate changes: every job pod created in the meantime is created, and mutated.

One loss is physical, not podmutate's: a worker killed outright (SIGKILL, the OOM killer) takes
the connections it holds with it, and a review in flight on one of them fails its create with
the API server's InternalError — the kube-apiserver never retries a webhook POST. So, in that
phase only, a failure is allowed when it is exactly that (the webhook call cut by a reset or a
lost connection), for a create begun before the kill had been seen; each is created again, as a
client retries a 500, and must then be created and mutated.
"""

import os
import re
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes.client.exceptions import ApiException

from tests.node.conftest import NAMESPACE, admission_only_pod, is_mutated, wait_for, webhook_pods

STREAM = "stream"
RATE = 5.0  # pod creations per second
MIN_SECONDS = 60.0
MAX_SECONDS = 180.0
CERT_VALIDITY = 60  # seconds: a serving pair is renewed every half of it, several times a run
# What the API server says when the connection carrying a review is cut under it.
CUT_CONNECTION = re.compile(
    r"failed calling webhook .*(connection reset by peer|EOF|client connection lost|broken pipe)"
)
KILL_SEEN_WITHIN = 1.0  # seconds after the kill in which a create may still meet the dead worker


def stream_pod(index):
    return admission_only_pod(f"stream-{index:04d}-{uuid.uuid4().hex[:4]}", "stream")


class Stream:
    """Creates job pods at RATE per second until stopped; counts what was created, failed, unmutated."""

    def __init__(self, core):
        self.core = core
        self.phase = "steady"
        self.counts = {}
        self.failures = []  # (phase, started, pod, message)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def create(self, pod):
        """'mutated', 'unmutated', or the API server's error."""
        try:
            created = self.core.create_namespaced_pod(STREAM, pod)
        except ApiException as error:
            return f"{error.status} {error.reason}: {error.body}"
        return "mutated" if is_mutated(created) else "unmutated"

    def _create(self, index, phase):
        started = time.monotonic()
        pod = stream_pod(index)
        outcome = self.create(pod)
        with self._lock:
            counts = self.counts.setdefault(phase, {"created": 0, "mutated": 0, "unmutated": 0, "failed": 0})
            if outcome in ("mutated", "unmutated"):
                counts["created"] += 1
                counts[outcome] += 1
            else:
                counts["failed"] += 1
                self.failures.append((phase, started, pod, outcome))

    def run(self):
        with ThreadPoolExecutor(max_workers=16) as pool:
            started = time.monotonic()
            index = 0
            while not self._stop.is_set() and time.monotonic() - started < MAX_SECONDS:
                pool.submit(self._create, index, self.phase)
                index += 1
                time.sleep(max(0.0, started + index / RATE - time.monotonic()))

    def stop(self):
        self._stop.set()


def worker_pid(pod):
    """The host pid of a worker process of `pod`: a spawned child of the container's first process."""
    uid = pod.metadata.uid
    members = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as stream:
                if uid not in stream.read():
                    continue
            with open(f"/proc/{entry}/stat") as stream:
                parent = int(stream.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                command = stream.read()
        except (OSError, ValueError, IndexError):
            continue
        members[int(entry)] = (parent, command)
    workers = [pid for pid, (parent, command) in members.items() if parent in members and b"spawn_main" in command]
    assert workers, f"no worker process found for {pod.metadata.name}"
    return workers[0]


@pytest.fixture
def fail_closed(podmutate, kubectl):
    """The fail-closed overlay, with serving certificates short-lived enough to rotate during the stream."""
    podmutate.apply("overlays/fail-closed", args=["--rotate-every=5", f"--cert-validity={CERT_VALIDITY}"])
    kubectl("create", "namespace", STREAM, check=False)
    yield
    kubectl("delete", "namespace", STREAM, "--wait=false", check=False)
    podmutate.apply()


def test_every_job_pod_is_created_and_mutated_while_podmutate_restarts_crashes_and_rotates(
    fail_closed, core, kubectl, podmutate
):
    stream = Stream(core)
    runner = threading.Thread(target=stream.run)
    serving_pairs = set()
    started = time.monotonic()

    def note_pair():
        serving_pairs.add(core.read_namespaced_secret("podmutate-tls", NAMESPACE).data["tls.crt"])

    runner.start()
    try:
        time.sleep(5)
        stream.phase = "rollout restart"
        kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/podmutate")
        podmutate.wait_rolled_out()
        note_pair()
        stream.phase = "worker SIGKILL"
        victim = wait_for(lambda: len(webhook_pods(core)) == 2 and webhook_pods(core)[0], "two Ready replicas")
        os.kill(worker_pid(victim), signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(10)
        stream.phase = "certificate rotation"
        while time.monotonic() - started < MIN_SECONDS or len(serving_pairs) < 3:
            note_pair()
            time.sleep(1)
            assert time.monotonic() - started < MAX_SECONDS, "the serving certificate did not rotate"
    finally:
        stream.stop()
        runner.join(60)
        print(
            f"\navailability under failurePolicy Fail ({RATE:.0f}/s, {time.monotonic() - started:.0f}s, "
            f"{len(serving_pairs)} serving pairs seen): {stream.counts}"
        )
    lost = [(started, pod, message) for phase, started, pod, message in stream.failures if phase == "worker SIGKILL"]
    assert [failure for failure in stream.failures if failure[0] != "worker SIGKILL"] == []
    for started, pod, message in lost:
        assert CUT_CONNECTION.search(message), f"not a review cut by the kill: {message[:400]}"
        assert started < killed + KILL_SEEN_WITHIN, f"begun {started - killed:.1f}s after the kill: {message[:400]}"
        assert stream.create(pod) == "mutated", "a create cut by the kill, made again, is created and mutated"
    print(f"reviews cut by the worker's SIGKILL, then created by a retry: {len(lost)}")
    assert all(counts["unmutated"] == 0 and counts["created"] > 0 for counts in stream.counts.values()), stream.counts
    assert set(stream.counts) >= {"rollout restart", "worker SIGKILL", "certificate rotation"}
