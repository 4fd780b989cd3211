"""`podmutate audit` on a real API server: pods as stored, defaults and all."""

import json
import subprocess

from tests.e2e.conftest import job_pod_manifest, register
from tools.harness.processes import PODMUTATE


def test_audit_finds_exactly_the_job_pods_that_got_through_and_exits_1(
    admissionregistration, kubectl, podmutate, control_plane, core, namespace
):
    # Created while no webhook matched the namespace: admitted as written.
    core.create_namespaced_pod(namespace, job_pod_manifest("sync", name="got-through"))
    core.create_namespaced_pod(
        namespace,
        {
            **job_pod_manifest("sync", name="not-a-job-pod"),
            "metadata": {"name": "not-a-job-pod", "labels": {"app": "web"}},
        },
    )
    name = register(
        admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace, failure_policy="Ignore"
    )
    core.create_namespaced_pod(namespace, job_pod_manifest("check", name="mutated"))

    command = [*PODMUTATE, "audit", "--webhook-config", name, "--kubeconfig", control_plane.kubeconfig]
    result = subprocess.run([*command, "-n", namespace, "-o", "json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    states = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert sorted(states) == ["got-through", "mutated"]  # the selectors leave the web pod out
    assert states["mutated"]["state"] == "mutated" and states["mutated"]["changes"] == []
    assert states["got-through"]["state"] == "unmutated" and states["got-through"]["jobType"] == "sync"
    assert "/spec/initContainers" in states["got-through"]["changes"]

    table = subprocess.run(command, capture_output=True, text=True, timeout=120)  # every namespace it matches
    assert table.returncode == 1
    rows = [line.split() for line in table.stdout.splitlines()[1:]]
    assert [(row[0], row[1], row[4]) for row in rows] == [
        (namespace, "got-through", "unmutated"),
        (namespace, "mutated", "mutated"),
    ]

    core.delete_namespaced_pod("got-through", namespace, grace_period_seconds=0)
    clean = subprocess.run([*command, "-n", namespace], capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_audit_of_a_webhook_configuration_that_is_not_there_is_one_line(control_plane):
    result = subprocess.run(
        [*PODMUTATE, "audit", "--webhook-config", "absent", "--kubeconfig", control_plane.kubeconfig],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "absent" in line and "not found" in line.lower(), line
