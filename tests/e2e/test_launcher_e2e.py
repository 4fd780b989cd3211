"""Launching and killing job pods on a real API server (no kubelet: pods stay Pending, and
terminal states are written through the pods/status subresource).

Nor is there a garbage collector (kube-controller-manager), which is what removes the
foregroundDeletion finalizer that Foreground propagation, the default, puts on a pod: the kills
here use Background propagation so that deleted pods go away as they do in a cluster."""

import subprocess
import threading
import time

import pytest

from tests.e2e.conftest import register
from tools.harness.processes import PODMUTATE
from webhook.ops.launcher import (
    KILLED_EXIT_CODE,
    Job,
    KillTimeout,
    NotMutated,
    WaitTimeout,
    kill_connection,
    launch,
    pod_manifest,
    run,
    wait_for_exit,
    wait_for_init,
)

BACKGROUND = "Background"


def create(core, namespace, connection_id, attempt):
    job = Job(
        job_type="sync",
        image="airbyte/source-postgres:3.6.2",
        connection_id=connection_id,
        job_id="7",
        attempt=attempt,
        namespace=namespace,
    )
    return core.create_namespaced_pod(namespace, pod_manifest(job)).metadata.name


def finish(core, namespace, name, phase="Succeeded"):
    core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": phase}})


def names(core, namespace):
    return sorted(pod.metadata.name for pod in core.list_namespaced_pod(namespace).items)


def test_launched_pods_come_back_mutated(admissionregistration, kubectl, podmutate, core, namespace):
    register(admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace)
    pod = launch(
        core,
        Job(
            job_type="discover",
            image="airbyte/source-faker:6.0.0",
            connection_id="c-1",
            job_id="9",
            namespace=namespace,
        ),
    )
    assert [container.name for container in pod.spec.init_containers] == ["init"]
    assert pod.metadata.annotations["podmutate.io/status-check-interval"] == "1"
    assert pod.metadata.labels["connection_id"] == "c-1"


def test_kill_removes_exactly_the_live_pods_of_one_connection(core, namespace):
    live = [create(core, namespace, "conn-a", attempt) for attempt in range(3)]
    done = create(core, namespace, "conn-a", 3)
    finish(core, namespace, done)
    other = create(core, namespace, "conn-b", 0)

    assert sorted(kill_connection(core, namespace, "conn-a", dry_run=True)) == sorted(live)
    assert names(core, namespace) == sorted([*live, done, other])

    assert sorted(kill_connection(core, namespace, "conn-a", poll=0.1, propagation=BACKGROUND)) == sorted(live)
    assert names(core, namespace) == sorted([done, other])
    assert kill_connection(core, namespace, "conn-a", poll=0.1, propagation=BACKGROUND) == []


@pytest.fixture
def mutated_here(admissionregistration, kubectl, podmutate, namespace):
    """podmutate registered for the test's namespace: launched pods come back mutated."""
    register(admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace)
    return namespace


def sync_job(namespace, connection_id, attempt=0, job_id="8"):
    return Job(
        job_type="sync",
        image="airbyte/source-postgres:3.6.2",
        connection_id=connection_id,
        job_id=job_id,
        attempt=attempt,
        namespace=namespace,
    )


def test_launch_kills_the_connections_live_pods_first_unless_told_not_to(mutated_here, core, namespace):
    def job(attempt):
        return sync_job(namespace, "conn-run", attempt)

    first = launch(core, job(0), propagation=BACKGROUND).metadata.name
    kept = launch(core, job(1), kill_running=False).metadata.name
    assert names(core, namespace) == sorted([first, kept])
    last = launch(core, job(2), propagation=BACKGROUND).metadata.name
    assert names(core, namespace) == [last]


def test_kill_names_the_pods_it_could_not_remove(core, namespace):
    name = create(core, namespace, "conn-stuck", 0)
    # A finalizer keeps the pod from going away, as a stuck node would.
    core.patch_namespaced_pod(name, namespace, {"metadata": {"finalizers": ["example.com/hold"]}})
    with pytest.raises(KillTimeout, match=f"pods of connection conn-stuck still live after 1s: {name}"):
        kill_connection(core, namespace, "conn-stuck", timeout=1, poll=0.2, propagation=BACKGROUND)
    core.patch_namespaced_pod(name, namespace, {"metadata": {"finalizers": None}})


