"""Job pods through the real chain: API server -> podmutate -> scheduler -> kubelet -> containerd."""

import os
import subprocess
import time
import uuid

import pytest
import yaml

from tests.node.conftest import INIT_TIMEOUT_MINUTES, wait_for
from tools.harness.processes import PODMUTATE
from webhook.ops.launcher import Job, extract, launch, live_pods, open_exec, tar_of, upload, wait_for_init

JOBS = "jobs"
BUSYBOX = "busybox:1.35"
# A main container that checks what it was given, writes under /tmp, and exits with a chosen code.
CHECKING_SCRIPT = """set -e
test "$(cat /config/source_config.json)" = '{"host": "db"}'
test -f /config/catalog.json
test -f /config/FINISHED_UPLOADING
echo scratch > /tmp/scratch && test "$(cat /tmp/scratch)" = scratch
if touch /root-is-writable 2>/dev/null; then echo "the root filesystem is writable"; exit 99; fi
echo "config and /tmp checked"
exit 7
"""
RESTRICTED = {
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


@pytest.fixture(scope="module")
def jobs(podmutate, kubectl):
    kubectl("create", "namespace", JOBS, check=False)
    return JOBS


def connection():
    return str(uuid.uuid4())


def job(
    connection_id, *, attempt=0, command=("sh", "-c", "trap 'exit 143' TERM; while true; do sleep 1; done"), **fields
):
    return Job(
        job_type="sync",
        image=BUSYBOX,
        connection_id=connection_id,
        job_id="7",
        attempt=attempt,
        namespace=JOBS,
        command=list(command),
        **fields,
    )


def container_state(core, name, container, init=False):
    pod = core.read_namespaced_pod(name, JOBS)
    statuses = (pod.status.init_container_statuses if init else pod.status.container_statuses) or []
    return next((status.state for status in statuses if status.name == container), None)


def terminated(core, name, container, init=False, timeout=90):
    """The terminated state of a container, once it has one."""

    def state():
        found = container_state(core, name, container, init)
        return found is not None and found.terminated

    return wait_for(state, f"{container} of pod {name} to end", timeout=timeout)


def create_sync_pod(core, name, spec, annotations=None):
    """A sync job pod created directly, without the init wait (nothing will upload to it)."""
    core.create_namespaced_pod(
        JOBS,
        {
            "metadata": {
                "name": name,
                "labels": {"podmutate.io/job-type": "sync", "connection_id": connection()},
                "annotations": {"podmutate.io/init-wait": "false", **(annotations or {})},
            },
            "spec": {"restartPolicy": "Never", **spec},
        },
    )


def start(core, description):
    """Launch a job, hand it its (empty) config, and wait until its main container runs."""
    name = launch(core, description, kill_running=False).metadata.name
    wait_for_init(core, JOBS, name, timeout=60)
    upload(core, JOBS, name, {})
    wait_for(
        lambda: (state := container_state(core, name, "main")) is not None and state.running,
        f"pod {name} to run its main container",
    )
    return name


def test_launch_wait_runs_a_job_to_its_exit_code(jobs, core, cluster, tmp_path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        yaml.safe_dump(
            {
                "job_type": "sync",
                "image": BUSYBOX,
                "connection_id": connection(),
                "job_id": "42",
                "attempt": 0,
                "namespace": JOBS,
                "command": ["sh", "-c", CHECKING_SCRIPT],
                "security_context": RESTRICTED,
                "files": {"source_config.json": '{"host": "db"}', "catalog.json": '{"streams": []}'},
            }
        )
    )
    result = subprocess.run(
        [
            *PODMUTATE,
            "launch",
            "-f",
            str(job_file),
            "--wait",
            "--init-timeout",
            "60",
            "--kubeconfig",
            cluster.kubeconfig,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 7, result.stdout + result.stderr
    name = result.stdout.split()[0].removeprefix("pod/").rstrip(":")
    pod = core.read_namespaced_pod(name, JOBS)
    assert [container.name for container in pod.spec.init_containers] == ["init"]  # mutated at admission
    assert "config and /tmp checked" in core.read_namespaced_pod_log(name, JOBS, container="main")
    assert "All files copied successfully" in core.read_namespaced_pod_log(name, JOBS, container="init")


def test_an_init_container_whose_files_never_arrive_fails_after_the_timeout(jobs, core):
    name = launch(core, job(connection())).metadata.name
    wait_for_init(core, JOBS, name, timeout=60)
    timeout = INIT_TIMEOUT_MINUTES * 60
    state = terminated(core, name, "init", init=True, timeout=timeout + 60)
    assert state.exit_code == 1
    assert (state.finished_at - state.started_at).total_seconds() >= timeout - 1
    assert "Timeout after 12s" in core.read_namespaced_pod_log(name, JOBS, container="init")
    assert wait_for(lambda: core.read_namespaced_pod(name, JOBS).status.phase == "Failed", "the pod to fail")


def test_a_slow_upload_that_keeps_writing_is_not_cut_off(jobs, core):
    description = job(connection(), command=("sh", "-c", "ls /config && test -f /config/part-3"))
    name = launch(core, description).metadata.name
    wait_for_init(core, JOBS, name, timeout=60)
    pause = INIT_TIMEOUT_MINUTES * 60 / 2
    started = time.monotonic()
    for part in range(4):  # twice the timeout in all, never a whole timeout without a new file
        extract(
            open_exec(core, JOBS, name, "init", ["tar", "-xmf", "-", "-C", "/config"]),
            tar_of({f"part-{part}": "x" * 8192}),
        )
        time.sleep(pause)
    assert time.monotonic() - started > INIT_TIMEOUT_MINUTES * 60
    upload(core, JOBS, name, {})
    state = terminated(core, name, "main")
    assert state.exit_code == 0
    assert container_state(core, name, "init", init=True).terminated.exit_code == 0


def test_kill_stops_every_live_pod_of_a_connection_and_only_those(jobs, core, cluster):
    doomed, spared = connection(), connection()
    doomed_pods = [start(core, job(doomed, attempt=attempt)) for attempt in range(3)]
    spared_pod = start(core, job(spared))
    result = subprocess.run(
        [
            *PODMUTATE,
            "kill",
            "--connection",
            doomed,
            "--namespace",
            JOBS,
            "--timeout",
            "60",
            "--kubeconfig",
            cluster.kubeconfig,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(line.split("/", 1)[1] for line in result.stdout.splitlines()) == sorted(doomed_pods)
    # A pod object goes only once the kubelet has seen its containers end.
    remaining = {pod.metadata.name for pod in core.list_namespaced_pod(JOBS).items}
    assert remaining.isdisjoint(doomed_pods)
    assert live_pods(core, JOBS, doomed) == []
    assert container_state(core, spared_pod, "main").running is not None


def test_launch_kills_the_connections_live_run_first(jobs, core):
    connection_id = connection()
    first = start(core, job(connection_id, attempt=0))
    second = launch(core, job(connection_id, attempt=1)).metadata.name  # as Airbyte: one live run per connection
    assert first not in {pod.metadata.name for pod in core.list_namespaced_pod(JOBS).items}
    assert [pod.metadata.name for pod in live_pods(core, JOBS, connection_id)] == [second]


def test_fix_permissions_lets_a_non_root_main_container_write_its_volume(jobs, core, tmp_path):
    outcomes = {}
    for fixed in (True, False):
        host_dir = str(tmp_path / f"volume-{fixed}")
        os.mkdir(host_dir, 0o755)  # root's, and not writable by the job's user until chowned
        annotations = {"podmutate.io/fix-permissions": "data"} if fixed else {}
        name = f"fix-permissions-{'on' if fixed else 'off'}-{uuid.uuid4().hex[:5]}"
        create_sync_pod(
            core,
            name,
            {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
                "containers": [
                    {
                        "name": "main",
                        "image": BUSYBOX,
                        "command": ["sh", "-c", "echo written > /data/out && id -u"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "hostPath": {"path": host_dir, "type": "Directory"}}],
            },
            annotations,
        )
        state = terminated(core, name, "main")
        outcomes[fixed] = state.exit_code
        if fixed:
            assert os.stat(os.path.join(host_dir, "out")).st_uid == 1000
    assert outcomes == {True: 0, False: 1}  # without the annotation the same pod cannot write


def test_a_missing_image_is_left_to_kubernetes(jobs, core):
    """The main container gets Airbyte's pull policy (IfNotPresent, over the pod's Never): an image
    that is nowhere is then the kubelet's pull error to report, and podmutate's business ends."""
    name = f"missing-image-{uuid.uuid4().hex[:5]}"
    create_sync_pod(
        core,
        name,
        {
            "containers": [{"name": "main", "image": "localhost/podmutate-absent:1", "imagePullPolicy": "Never"}],
        },
    )
    state = wait_for(
        lambda: (
            (found := container_state(core, name, "main")) is not None
            and found.waiting
            and found.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
            and found
        ),
        "a pull error",
        timeout=120,
    )
    assert state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
    assert core.read_namespaced_pod(name, JOBS).spec.containers[0].image_pull_policy == "IfNotPresent"
