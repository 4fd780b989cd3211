"""The safety net on a real node: podmutate scaled to zero under failurePolicy: Ignore, a job pod
created by a Job and a bare one get through unmutated — on the wrong node pool, where nothing
schedules them. Once podmutate is back, its leader tells of exactly those two (Events, the
gauge; `podmutate audit` exits 1), deletes the Job's pod, which the Job makes again, mutated
this time, and which runs; it leaves the bare one alone. Killing the leader hands the Lease to
the other replica, which tells of nothing twice."""

import json
import subprocess
import urllib.request
import uuid

import pytest

from tests.node.conftest import CONFIG, NAMESPACE, WEBHOOK_LABELS, wait_for, webhook_pods
from tools.harness.processes import PODMUTATE, metric_samples

JOBS = "jobs"
POOL = "podmutate.io/pool"
LEASE = "podmutate-safety-net"
SAFETY_NET_CONFIG = {
    **CONFIG,
    # A sync pod goes to the `jobs` pool: podmutate puts it there; one it never saw asks for another.
    "job_types": {"default": {"mode": "fill"}, "sync": {"mode": "override", "node_selector": {POOL: "jobs"}}},
    "safety_net": {"enabled": True, "namespaces": [JOBS], "action": "recreate"},
}


def job_pod_template(connection_id):
    return {
        "metadata": {
            "labels": {"podmutate.io/job-type": "sync", "connection_id": connection_id},
            "annotations": {"podmutate.io/init-wait": "false"},  # nothing uploads to these pods
        },
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {POOL: "elsewhere"},
            "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sh", "-c", "echo synced"]}],
        },
    }


def not_mutated_events(core, name):
    return [
        event
        for event in core.list_namespaced_event(JOBS, field_selector=f"involvedObject.name={name}").items
        if event.reason == "NotMutated"
    ]


def leader(coordination, core):
    """The podmutate pod holding the Lease (its holder identity starts with the pod's name)."""
    holder = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.holder_identity or ""
    return next((pod for pod in webhook_pods(core) if holder.startswith(f"{pod.metadata.name}_")), None)


def unmutated_gauge(pod):
    """podmutate_unmutated_job_pods of the jobs namespace, as `pod` exports it."""
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8000/metrics", timeout=10) as answer:
        samples = metric_samples(answer.read().decode())
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "podmutate_unmutated_job_pods" and ("namespace", JOBS) in labels
    )


@pytest.fixture
def safety_net(podmutate, kubectl, core):
    kubectl("create", "namespace", JOBS, check=False)
    node = core.list_node().items[0].metadata.name
    kubectl("label", "node", node, f"{POOL}=jobs", "--overwrite")
    podmutate.apply(config=SAFETY_NET_CONFIG)
    delete = json.dumps([{"op": "add", "path": "/rules/0/verbs/-", "value": "delete"}])
    kubectl("-n", JOBS, "patch", "role", "podmutate-safety-net", "--type=json", "-p", delete)
    yield podmutate
    kubectl("label", "node", node, f"{POOL}-")
    podmutate.apply()  # the base again: the Role's verbs and the configuration as they were


def test_the_safety_net_finds_recreates_and_hands_over(safety_net, kubectl, core, cluster):
    import kubernetes

    coordination = kubernetes.client.CoordinationV1Api(core.api_client)
    batch = kubernetes.client.BatchV1Api(core.api_client)
    suffix = uuid.uuid4().hex[:6]
    job_name, bare_name = f"sync-{suffix}", f"bare-{suffix}"

    bare = job_pod_template(f"b-{suffix}")
    kubectl("-n", NAMESPACE, "scale", "deployment/podmutate", "--replicas=0")
    wait_for(lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=WEBHOOK_LABELS).items, "podmutate gone")
    batch.create_namespaced_job(
        JOBS,
        {"metadata": {"name": job_name}, "spec": {"backoffLimit": 3, "template": job_pod_template(f"c-{suffix}")}},
    )
    core.create_namespaced_pod(
        JOBS,
        {
            "metadata": {"name": bare_name, **bare["metadata"]},
            "spec": bare["spec"],
        },
    )
    first = wait_for(
        lambda: core.list_namespaced_pod(JOBS, label_selector=f"job-name={job_name}").items, "the Job's pod"
    )
    (first_pod,) = first
    assert first_pod.spec.node_selector == {POOL: "elsewhere"}  # admitted as written

    kubectl("-n", NAMESPACE, "scale", "deployment/podmutate", "--replicas=2")
    safety_net.wait_rolled_out()
    # Within a minute of podmutate's return: it leads at once (the Lease was given up at the scale-down).
    wait_for(lambda: not_mutated_events(core, bare_name), "the bare pod told of", timeout=60)
    wait_for(lambda: not_mutated_events(core, first_pod.metadata.name), "the Job's pod told of", timeout=60)
    remade = wait_for(
        lambda: [
            pod
            for pod in core.list_namespaced_pod(JOBS, label_selector=f"job-name={job_name}").items
            if pod.metadata.uid != first_pod.metadata.uid
        ],
        "the Job's pod made again",
        timeout=60,
    )
    assert remade[0].spec.node_selector == {POOL: "jobs"}  # through podmutate this time
    wait_for(
        lambda: (batch.read_namespaced_job(job_name, JOBS).status.succeeded or 0) == 1,
        "the Job to succeed",
        timeout=120,
    )
    assert core.read_namespaced_pod(bare_name, JOBS).status.phase == "Pending"  # told of, left alone
    elected = wait_for(lambda: leader(coordination, core), "a leader")
    wait_for(lambda: unmutated_gauge(elected) == 1, "the gauge to count the bare pod")

    audit = subprocess.run(
        [*PODMUTATE, "audit", "-n", JOBS, "-o", "json", "--kubeconfig", cluster.kubeconfig],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 1, audit.stderr
    unmutated = [item["name"] for item in json.loads(audit.stdout)["items"] if item["state"] == "unmutated"]
    assert unmutated == [bare_name]

    core.delete_namespaced_pod(elected.metadata.name, NAMESPACE, grace_period_seconds=0)  # the leader dies
    successor = wait_for(
        lambda: (
            (found := leader(coordination, core)) is not None and found.metadata.name != elected.metadata.name and found
        ),
        "another replica to take the Lease",
        timeout=90,
    )
    wait_for(lambda: unmutated_gauge(successor) == 1, "the new leader to know the bare pod")
    assert len(not_mutated_events(core, bare_name)) == 1  # not told of twice

    batch.delete_namespaced_job(job_name, JOBS, propagation_policy="Background")
    core.delete_namespaced_pod(bare_name, JOBS, grace_period_seconds=0)
