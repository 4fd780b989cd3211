"""Launching and killing job pods on a real API server (no kubelet: pods stay Pending, and
terminal states are written through the pods/status subresource).

Nor is there a garbage collector (kube-controller-manager), which is what removes the
foregroundDeletion finalizer that Foreground propagation, the default, puts on a pod: the kills
here use Background propagation so that deleted pods go away as they do in a cluster."""

import subprocess

import pytest

from tests.e2e.conftest import register
from tests.helpers import PODMUTATE
from webhook.launcher import Job, KillTimeout, kill_connection, launch, pod_manifest

BACKGROUND = "Background"


def create(core, namespace, connection_id, attempt):
    job = Job(job_type="sync", image="airbyte/source-postgres:3.6.2", connection_id=connection_id,
              job_id="7", attempt=attempt, namespace=namespace)
    return core.create_namespaced_pod(namespace, pod_manifest(job)).metadata.name


def finish(core, namespace, name, phase="Succeeded"):
    core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": phase}})


def names(core, namespace):
    return sorted(pod.metadata.name for pod in core.list_namespaced_pod(namespace).items)


def test_launched_pods_come_back_mutated(admissionregistration, kubectl, podmutate, core, namespace):
    register(admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace)
    pod = launch(core, Job(job_type="discover", image="airbyte/source-faker:6.0.0", connection_id="c-1",
                           job_id="9", namespace=namespace))
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


def test_kill_names_the_pods_it_could_not_remove(core, namespace):
    name = create(core, namespace, "conn-stuck", 0)
    # A finalizer keeps the pod from going away, as a stuck node would.
    core.patch_namespaced_pod(name, namespace, {"metadata": {"finalizers": ["example.com/hold"]}})
    with pytest.raises(KillTimeout, match=f"pods of connection conn-stuck still live after 1s: {name}"):
        kill_connection(core, namespace, "conn-stuck", timeout=1, poll=0.2, propagation=BACKGROUND)
    core.patch_namespaced_pod(name, namespace, {"metadata": {"finalizers": None}})


def test_kill_cli_and_a_clear_error(control_plane, core, namespace, tmp_path):
    name = create(core, namespace, "conn-cli", 0)
    base = [*PODMUTATE, "kill", "--namespace", namespace, "--kubeconfig", control_plane.kubeconfig,
            "--propagation", BACKGROUND]
    dry = subprocess.run([*base, "--connection", "conn-cli", "--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0 and dry.stdout.strip() == f"would delete pod/{name}"
    real = subprocess.run([*base, "--connection", "conn-cli"], capture_output=True, text=True)
    assert real.returncode == 0 and real.stdout.strip() == f"deleted pod/{name}"
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(open(control_plane.kubeconfig).read().replace(control_plane.url, "https://127.0.0.1:1"))
    refused = subprocess.run([*PODMUTATE, "kill", "--connection", "x", "--kubeconfig", str(unreachable)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("Error: cannot reach the API server:")
    assert "Traceback" not in refused.stderr