def test_kill_cli_and_a_clear_error(control_plane, core, namespace, tmp_path):
    name = create(core, namespace, "conn-cli", 0)
    base = [
        *PODMUTATE,
        "kill",
        "--namespace",
        namespace,
        "--kubeconfig",
        control_plane.kubeconfig,
        "--propagation",
        BACKGROUND,
    ]
    dry = subprocess.run([*base, "--connection", "conn-cli", "--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0 and dry.stdout.strip() == f"would delete pod/{name}"
    real = subprocess.run([*base, "--connection", "conn-cli"], capture_output=True, text=True)
    assert real.returncode == 0 and real.stdout.strip() == f"deleted pod/{name}"
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(open(control_plane.kubeconfig).read().replace(control_plane.url, "https://127.0.0.1:1"))
    refused = subprocess.run(
        [*PODMUTATE, "kill", "--connection", "x", "--kubeconfig", str(unreachable)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("Error: cannot reach the API server:")
    assert "Traceback" not in refused.stderr


def test_launch_and_kill_use_the_configured_connection_label_keys(
    mutated_here, control_plane, core, namespace, tmp_path
):
    config = tmp_path / "podmutate.yaml"
    config.write_text("connection_labels:\n  keys: {connection_id: airbyte.io/connection, job_id: airbyte.io/job}\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        f"job_type: sync\nimage: busybox:1.35\nconnection_id: renamed\njob_id: '9'\nnamespace: {namespace}\n"
    )
    common = ["--config", str(config), "--kubeconfig", control_plane.kubeconfig]
    launched = subprocess.run([*PODMUTATE, "launch", "-f", str(job), *common], capture_output=True, text=True)
    assert launched.returncode == 0, launched.stderr
    (pod,) = core.list_namespaced_pod(namespace).items
    assert pod.metadata.labels["airbyte.io/connection"] == "renamed"
    assert pod.metadata.labels["airbyte.io/job"] == "9"
    assert "connection_id" not in pod.metadata.labels
    killed = subprocess.run(
        [*PODMUTATE, "kill", "--connection", "renamed", "--namespace", namespace, "--propagation", BACKGROUND, *common],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 0, killed.stderr
    assert killed.stdout.strip() == f"deleted pod/{pod.metadata.name}"


def set_status(core, namespace, name, *, init=None, main=None):
    """Write container states through pods/status, as a kubelet would (there is none here)."""
    status = {}
    if init is not None:
        status["initContainerStatuses"] = [
            {"name": "init", "ready": False, "restartCount": 0, "image": "busybox:1.35", "imageID": "", "state": init}
        ]
    if main is not None:
        status["containerStatuses"] = [
            {
                "name": "main",
                "ready": False,
                "restartCount": 0,
                "image": "airbyte/source-postgres:3.6.2",
                "imageID": "",
                "state": main,
            }
        ]
    core.patch_namespaced_pod_status(name, namespace, {"status": status})


def later(seconds, action):
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


STARTED = "2026-01-01T00:00:00Z"


def test_init_wait_returns_once_the_init_container_runs(core, namespace):
    name = create(core, namespace, "conn-w", 0)
    later(0.5, lambda: set_status(core, namespace, name, init={"waiting": {"reason": "PodInitializing"}}))
    later(1.5, lambda: set_status(core, namespace, name, init={"running": {"startedAt": STARTED}}))
    began = time.monotonic()
    pod = wait_for_init(core, namespace, name, timeout=20)
    assert pod.status.init_container_statuses[0].state.running is not None
    assert time.monotonic() - began >= 1.0


def test_init_wait_times_out_saying_which_wait_and_logging_the_pod(core, namespace, caplog):
    name = create(core, namespace, "conn-t", 0)
    set_status(core, namespace, name, init={"waiting": {"reason": "ImagePullBackOff"}})
    with pytest.raises(WaitTimeout, match=f"pod {name}: timed out after 2s waiting for the init container to run"):
        wait_for_init(core, namespace, name, timeout=2)
    assert f"pod {namespace}/{name}: gave up waiting for the init container to run" in caplog.text
    assert "ImagePullBackOff" in caplog.text
    assert "events:" in caplog.text


def test_exit_code_of_main_and_143_for_a_deleted_pod(core, namespace):
    done = create(core, namespace, "conn-x", 0)
    later(
        0.5,
        lambda: set_status(
            core, namespace, done, main={"terminated": {"exitCode": 3, "startedAt": STARTED, "finishedAt": STARTED}}
        ),
    )
    assert wait_for_exit(core, namespace, done) == 3
    deleted = create(core, namespace, "conn-x", 1)
    later(0.5, lambda: core.delete_namespaced_pod(deleted, namespace))
    assert wait_for_exit(core, namespace, deleted) == KILLED_EXIT_CODE


def test_run_launches_waits_uploads_and_reports(admissionregistration, kubectl, podmutate, core, namespace):
    # The exec into the init container is faked (no kubelet): FakeExec records what it receives.
    from tests.test_launcher import FakeExec

    register(admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace)
    archives = []
    job = Job(
        job_type="check",
        image="airbyte/source-postgres:3.6.2",
        connection_id="c-run",
        job_id="5",
        namespace=namespace,
        files={"source_config.json": "{}"},
    )

    def kubelet():
        # Plays the kubelet's part: the init container starts, then main ends once the upload is in.
        name = next(pod.metadata.name for pod in core.list_namespaced_pod(namespace).items)
        set_status(core, namespace, name, init={"running": {"startedAt": STARTED}})
        while len(archives) < 2:
            time.sleep(0.1)
        set_status(
            core, namespace, name, main={"terminated": {"exitCode": 0, "startedAt": STARTED, "finishedAt": STARTED}}
        )

    later(1.0, kubelet)
    name, code = run(core, job, init_timeout=20, exec_session=FakeExec(archives))
    assert code == 0
    assert archives == [{"source_config.json": b"{}"}, {"FINISHED_UPLOADING": b""}]
    assert core.read_namespaced_pod(name, namespace).metadata.annotations["podmutate.io/status-check-interval"] == "1"


def test_launch_cli_creates_a_mutated_job_pod(
    admissionregistration, kubectl, podmutate, control_plane, core, namespace, tmp_path
):
    register(admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"job_type: sync\nimage: airbyte/source-postgres:3.6.2\nconnection_id: conn-cli-launch\n"
        f"job_id: '42'\nattempt: 1\nnamespace: {namespace}\n"
    )
    result = subprocess.run(
        [*PODMUTATE, "launch", "-f", str(job), "--kubeconfig", control_plane.kubeconfig], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    name = result.stdout.split()[0].removeprefix("pod/")
    assert name.startswith("source-postgres-sync-42-1-")
    pod = core.read_namespaced_pod(name, namespace)
    assert pod.metadata.labels["connection_id"] == "conn-cli-launch"
    assert [container.name for container in pod.spec.init_containers] == ["init"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("job_type: sync\nimage: x\nflavour: vanilla\n")
    refused = subprocess.run(
        [*PODMUTATE, "launch", "-f", str(bad), "--kubeconfig", control_plane.kubeconfig], capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert (
        refused.stderr.strip() == f"Error: {bad}: flavour: not a job field (expected one of job_type, image, "
        "connection_id, job_id, attempt, namespace, command, args, env, labels, files, security_context)"
    )


def test_a_wait_that_gives_up_deletes_its_pod_unless_told_to_keep_it(mutated_here, core, namespace):
    def job(attempt):
        return sync_job(namespace, f"conn-giveup-{attempt}", attempt, job_id="3")

    with pytest.raises(WaitTimeout):
        run(core, job(0), init_timeout=1, propagation=BACKGROUND)  # no kubelet here: no init status, ever
    assert names(core, namespace) == []
    with pytest.raises(WaitTimeout):
        run(core, job(1), init_timeout=1, propagation=BACKGROUND, keep_pod=True)
    assert len(names(core, namespace)) == 1


def test_launch_against_a_cluster_without_the_webhook_fails_in_one_line_and_deletes_the_pod(
    control_plane, core, namespace, tmp_path
):
    """No webhook matches the namespace (as with failurePolicy Ignore and podmutate down): the pod
    comes back without its init container, which nothing would ever feed."""
    with pytest.raises(NotMutated, match="the webhook did not mutate it"):
        job = Job(job_type="sync", image="busybox:1.35", connection_id="c-gone", job_id="1", namespace=namespace)
        run(core, job, propagation=BACKGROUND)
    assert names(core, namespace) == []
    for wait in ([], ["--wait"]):
        job = tmp_path / "job.yaml"  # a connection of its own each time: no earlier pod to kill first
        job.write_text(
            f"job_type: sync\nimage: busybox:1.35\nconnection_id: c-gone{len(wait)}\n"
            f"job_id: '2'\nnamespace: {namespace}\n"
        )
        result = subprocess.run(
            [*PODMUTATE, "launch", "-f", str(job), *wait, "--kubeconfig", control_plane.kubeconfig],
            capture_output=True,
            text=True,
            timeout=60,  # at once: a failure here is not a wait for an init container that will never be
        )
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"Error: pod {namespace}/") and "podmutate doctor" in line, line
        # Deleted in the foreground, the default: here no garbage collector ever takes the pod away.
        assert all(pod.metadata.deletion_timestamp for pod in core.list_namespaced_pod(namespace).items)


def silent_server():
    """A TCP server that accepts connections and never answers, as a hung API server."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return listener


@pytest.mark.parametrize("server", ["silent", "refusing"])
def test_an_api_server_that_hangs_or_refuses_is_one_line_within_the_timeout(control_plane, tmp_path, server):
    import time

    from tools.harness.processes import free_port

    listener = silent_server() if server == "silent" else None
    port = listener.getsockname()[1] if listener else free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(open(control_plane.kubeconfig).read().replace(control_plane.url, f"https://127.0.0.1:{port}"))
    started = time.monotonic()
    result = subprocess.run(
        [*PODMUTATE, "kill", "--connection", "x", "--timeout", "4", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    if listener:
        listener.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the API server:"), result.stderr
    assert elapsed < 30  # the timeout bounds it; before, it hung past 50 s
